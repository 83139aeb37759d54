"""What of a port must survive a restart, and the state file that keeps it.

A lockout (welded contactor, GFCI retries exhausted) and a session's GFCI trip count lived only
in memory, so a restart, or a crash loop, cleared a lockout and gave a GFCI a fresh set of
automatic re-arms. UL 2231-2 bounds the automatic reclosings of a charging-circuit
interrupting device (``firmware.port.PortConfig.gfci_max_retries``, where the figures are
cited); that bound has to hold across restarts too. This module keeps that part of each port
on disk; a sessions database may take it over later.

* What persists, per port (:class:`PortRecord`): the lockout and its reason; the GFCI trips
  counted in the session, whether that session is still open (only an unplug seen later ends
  it), and whether the port was waiting to re-arm (with, for people reading the file, when the
  re-arm was due). Faults that an unplug clears are not kept: they are detected again.
* The file: ``<state_dir>/<station id>.ports.json`` (the id percent-encoded where it is not a
  plain file name), JSON with a format name and a schema version (:data:`VERSION`). Written
  atomically and durably: a temporary file in the same directory, flushed and fsynced,
  ``os.replace``d over the old one, then the directory fsynced, so that a crash or power cut
  at any moment leaves either the old file or the new one, never a torn one. A lockout is
  cleared by the operator reset (``Station.reset``), or, with the station stopped, by setting
  the port's ``"lockout"`` to null in the file (deleting the file clears every port).
* When: never in the control tick. The station hands each changed set of records to
  :meth:`StateWriter.submit` (no I/O, O(ports)); the writer, a ``hal.interfaces.Service``
  started by the real-time runner, writes off the loop (``asyncio.to_thread``), coalescing
  whatever arrived while a write was in flight into one write of the newest state, writes once
  at start and flushes on stop. A write that fails (disk full, read-only) is logged loudly once
  and retried every :data:`RETRY_S`; the station keeps charging (it is as safe as before this
  file existed; what is lost is only the memory of a restart).
* Loading (:meth:`StateFile.load`) refuses nothing silently. No file (or no such directory):
  a fresh start. A file that cannot be read or is not exactly what this firmware writes
  (corrupt JSON, another version, another station, other ports, a bad value): a loud warning,
  the file is moved aside (``.unreadable``) and EVERY port of the station starts locked out
  with the reason ``"state-file"``, until the same operator reset that clears any lockout. Why
  not start fresh and just say so: such a file may have held a lockout or a GFCI count, and
  clearing it is the very failure this file exists to prevent (a GFCI given more automatic
  re-arms than UL 2231-2 allows; a weld that the feedback shows only now and then
  energized again); a station that does not charge until someone looks is the safe side, and with
  atomic writes a damaged file means a damaged disk or a hand edit, which deserve a look.
* Restoring: ``firmware.port.restored_state`` (pure). A locked-out port starts in LOCKOUT with
  the same reason; a GFCI count comes back with its session; a port that was waiting to re-arm
  waits the full delay again from start-up rather than what was left of it by the wall clock:
  never sooner than without the restart, and a wall clock that jumps (a Raspberry Pi without
  a real-time clock boots at its last saved time until NTP answers) cannot shorten it.

Size: one thing, the file of what a restart must not forget: its format, its durable writing
and its conservative reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from firmware.port import Mode, PortConfig, PortState, restored_state

if TYPE_CHECKING:
    from firmware.station import Station

__all__ = [
    "FORMAT",
    "RETRY_S",
    "UNREADABLE",
    "VERSION",
    "Loaded",
    "PortRecord",
    "StateFile",
    "StateWriter",
    "attach",
    "default_state_dir",
    "record_of",
    "restore",
    "state_file",
]

log = logging.getLogger("ampshare.portstate")

FORMAT = "ampshare port state"
VERSION = 1
# The lockout reason of every port when the state file could not be used (module docstring).
UNREADABLE = "state-file"
# Design choice, no standard: how often a failed write is tried again. Soon enough that a
# freed disk is used within seconds, rare enough not to spin on a read-only one.
RETRY_S = 5.0

ToUnix = Callable[[float], float]  # station time -> Unix time (for the file's readers)

_TOP_KEYS = frozenset({"format", "version", "station", "written_at", "ports"})
_PORT_KEYS = frozenset({"lockout", "gfci_trips", "session", "gfci_wait", "gfci_rearm_due"})


@dataclass(frozen=True, slots=True)
class PortRecord:
    """The part of a port that a restart must not forget.

    ``rearm_due`` is station time, meaningful only in the run that made the record (the file
    carries it as wall-clock time, for people; a restart waits the full delay anyway). It is
    None in records read from a file. In a lockout only ``lockout`` matters (a reset starts
    the port afresh); ``gfci_trips`` is kept for the record.
    """

    lockout: str | None = None
    gfci_trips: int = 0
    session: bool = False  # the count's session is open: an unplug seen later clears it
    gfci_wait: bool = False
    rearm_due: float | None = None


def record_of(state: PortState, config: PortConfig) -> PortRecord:
    """The persistent part of a port machine's state (pure, cheap: called after a change)."""
    if state.mode is Mode.LOCKOUT:
        return PortRecord(lockout=state.fault or "unknown", gfci_trips=state.gfci_trips)
    trips = state.gfci_trips
    waiting = state.mode is Mode.GFCI_WAIT
    return PortRecord(
        gfci_trips=trips,
        # Without trips the session is not worth a write: the pilot shows it again.
        session=trips > 0 and state.session_start is not None,
        gfci_wait=waiting,
        # ``since`` is the trip that started the wait (firmware.port._gfci_trip).
        rearm_due=state.since + config.gfci_retry_delay_s if waiting else None,
    )


