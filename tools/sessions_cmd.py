"""``ampshare sessions``: list the charging sessions a station recorded.

One job: read the sessions databases of a state directory (``firmware.sessions.store``) and
print one row per session: start (local time), port, tag, kWh, duration and stop reason
(``--json``: a list of objects with every field, times ISO 8601 in UTC; ``--csv``: the same
fields with a header). ``--station ID`` reads that station's database only; without it, every
``*.sessions.db`` in the directory (the station column shows when there are several).
``--since`` keeps the sessions that started at or after a date or time (local time unless it
has an offset) or a duration ago (``7d``, ``12h``).

Exit codes: 0 ok, also when the directory has no database at all (said on stderr; no rows:
a station that never recorded a session is not an error); 1 a database could not be read
(the others are still printed); 2 bad input: a bad ``--since``, or ``--station`` naming a
station with no database there (a name typed wrong should not look like "no sessions").
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firmware.sessions import SessionRecord

EXIT_OK = 0
EXIT_UNREADABLE = 1
EXIT_BAD_INPUT = 2

# Every field, in this order, for --json and --csv.
FIELDS = (
    "session_id",
    "station_id",
    "port_id",
    "id_tag",
    "start_at",
    "stop_at",
    "duration_s",
    "energy_kwh",
    "meter_start_wh",
    "meter_stop_wh",
    "energy_source",
    "stop_reason",
    "stop_detail",
    "max_offer_a",
    "max_drawn_a",
    "checkpoint_at",
    "checkpoint_wh",
)


def register(sub: Any) -> None:
    """Add this command's parser to the ampshare subparsers (sets run)."""
    parser = sub.add_parser(
        "sessions",
        help="list the charging sessions a station recorded",
        description="List the charging sessions recorded in a state directory's databases.",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the station keeps its state (default: $STATE_DIRECTORY, else "
        "$XDG_STATE_HOME/ampshare, else ~/.local/state/ampshare)",
    )
    parser.add_argument(
        "--station", metavar="ID", help="this station only (default: every *.sessions.db)"
    )
    parser.add_argument(
        "--since",
        metavar="DATE",
        type=since,
        help="sessions started at or after DATE: 2026-11-23, 2026-11-23T18:00 (local time "
        "unless it has an offset), or a duration ago: 7d, 12h",
    )
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="a JSON list with every field")
    form.add_argument("--csv", action="store_true", help="CSV with a header, every field")
    parser.set_defaults(run=run)


def since(text: str) -> dt.datetime:
    """``--since``: a date or time (local unless it has an offset) or a duration ago."""
    from hal.durations import parse_duration

    value = text.strip()
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        when = None
    if when is not None:
        # A naive time is the local time, as the table shows starts.
        return (when.astimezone() if when.tzinfo is None else when).astimezone(dt.UTC)
    problem = (
        f"{text!r} is neither a date or time (2026-11-23, 2026-11-23T18:00, "
        "2026-11-23T18:00+01:00) nor a duration ago (7d, 12h)"
    )
    # A bare number is a year to some and seconds to others: a duration needs its unit here.
    if not value or not value[-1].isalpha():
        raise argparse.ArgumentTypeError(problem)
    try:
        seconds = parse_duration(value)
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(problem) from None


def run(args: argparse.Namespace) -> int:
    # Imported here, as every command module does: building the parser loads nothing.
    import sqlite3

    from firmware.portstate import default_state_dir
    from firmware.sessions import SessionStore, sessions_path
    from firmware.sessions.store import SUFFIX

    directory = Path(args.state_dir) if args.state_dir else default_state_dir()
    if args.station is not None:
        path = sessions_path(args.station, directory)
        if not path.is_file():
            print(
                f"ampshare sessions: station {args.station!r} has no sessions database in "
                f"{directory} (no {path.name})",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT
        paths = [path]
    else:
        paths = sorted(directory.glob(f"*{SUFFIX}")) if directory.is_dir() else []
        if not paths:
            print(
                f"ampshare sessions: no sessions database in {directory} (no *{SUFFIX}): "
                "no sessions recorded there",
                file=sys.stderr,
            )
    records: list[SessionRecord] = []
    status = EXIT_OK
    for path in paths:
        try:
            records += SessionStore(path).sessions(args.since)
        except (sqlite3.Error, ValueError) as exc:
            print(f"ampshare sessions: {path}: {exc}", file=sys.stderr)
            status = EXIT_UNREADABLE
    records.sort(key=lambda r: (r.start_at, r.station_id, r.port_id))
    if args.json:
        json.dump([_fields(r) for r in records], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(_fields(r) for r in records)
    elif records:
        _table(records, stations=len({r.station_id for r in records}) > 1)
    elif paths:
        print(
            "ampshare sessions: no sessions" + (" since then" if args.since else ""),
            file=sys.stderr,
        )
    return status


def _fields(record: SessionRecord) -> dict[str, Any]:
    def iso(when: dt.datetime | None) -> str | None:
        return None if when is None else when.astimezone(dt.UTC).isoformat()

    return {
        "session_id": record.session_id,
        "station_id": record.station_id,
        "port_id": record.port_id,
        "id_tag": record.id_tag,
        "start_at": iso(record.start_at),
        "stop_at": iso(record.stop_at),
        "duration_s": record.duration_s,
        "energy_kwh": record.energy_wh / 1000.0,
        "meter_start_wh": record.meter_start_wh,
        "meter_stop_wh": record.meter_stop_wh,
        "energy_source": None if record.energy_source is None else record.energy_source.value,
        "stop_reason": None if record.stop_reason is None else record.stop_reason.value,
        "stop_detail": record.stop_detail,
        "max_offer_a": record.max_offer_a,
        "max_drawn_a": record.max_drawn_a,
        "checkpoint_at": iso(record.checkpoint_at),
        "checkpoint_wh": record.checkpoint_wh,
    }


def _table(records: list[SessionRecord], *, stations: bool) -> None:
    from hal.durations import format_duration

    head = ["start", *(["station"] if stations else []), "port", "tag", "kWh", "duration", "stop"]
    rows = [head]
    for r in records:
        if r.stop_reason is None:
            stop = "(open)"  # so far: to its last checkpoint
        else:
            stop = r.stop_reason.value + (f": {r.stop_detail}" if r.stop_detail else "")
        rows.append(
            [
                r.start_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
                *([r.station_id] if stations else []),
                r.port_id,
                r.id_tag or "-",
                f"{r.energy_wh / 1000.0:.3f}",
                format_duration(max(0, round(r.duration_s))),
                stop,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    kwh = head.index("kWh")
    for row in rows:
        cells = [
            cell.rjust(width) if i == kwh else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
