"""The ``ampshare`` command line: run a station, check a config, allocate once.

Every subcommand takes the logging options of ``tools.logs`` (``-v``, ``-q``, ``--log-level``).
A closed stdout (``ampshare allocate ... | head``) ends the command quietly, as it does a Unix
tool: exit status 141 (128 + SIGPIPE), what a shell reports for a tool killed by the signal.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from tools import logs
from tools.args import duration

EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def _version() -> str:
    try:
        return version("ampshare")
    except PackageNotFoundError:  # running from a source tree without an install
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ampshare",
        description="Power-sharing firmware of dual-port AC charging stations, and its simulator.",
    )
    parser.add_argument("--version", action="version", version=f"ampshare {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the station firmware in real time")
    run.add_argument("--config", required=True, help="station config YAML")
    run.add_argument(
        "--for", dest="duration", type=duration, help="stop by itself after this (30s, 5m, 2h)"
    )
    run.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="run the clock this many times faster (simulated hardware only)",
    )
    run.add_argument(
        "--no-live", action="store_true", help="log lines, no live table (always so without a tty)"
    )
    run.add_argument(
        "--broker",
        metavar="URL",
        help="the link's MQTT broker instead of the config's (mqtt://HOST:PORT, mqtts://...)",
    )
    run.add_argument(
        "--state-dir",
        help="where lockouts and GFCI counts survive restarts (default: $STATE_DIRECTORY, "
        "else $XDG_STATE_HOME/ampshare, else ~/.local/state/ampshare)",
    )

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser(
        "check", help="validate a station, site, state, scenario or meter map file"
    )
    check.add_argument("file")

    sim = sub.add_parser("sim", help="run a scenario in virtual time through the firmware loop")
    sim.add_argument("scenario")
    sim.add_argument("--out", help="directory for the trace (ports.csv, limits.csv, summary.json)")
    sim.add_argument("--plot", help="write a PNG of currents and limits over time")
    sim.add_argument("--json", action="store_true", help="print the summary as JSON")
    sim.add_argument(
        "--for", dest="duration", type=duration, help="simulate only the first part of it"
    )

    alloc = sub.add_parser("allocate", help="one allocation of a site in a given state, as JSON")
    alloc.add_argument("site")
    alloc.add_argument("state")

    # Commands of the field-bus backends. Each module adds its own parser and sets ``run``;
    # none imports its bus library (pymodbus, pyserial, aiomqtt) until the command runs.
    from tools import board_sim_cmd, coordinator_cmd, keygen_cmd, meter_cmd, sessions_cmd

    meter_cmd.register(sub)
    board_sim_cmd.register(sub)
    coordinator_cmd.register(sub)
    keygen_cmd.register(sub)
    sessions_cmd.register(sub)
    for command in {id(p): p for p in sub.choices.values()}.values():
        _add_log_options(command)
    return parser


def _add_log_options(parser: argparse.ArgumentParser) -> None:
    # On the leaves only (``config check``, ``meter probe``): a nested subcommand's defaults
    # would overwrite what its parent parsed.
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not nested:
        logs.add_options(parser)
    for action in nested:
        for child in {id(p): p for p in action.choices.values()}.values():
            _add_log_options(child)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # Python's own advice (the signal module's docs, "Note on SIGPIPE"): point stdout at
        # /dev/null so that the interpreter's final flush cannot raise a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(args)
    if args.command == "run":
        from tools.run_cmd import run_command

        return run_command(
            args.config,
            args.duration,
            args.speed,
            live=not args.no_live,
            state_dir=args.state_dir,
            broker=args.broker,
        )
    if args.command == "config":
        from tools.config_cmd import config_check

        return config_check(args.file)
    if args.command == "sim":
        from tools.sim_cmd import sim_command

        return sim_command(args.scenario, args.out, args.plot, args.json, args.duration)
    if args.command == "allocate":
        from tools.allocate_cmd import allocate_command

        return allocate_command(args.site, args.state)
    run_fn = getattr(args, "run", None)
    if run_fn is not None:
        return int(run_fn(args))
    raise AssertionError(args.command)  # argparse refuses unknown commands


if __name__ == "__main__":
    sys.exit(main())
