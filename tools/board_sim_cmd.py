"""``ampshare board-sim``: a simulated pilot/contactor board on a pseudo-terminal.

The one job of this command is to put ``hal.serial.board.BoardSim`` on a pty so that a station
(``hardware: serial:///tmp/ampshare-board``) can run against it: it prints the device path (and
makes a symlink to it with ``--link``) on stdout, plugs in the vehicles given with ``--ev`` /
``--evs``, logs one line per board event (``-q``: none) and runs until Ctrl-C or SIGTERM. A
``--link`` that already points to a live pseudo-terminal (another board simulator) is taken:
the command says so and exits 2 rather than stealing it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any

from tools.args import duration

_OUTPUTS = {0: "steady", 1: "pwm", 2: "F"}
log = logging.getLogger("ampshare.board-sim")


def register(sub: Any) -> None:
    """Add this command's parser to the ampshare subparsers (sets run)."""
    parser = sub.add_parser(
        "board-sim",
        help="a simulated pilot/contactor board on a pseudo-terminal (serial:// backend)",
        description=(
            "Run a simulated pilot/contactor board on a pseudo-terminal. Point a station at it "
            "with hardware: serial://PATH (see configs/ct4000-jumper-board.yaml)."
        ),
    )
    parser.add_argument("--ports", type=int, default=2, help="number of ports (1..8, default 2)")
    parser.add_argument("--link", metavar="PATH", help="make a symlink to the pty device here")
    parser.add_argument(
        "--ev",
        action="append",
        default=[],
        metavar="SPEC",
        help='a vehicle, e.g. "port=1,arrive=2s,leave=3m,max_a=32" (keys of a scenario\'s '
        "evs: entries; repeat for more)",
    )
    parser.add_argument("--evs", metavar="FILE", help="vehicles from a YAML file (evs: list)")
    parser.add_argument(
        "--jumper",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the power-sharing jumper input (default: installed)",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=duration,
        default=1.0,
        metavar="T",
        help="the board's longest watchdog time (default 1s; a heartbeat may ask for less)",
    )
    parser.add_argument("--voltage", type=float, default=208.0, help="port voltage (default 208)")
    parser.add_argument("--seed", type=int, default=0, help="meter noise seed")
    parser.add_argument("--for", dest="duration", type=duration, help="stop by itself after this")
    parser.set_defaults(run=run)


def _evs(args: argparse.Namespace, port_ids: list[str]) -> tuple[Any, ...]:
    """The vehicles of ``--evs FILE`` and every ``--ev``, validated like a scenario's."""
    import yaml

    from hal.sim.config import parse_evs
    from hal.yamlnodes import Value, load_document

    evs: list[Any] = []
    if args.evs:
        doc = load_document(args.evs)
        if isinstance(doc.node, yaml.MappingNode):
            entry = doc.mapping(None).get("evs")
            if entry is None:
                doc.fail("no evs: list in this file")
            doc = entry
        evs += parse_evs(doc, port_ids)
    if args.ev:
        items = []
        for spec in args.ev:
            pairs = [p.partition("=") for p in spec.split(",") if p.strip()]
            items.append("{" + ", ".join(f"{k.strip()}: {v.strip()}" for k, _, v in pairs) + "}")
        text = "[" + ", ".join(items) + "]"
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            raise ValueError(f"--ev: cannot read {args.ev!r}: {exc}") from None
        if node is not None:
            evs += parse_evs(Value("--ev", node, "ev"), port_ids)
    return tuple(evs)


def _describe(status: Any) -> list[str]:
    """One line per port (without the current, which is not what an event is about)."""
    lines = []
    for i, p in enumerate(status.ports):
        out = _OUTPUTS.get(p.output, str(p.output))
        if out == "pwm":
            out = f"pwm {p.duty_permille / 10:.1f} %"
        contactor = "closed" if p.contactor_fb else "open"
        flags = "".join(
            text
            for on, text in ((p.gfci, ", GFCI tripped"), (not p.ground_ok, ", ground lost"))
            if on
        )
        lines.append(
            f"port {i + 1}: pilot {p.pilot_high_cv / 100:+5.1f} V, {out}, contactor {contactor}"
            + flags
            + (" (board safe: no heartbeat)" if status.safe else "")
        )
    return lines


def run(args: argparse.Namespace) -> int:
    from hal.serial.board import MIN_WATCHDOG_S, BoardSim
    from hal.serial.protocol import MAX_PORTS
    from hal.sim.bus import SimBus
    from hal.yamlnodes import ConfigError

    if not 1 <= args.ports <= MAX_PORTS:
        print(f"ampshare board-sim: --ports must be 1..{MAX_PORTS}", file=sys.stderr)
        return 2
    if args.heartbeat_timeout < MIN_WATCHDOG_S:
        print(
            f"ampshare board-sim: --heartbeat-timeout must be >= {MIN_WATCHDOG_S}s", file=sys.stderr
        )
        return 2
    port_ids = [str(i + 1) for i in range(args.ports)]
    try:
        evs = _evs(args, port_ids)
    except (ConfigError, ValueError) as exc:
        print(f"ampshare board-sim: {exc}", file=sys.stderr)
        return 2
    if args.link and os.path.lexists(args.link) and not os.path.islink(args.link):
        print(f"ampshare board-sim: {args.link} exists and is not a symlink", file=sys.stderr)
        return 2
    if args.link and os.path.islink(args.link) and os.path.exists(args.link):
        # A dangling link is what a killed simulator leaves: taken over. A live one is not.
        print(
            f"ampshare board-sim: --link {args.link} is taken: it points to "
            f"{os.readlink(args.link)}, another board simulator's (stop it, or pick another path)",
            file=sys.stderr,
        )
        return 2
    bus = SimBus(port_ids, evs, voltage_v=args.voltage, jumper=args.jumper, seed=args.seed)
    board = BoardSim.on_pty(bus, heartbeat_timeout_s=args.heartbeat_timeout)
    assert board.path is not None
    if args.link:
        if os.path.islink(args.link):
            os.unlink(args.link)
        os.symlink(board.path, args.link)
    shown = f"{board.path} (link {args.link})" if args.link else board.path
    print(
        f"board-sim: {shown}, {args.ports} port(s), jumper {'in' if args.jumper else 'out'}, "
        f"watchdog up to {args.heartbeat_timeout:g} s, {len(evs)} vehicle(s)",
        flush=True,
    )
    shown_lines: dict[int, str] = {}

    def show(t: float, status: Any) -> None:
        for i, line in enumerate(_describe(status)):
            if shown_lines.get(i) != line:
                shown_lines[i] = line
                log.info("%s", line)

    board.on_event = show

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await board.start()
        try:
            await asyncio.wait_for(stop.wait(), timeout=args.duration)
        except TimeoutError:
            pass
        finally:
            await board.stop()

    try:
        asyncio.run(main())
    finally:
        board.close()
        if args.link and os.path.islink(args.link) and os.readlink(args.link) == board.path:
            os.unlink(args.link)
    log.info("stopped")
    return 0
