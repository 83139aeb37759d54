"""Logging of every ``ampshare`` command: one format, ``-v``/``-q``/``--log-level``, journald.

One job: configure the standard ``logging`` module once per process (``setup``), from the
options every subcommand gets (``add_options``). Everything a command reports while it runs (a
port's mode and offer, a station's link, a coordinator's limits, a board's pins) is a log
record on stderr; stdout is left to what a command produces (JSON, a summary, a live table).

Two formats, chosen by where stderr goes:

* a terminal or a file: ``2026-12-03 19:54:55.123 INFO  ampshare.station: message``, the
  local time to the millisecond (what a human reads next to a wall clock);
* journald (``$JOURNAL_STREAM`` names stderr, systemd.exec(5)): ``<6>ampshare.station:
  message``, with the syslog priority as sd-daemon(3) prefixes it, and no time stamp: the
  journal stamps each line itself and shows the priority in colour.

Levels: INFO by default; ``-v`` DEBUG; ``-q`` WARNING, ``-qq`` ERROR; ``--log-level NAME``
wins over both. Libraries (aiomqtt, asyncio; pymodbus is silenced by the meter backend) stay
quiet unless the level asked for is DEBUG, so ``-v`` is how one sees their chatter.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TextIO

__all__ = ["HUMAN_FORMAT", "add_options", "journald_stream", "level_from", "setup"]

HUMAN_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
_HUMAN_DATE = "%Y-%m-%d %H:%M:%S"
_LEVELS = ("debug", "info", "warning", "error", "critical")
_LIBRARIES = ("aiomqtt", "asyncio", "websockets")
# sd-daemon(3): <3> error, <4> warning, <6> info, <7> debug (<2> critical).
_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def add_options(parser: argparse.ArgumentParser) -> None:
    """``-v``, ``-q`` and ``--log-level`` on one (sub)command's parser."""
    group = parser.add_argument_group("logging")
    group.add_argument(
        "-v", "--verbose", action="count", default=0, help="more detail (DEBUG), libraries too"
    )
    group.add_argument(
        "-q", "--quiet", action="count", default=0, help="warnings only (-qq: errors only)"
    )
    group.add_argument(
        "--log-level",
        type=str.lower,
        choices=_LEVELS,
        help="the level outright (wins over -v/-q); default info",
    )


def level_from(args: argparse.Namespace) -> int:
    """The level the options ask for."""
    name: str | None = getattr(args, "log_level", None)
    if name is not None:
        return int(logging.getLevelName(name.upper()))
    verbose: int = getattr(args, "verbose", 0) or 0
    quiet: int = getattr(args, "quiet", 0) or 0
    if verbose > quiet:
        return logging.DEBUG
    if quiet >= 2:
        return logging.ERROR
    if quiet == 1:
        return logging.WARNING
    return logging.INFO


def journald_stream(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Whether ``stream`` is connected to the journal (systemd.exec(5), ``$JOURNAL_STREAM``:
    the device and inode of the journal's socket, which a redirected stream no longer has)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):  # a stream with no file descriptor (a test's StringIO)
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{device}:{inode}"


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        # Each line of a multi-line record is its own journal entry: prefix every one.
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler that writes to whatever ``sys.stderr`` is when a record is emitted: a live
    table (rich) swaps stderr for a proxy that prints above the table, and records must go
    there, not under the table's feet."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup(args: argparse.Namespace | None = None, *, level: int | None = None) -> int:
    """Configure the root logger for this process (replacing the handler an earlier call set,
    and no one else's: a test runner's own capture stays); return the level in force."""
    chosen = level if level is not None else (level_from(args) if args else logging.INFO)
    handler = _StderrHandler()
    if journald_stream(sys.stderr):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(HUMAN_FORMAT, _HUMAN_DATE))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _StderrHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(chosen)
    debug = chosen <= logging.DEBUG
    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)
    if debug:
        # pymodbus is otherwise kept silent by hal/modbus/line.py: a meter that stops
        # answering is reported once by the meter backend, not on every retry.
        logging.getLogger("pymodbus").setLevel(logging.DEBUG)
    logging.captureWarnings(True)
    return chosen