def restore(record: PortRecord, now: float) -> PortState:
    """The port machine's state at start-up ``now`` from a record (pure)."""
    return restored_state(
        now,
        lockout=record.lockout,
        gfci_trips=record.gfci_trips,
        in_session=record.session,
        gfci_wait=record.gfci_wait,
    )


# --- where -----------------------------------------------------------------------------------


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``; the first if it lists several,
    colon-separated), else ``$XDG_STATE_HOME/ampshare``, else ``~/.local/state/ampshare``
    (XDG Base Directory: a relative ``XDG_STATE_HOME`` is invalid and ignored)."""
    env = os.environ if environ is None else environ
    systemd = env.get("STATE_DIRECTORY", "")
    if systemd:
        return Path(systemd.split(":")[0])
    xdg = env.get("XDG_STATE_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "ampshare"
    home = env.get("HOME")
    base = Path(home) if home else Path.home()
    return base / ".local" / "state" / "ampshare"


def state_file(state_dir: str | os.PathLike[str], station_id: str) -> Path:
    """``<state_dir>/<station id>.ports.json``, the id percent-encoded: an id with a ``/``
    (allowed for a station without a link) cannot reach outside the directory."""
    return Path(state_dir) / f"{quote(station_id, safe='')}.ports.json"


# --- the file --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Loaded:
    """What :meth:`StateFile.load` found: the records to start from, and how it went."""

    records: dict[str, PortRecord]
    status: Literal["fresh", "restored", "unreadable"]
    problem: str | None = None  # why the file could not be used ("unreadable")


class _Invalid(Exception):
    """The file is not exactly what this firmware writes."""


class StateFile:
    """One station's state file: ``load`` at start-up, ``encode`` + ``write`` to save."""

    def __init__(self, path: str | os.PathLike[str], station_id: str, port_ids: Sequence[str]):
        self.path = Path(path)
        self.station_id = station_id
        self.port_ids = tuple(port_ids)

    # --- load ---------------------------------------------------------------------------

    def load(self) -> Loaded:
        """Read the file at start-up (module docstring: what a missing or bad file means).

        Also removes temporary files a crash left between write and rename: the complete
        file they were to replace is still in place, so they hold nothing that counts.
        """
        self._remove_stray_temporaries()
        try:
            text = self.path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            # No such file: nothing was ever saved here (a path through a regular file cannot
            # have held one either). A fresh start, as before this file existed.
            return Loaded({pid: PortRecord() for pid in self.port_ids}, "fresh")
        except (OSError, UnicodeDecodeError) as exc:
            return self._unusable(f"cannot be read: {exc}")
        try:
            records = self._decode(text)
        except _Invalid as exc:
            return self._unusable(str(exc))
        return Loaded(records, "restored")

    def _unusable(self, problem: str) -> Loaded:
        aside = self.path.with_name(self.path.name + ".unreadable")
        try:
            os.replace(self.path, aside)
            kept = f"it was moved to {aside}"
        except OSError as exc:
            kept = f"it could not be moved aside ({exc})"
        log.error(
            "STATE FILE UNUSABLE: %s %s; %s. Every port of station %s starts LOCKED OUT "
            "(%s) until an operator reset: a damaged file must never clear a lockout or a "
            "GFCI count it may have held.",
            self.path,
            problem,
            kept,
            self.station_id,
            UNREADABLE,
        )
        records = {pid: PortRecord(lockout=UNREADABLE) for pid in self.port_ids}
        return Loaded(records, "unreadable", problem)

    def _decode(self, text: str) -> dict[str, PortRecord]:
        try:
            doc = json.loads(text)
        except ValueError as exc:  # also a file cut short
            raise _Invalid(f"is not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise _Invalid("is not a JSON object")
        if doc.get("format") != FORMAT:
            raise _Invalid(f"is not an {FORMAT!r} file (format {doc.get('format')!r})")
        if doc.get("version") != VERSION or type(doc.get("version")) is not int:
            raise _Invalid(
                f"has schema version {doc.get('version')!r}; this firmware reads {VERSION}"
            )
        _keys(doc, _TOP_KEYS, "the file")
        if doc["station"] != self.station_id:
            raise _Invalid(f"belongs to station {doc['station']!r}, not {self.station_id!r}")
        _time(doc["written_at"], "written_at")
        ports = doc["ports"]
        if not isinstance(ports, dict):
            raise _Invalid("ports: not an object")
        if set(ports) != set(self.port_ids):
            raise _Invalid(
                f"has ports {sorted(ports)}, this station {sorted(self.port_ids)}: "
                "a record for another set of ports may hold a lockout of one of these"
            )
        return {pid: _port_record(pid, ports[pid]) for pid in self.port_ids}

    def _remove_stray_temporaries(self) -> None:
        try:
            strays = list(self.path.parent.glob(f".{self.path.name}.*.tmp"))
        except OSError:
            return
        for stray in strays:
            with contextlib.suppress(OSError):
                stray.unlink()
                log.info("removed %s, left by a write that did not finish", stray)

    # --- save ---------------------------------------------------------------------------

    def encode(
        self, records: Mapping[str, PortRecord], to_unix: ToUnix | None, written_at: float
    ) -> str:
        """The file's text for ``records`` (``written_at``: Unix time)."""
        ports: dict[str, dict[str, Any]] = {}
        for pid in self.port_ids:
            r = records[pid]
            due = None if r.rearm_due is None or to_unix is None else _iso(to_unix(r.rearm_due))
            ports[pid] = {
                "lockout": r.lockout,
                "gfci_trips": r.gfci_trips,
                "session": r.session,
                "gfci_wait": r.gfci_wait,
                # For people: a restart waits the full delay again (module docstring).
                "gfci_rearm_due": due,
            }
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "station": self.station_id,
            "written_at": _iso(written_at),
            "ports": ports,
        }
        return json.dumps(doc, indent=2) + "\n"

    def write(self, text: str) -> None:
        """Replace the file with ``text``, atomically and durably (blocking: run it in a
        thread). Raises OSError when it cannot; the old file is then left as it was."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())  # the data on disk before the name points at it
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        # The rename itself on disk: without it a power cut may bring the old name back.
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _keys(obj: dict[str, Any], expected: frozenset[str], where: str) -> None:
    if set(obj) != expected:
        missing, extra = sorted(expected - set(obj)), sorted(set(obj) - expected)
        raise _Invalid(f"{where}: missing {missing}, unknown {extra}")


def _time(value: Any, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise _Invalid(f"{where}: not a time")
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        raise _Invalid(f"{where}: not a time ({value!r})") from None


def _port_record(pid: str, entry: Any) -> PortRecord:
    where = f"port {pid}"
    if not isinstance(entry, dict):
        raise _Invalid(f"{where}: not an object")
    _keys(entry, _PORT_KEYS, where)
    lockout = entry["lockout"]
    if lockout is not None and not (isinstance(lockout, str) and lockout):
        raise _Invalid(f"{where}: lockout: not a reason")
    trips = entry["gfci_trips"]
    if type(trips) is not int or trips < 0:  # bool is an int subclass: not a count
        raise _Invalid(f"{where}: gfci_trips: not a count")
    for flag in ("session", "gfci_wait"):
        if type(entry[flag]) is not bool:
            raise _Invalid(f"{where}: {flag}: not true or false")
    _time(entry["gfci_rearm_due"], f"{where}: gfci_rearm_due")
    return PortRecord(
        lockout=lockout,
        gfci_trips=trips,
        session=entry["session"],
        gfci_wait=entry["gfci_wait"],
    )


def _iso(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).isoformat(timespec="seconds")


# --- the writer ------------------------------------------------------------------------------


class StateWriter:
    """Writes a station's records off the control loop (a ``hal.interfaces.Service``).

    ``submit`` is what the station calls inside its tick when a record changed: it only keeps
    the newest records and wakes the writer task. The task writes them in a thread; records
    submitted meanwhile are written together once it is done. It writes once at start (the
    file then exists and the directory is known to be writable, or the failure is known at
    once) and flushes the newest records on stop.
    """

    def __init__(
        self,
        store: StateFile,
        records: Mapping[str, PortRecord],
        *,
        to_unix: ToUnix | None = None,
        retry_s: float = RETRY_S,
    ) -> None:
        self.store = store
        self.to_unix = to_unix
        self.retry_s = retry_s
        self.writes = 0  # files written
        self.failures = 0  # writes that failed
        self._latest: dict[str, PortRecord] = dict(records)
        self._written: dict[str, PortRecord] | None = None
        self._failing = False
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def submit(self, records: Mapping[str, PortRecord]) -> None:
        """The station's records after a tick that changed them. No I/O: safe in the tick."""
        self._latest = dict(records)
        self._wake.set()

    async def start(self) -> None:
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name=f"state file {self.store.path}")

    async def stop(self) -> None:
        """Write the newest records (if the file does not hold them yet), then stop."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            stopping = self._stopping.is_set()
            ok = await self._flush()
            if stopping:
                if not ok:
                    log.error(
                        "state file %s: the final state could not be written: the next start "
                        "may not know of a lockout or GFCI trip of this run",
                        self.store.path,
                    )
                return
            if not ok:
                # Retry later; stop() cuts the wait short for one last attempt.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.retry_s):
                        await self._stopping.wait()
                self._wake.set()

    async def _flush(self) -> bool:
        records = self._latest
        if records == self._written:
            return True
        # Encoded here, on the loop (microseconds); only the file system calls go to a thread.
        text = self.store.encode(records, self.to_unix, _now_unix())
        try:
            await asyncio.to_thread(self.store.write, text)
        except OSError as exc:
            self.failures += 1
            if not self._failing:
                self._failing = True
                log.error(
                    "STATE FILE NOT WRITTEN: %s: %s. Charging goes on, but until it can be "
                    "written a restart forgets lockouts and GFCI trip counts; retrying every "
                    "%g s, quietly.",
                    self.store.path,
                    exc,
                    self.retry_s,
                )
            return False
        self.writes += 1
        self._written = records
        if self._failing:
            self._failing = False
            log.warning(
                "state file %s written again after %d failures", self.store.path, self.failures
            )
        return True


def _now_unix() -> float:
    # Only a label for people reading the file ("written_at"); nothing is timed by it.
    return dt.datetime.now(dt.UTC).timestamp()


# --- wiring ----------------------------------------------------------------------------------


def attach(
    station: Station,
    station_id: str,
    state_dir: str | os.PathLike[str],
    *,
    to_unix: ToUnix | None = None,
    retry_s: float = RETRY_S,
) -> StateWriter:
    """Give a station its state file: load it, restore the ports, and add the writer to the
    station's services (started and stopped by the real-time runner). Call it once, before
    the first tick. In virtual time (``ampshare sim``) nothing calls it: no file is written.
    """
    store = StateFile(state_file(state_dir, station_id), station_id, station.port_ids)
    loaded = store.load()
    station.restore_ports(loaded.records)
    if loaded.status == "restored":
        for pid, record in loaded.records.items():
            if record.lockout is not None:
                log.warning(
                    "port %s of station %s starts LOCKED OUT (%s), as it was before this start "
                    "(%s); it stays so until an operator reset",
                    pid,
                    station_id,
                    record.lockout,
                    store.path,
                )
            elif record.gfci_trips:
                wait = ", waiting the full re-arm delay again" if record.gfci_wait else ""
                log.warning(
                    "port %s of station %s: %d GFCI trip(s) in its session before this start%s",
                    pid,
                    station_id,
                    record.gfci_trips,
                    wait,
                )
    writer = StateWriter(store, station.persistent(), to_unix=to_unix, retry_s=retry_s)
    station.on_persist = writer.submit
    station.services.append(writer)
    return writer
