"""``ampshare meter probe|serve``: read a Modbus meter once; serve simulated ones over TCP.

One job: the bench tools of the Modbus meter backend. ``probe URL`` reads every quantity of
the meter's map once and prints it (``--json``: ``{"amps": [..], "volts": [..], "kw": x,
"kwh_import": y, ...}``); ``serve`` answers as meters of a model on a TCP port, with fixed
values (energy counting up with the power) until Ctrl-C. Exit codes: 0 ok, 1 the meter did not
answer (or answered nonsense) or the port cannot be served, 2 bad input (URL, model, options).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
from typing import Any

EXIT_OK = 0
EXIT_NO_ANSWER = 1
EXIT_BAD_INPUT = 2


def register(sub: Any) -> None:
    """Add this command's parser to the ampshare subparsers (sets run)."""
    parser = sub.add_parser(
        "meter",
        help="Modbus meters: read one once, or serve simulated ones",
        description="Read a Modbus energy meter once, or serve simulated meters over Modbus TCP.",
    )
    actions = parser.add_subparsers(dest="meter_command", required=True, metavar="ACTION")

    probe = actions.add_parser(
        "probe",
        help="read every quantity of a meter once",
        description="Read every quantity of a meter's register map once and print it.",
    )
    probe.add_argument(
        "url",
        help="modbus-tcp://HOST:PORT?unit=N&model=M or modbus-rtu:///dev/ttyUSB0?baud=9600&unit=N&model=M",
    )
    probe.add_argument("--json", action="store_true", help="print JSON")
    probe.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds to wait for each answer (overrides the URL's timeout=; default 1)",
    )
    probe.set_defaults(run=run)

    serve = actions.add_parser(
        "serve",
        help="serve simulated meters of a model over Modbus TCP",
        description="Answer as meters of a model (one per --unit) on a Modbus TCP port.",
    )
    serve.add_argument(
        "--model", required=True, help="a shipped model (e.g. sdm630) or a .yaml path"
    )
    serve.add_argument("--port", type=int, required=True, help="TCP port (0: any free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument(
        "--unit", type=int, action="append", metavar="N", help="unit id to serve (repeatable)"
    )
    serve.add_argument("--amps", type=float, default=16.0, help="current per phase (A)")
    serve.add_argument("--volts", type=float, default=230.0, help="voltage per phase (V)")
    serve.add_argument("--kwh", type=float, default=0.0, help="import energy to start from")
    serve.add_argument("--hz", type=float, default=50.0, help="frequency")
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.meter_command == "probe":
        return _probe(args.url, args.json, args.timeout)
    return _serve(args)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _probe(url: str, as_json: bool, timeout: float | None) -> int:
    from hal.modbus.maps import QUANTITIES
    from hal.modbus.meter import PollError, read_once
    from hal.modbus.values import AbsurdReading, summary
    from hal.registry import BackendError

    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        print("ampshare meter probe: --timeout must be > 0 seconds", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        meter_map, values = asyncio.run(read_once(url, timeout))
    except BackendError as exc:
        print(f"ampshare meter probe: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except PollError as exc:
        print(f"ampshare meter probe: {url}: no reading: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    try:
        result = summary(meter_map, values)
    except AbsurdReading as exc:
        for name, value in values.items():
            print(f"  {name:12s} {_fmt(value):>14s} {QUANTITIES[name]}", file=sys.stderr)
        print(f"ampshare meter probe: {url}: absurd values refused: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    if as_json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    title = f"{meter_map.model}" + (f" ({meter_map.description})" if meter_map.description else "")
    print(f"{title}: {url}")
    for name, value in values.items():
        print(f"  {name:12s} {_fmt(value):>14s} {QUANTITIES[name]}")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from hal.modbus.maps import MapError, load_map

    units: list[int] = args.unit or [1]
    problems = []
    if not 0 <= args.port <= 65535:
        problems.append(f"--port {args.port} is not a TCP port (0..65535)")
    if len(set(units)) != len(units) or any(not 1 <= u <= 247 for u in units):
        problems.append(f"--unit must be distinct ids in 1..247 (got {units})")
    for name in ("amps", "volts", "kwh", "hz"):
        value = getattr(args, name)
        if not math.isfinite(value) or value < 0:
            problems.append(f"--{name} must be a finite number >= 0")
    try:
        meter_map = load_map(args.model)
    except MapError as exc:
        problems.append(str(exc))
    if problems:
        for problem in problems:
            print(f"ampshare meter serve: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        asyncio.run(_serve_until_stopped(meter_map, units, args))
    except OSError as exc:  # the address is taken (hal.listen): the user's to change
        print(f"ampshare meter serve: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as exc:  # a value the model's registers cannot hold
        print(f"ampshare meter serve: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


async def _serve_until_stopped(meter_map: Any, units: list[int], args: argparse.Namespace) -> None:
    from hal.modbus.server import MeterServer

    server = MeterServer(meter_map, units, host=args.host, port=args.port)
    kwh = args.kwh
    served: dict[str, float | None] = {}
    for unit in units:
        served = server.set(unit, amps=args.amps, volts=args.volts, kwh_import=kwh, hz=args.hz)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    ids = ",".join(str(u) for u in units)
    probe_url = f"{server.url_base}?unit={units[0]}&model={meter_map.model}"
    print(
        f"serving {meter_map.model} unit(s) {ids} on {server.url_base} "
        f"(probe: ampshare meter probe '{probe_url}')",
        flush=True,
    )
    print("  " + ", ".join(f"{k}={_fmt(v)}" for k, v in served.items()), flush=True)
    watts = float(served.get("watts") or 0.0)
    period_s = 1.0
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=period_s)
            # The energy register counts up with the power served, as a real meter's does.
            kwh += watts * period_s / 3.6e6
            for unit in units:
                server.set_values(unit, {"kwh_import": kwh})
    finally:
        await server.stop()
        print("stopped", flush=True)
