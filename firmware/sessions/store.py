"""The station's session records on disk: an SQLite database written off the control tick.

One job: keep the records that ``firmware.sessions.tracker`` makes (its ``SessionEvent``s),
durably, without ever making the control tick wait, and read them back (start-up recovery,
``ampshare sessions``).

* **Where**: ``<state dir>/<station id>.sessions.db`` (:func:`sessions_path`), beside the port
  state file (``firmware.portstate``: same directory, ``default_state_dir()``, the id
  percent-encoded the same way).
* **Durability**: ``PRAGMA journal_mode=WAL`` (a reader, ``ampshare sessions``, never blocks the
  writer) and ``PRAGMA synchronous=FULL``: every commit syncs the WAL, so a committed record
  survives a power cut, not only a crashed process. NORMAL in WAL mode syncs only at
  checkpoints: a crash of the process loses nothing, but a power cut may roll back the last
  transactions, and a power cut is exactly what these records must survive (issue 14). Its
  price is an fsync per commit, a few per minute per charging port.
* **Schema**: ``PRAGMA user_version`` is the schema version (:data:`SCHEMA_VERSION`);
  :data:`MIGRATIONS` takes a database from any older version to the current one, a step per
  version, each step in one transaction. Version 1 is the first schema; version 2 adds
  ``energy_source``, ``stop_detail``, ``max_offer_a`` and ``max_drawn_a`` (NULL in the rows
  version 1 wrote: nobody knows them). A database of a newer version than this firmware is
  never written (it may mean what this code does not know); that is a failure like another.
* **Writing**: ``submit(events)`` only appends to memory (O(1) per event, a lock held for
  microseconds, no I/O) and wakes a writer thread, which upserts the whole record of every
  event (``INSERT ... ON CONFLICT DO UPDATE``: idempotent, so a batch that failed is simply
  written again), many events per transaction. ``close()`` writes what is pending (bounded
  by a timeout) and stops the thread; ``start``/``stop`` do the same as a
  ``hal.interfaces.Service`` of the real-time runner.
* **When writing fails** (disk full, ``EFBIG``, ``database is locked`` beyond the busy timeout of
  :data:`BUSY_TIMEOUT_S`, a file that is not a database, a newer schema), the station goes on
  charging: the writer logs one ERROR for the episode (what failed, and that the records are
  kept in memory), keeps the events in order in memory (at most :data:`MAX_PENDING`), retries
  from :data:`RETRY_S` doubling to :data:`RETRY_MAX_S`, and logs once when writing works again,
  with how many events were written late. Past the bound, the oldest checkpoints are dropped
  first: each event carries its session's whole record, so a later event of the same session
  supersedes them, and what is lost is only the progress a power cut would fall back to. A
  start or a stop is dropped only when no checkpoint is left (and counted apart). Drops are
  counted and logged once per episode. A damaged file is left as it is (an operator may
  recover its records); the writer keeps retrying it, so a file moved aside or repaired is
  used again without a restart.
* **Reading** (blocking: at start-up or in a command, never in the tick) opens the file read-only
  and never creates it: :meth:`SessionStore.open_sessions` (start-up recovery: it logs and
  returns nothing rather than stop a station from starting), :meth:`SessionStore.sessions`
  and :meth:`SessionStore.integrity_check`. Records still in memory are not in what they read.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from firmware.portstate import default_state_dir
from firmware.sessions.model import EnergySource, SessionRecord, StopReason, utc
from firmware.sessions.tracker import EventKind, SessionEvent

__all__ = [
    "BUSY_TIMEOUT_S",
    "CLOSE_TIMEOUT_S",
    "MAX_PENDING",
    "MIGRATIONS",
    "RETRY_MAX_S",
    "RETRY_S",
    "SCHEMA_VERSION",
    "SUFFIX",
    "SchemaError",
    "SessionStore",
    "sessions_path",
]

log = logging.getLogger("ampshare.sessions")

SUFFIX = ".sessions.db"
# Design choices, no standard, all overridable per store:
# A writer that waits longer than this for a lock gives up and retries later: never a hang
# behind a reader or a stray sqlite3 shell holding the database.
BUSY_TIMEOUT_S = 0.1
# Events kept in memory while the database cannot be written: days of checkpoints of two
# charging ports at one a minute, in a few MB.
MAX_PENDING = 10_000
# Retry soon after a short glitch (a lock), rarely on a disk that stays full.
RETRY_S = 1.0
RETRY_MAX_S = 30.0
# How long close() may take to write what is pending before it gives up.
CLOSE_TIMEOUT_S = 5.0
# Events per transaction: one fsync for a backlog's worth, without holding the lock for long.
BATCH = 500
# How long a reader waits for the writer to finish a commit.
READ_TIMEOUT_S = 2.0

SCHEMA_VERSION = 2
# version -> the statements that take a database of the version before it there. Never edit
# a shipped step: a database in the field was made by it; add a version instead.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY NOT NULL,
            station_id TEXT NOT NULL,
            port_id TEXT NOT NULL,
            id_tag TEXT,
            start_at TEXT NOT NULL,
            meter_start_wh REAL NOT NULL,
            checkpoint_at TEXT NOT NULL,
            checkpoint_wh REAL NOT NULL,
            stop_at TEXT,
            meter_stop_wh REAL,
            stop_reason TEXT CHECK (stop_reason IN ('DeAuthorized', 'EmergencyStop',
                'EVDisconnected', 'HardReset', 'Local', 'Other', 'PowerLoss', 'Reboot',
                'Remote', 'SoftReset', 'UnlockCommand'))
        )""",
        "CREATE INDEX sessions_by_start ON sessions (start_at)",
        "CREATE INDEX sessions_open ON sessions (stop_at) WHERE stop_at IS NULL",
    ),
    2: (
        "ALTER TABLE sessions ADD COLUMN energy_source TEXT"
        " CHECK (energy_source IN ('register', 'integrated'))",
        "ALTER TABLE sessions ADD COLUMN stop_detail TEXT",
        "ALTER TABLE sessions ADD COLUMN max_offer_a REAL",
        "ALTER TABLE sessions ADD COLUMN max_drawn_a REAL",
    ),
}

_COLUMNS = (
    "session_id",
    "station_id",
    "port_id",
    "id_tag",
    "start_at",
    "meter_start_wh",
    "energy_source",
    "checkpoint_at",
    "checkpoint_wh",
    "max_offer_a",
    "max_drawn_a",
    "stop_at",
    "meter_stop_wh",
    "stop_reason",
    "stop_detail",
)
_UPSERT = (
    f"INSERT INTO sessions ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in _COLUMNS)}) "
    "ON CONFLICT (session_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "session_id")
)

_Queued = tuple[int, SessionEvent]  # (order of submission, event)


class SchemaError(Exception):
    """The database's schema version is not one this firmware can write."""


def sessions_path(station_id: str, state_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<state_dir>/<station id>.sessions.db`` (default: ``firmware.portstate``'s state
    directory), the id percent-encoded: an id with a ``/`` cannot reach outside it."""
    directory = Path(state_dir) if state_dir is not None else default_state_dir()
    return directory / f"{quote(station_id, safe='')}{SUFFIX}"


class SessionStore:
    """One station's sessions database and its writer thread (module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_pending: int = MAX_PENDING,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        retry_s: float = RETRY_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.path = Path(path)
        self.max_pending = max_pending
        self.busy_timeout_s = busy_timeout_s
        self.retry_s = retry_s
        self.retry_max_s = max(retry_max_s, retry_s)
        # What the writer's connection reads back after setting them (journal_mode, synchronous).
        self.pragmas: dict[str, object] = {}
        self.written = 0  # events written
        self.failures = 0  # attempts that failed
        self.dropped_checkpoints = 0  # dropped from memory past the bound
        self.dropped_records = 0  # starts and stops dropped (only with no checkpoint left)
        self._batch = min(BATCH, max_pending)
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer waits for events
        self._idle = threading.Condition(self._lock)  # flush() waits for the writer
        self._retry_now = threading.Event()  # cuts a backoff short (close)
        self._checkpoints: collections.deque[_Queued] = collections.deque()
        self._others: collections.deque[_Queued] = collections.deque()
        self._seq = 0
        self._inflight = 0
        self._stopping = False
        self._abandon = False
        self._thread: threading.Thread | None = None
        # The writer thread's own: the failure episode and what it has logged of it.
        self._failing = False
        self._episode_written = 0
        self._episode_failures = 0
        self._drops_before = 0  # drops counted before this episode
        self._drops_logged = False

    # --- writing --------------------------------------------------------------------

    def submit(self, events: Iterable[SessionEvent]) -> None:
        """Queue events for the writer: no I/O, never waits on the database (safe in the
        tick). Past ``max_pending`` the oldest checkpoints are dropped (module docstring)."""
        with self._lock:
            for event in events:
                self._seq += 1
                queue = self._checkpoints if event.kind is EventKind.CHECKPOINT else self._others
                queue.append((self._seq, event))
            self._bound()
            self._work.notify()

    @property
    def pending(self) -> int:
        """Events submitted and not yet written (in memory, or being written)."""
        with self._lock:
            return len(self._checkpoints) + len(self._others) + self._inflight

    def open(self) -> None:
        """Start the writer thread, which opens (creates, migrates) the database at once and
        then writes what is submitted. Events submitted before are kept and written."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name=f"sessions {self.path}", daemon=True
            )
        self._thread.start()

    def flush(self, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Wait until everything submitted so far is written; False if ``timeout_s`` passed
        first (blocking: not for the tick)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._checkpoints or self._others or self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0.0:
                    return False
                self._idle.wait(remaining)
            return True

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Write what is pending (for at most ``timeout_s``) and stop the writer; True when
        nothing was left unwritten. What is left is logged as lost."""
        with self._lock:
            self._stopping = True
            self._work.notify_all()
            thread = self._thread
        self._retry_now.set()  # one more attempt now, not after the backoff
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                with self._lock:
                    self._abandon = True
                    self._work.notify_all()
                self._retry_now.set()
                thread.join(self.busy_timeout_s * 10)
        left = self.pending
        if left:
            log.error(
                "SESSION RECORDS LOST: %d event(s) could not be written to %s before stopping; "
                "sessions left open there are closed (PowerLoss, at their last checkpoint) "
                "at the next start",
                left,
                self.path,
            )
        return left == 0

    async def start(self) -> None:
        """``hal.interfaces.Service``: :meth:`open`."""
        self.open()

    async def stop(self) -> None:
        """``hal.interfaces.Service``: :meth:`close`, in a thread (it may wait)."""
        import asyncio

        await asyncio.to_thread(self.close)

    def __enter__(self) -> SessionStore:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- reading --------------------------------------------------------------------

    def open_sessions(self) -> list[SessionRecord]:
        """The sessions the database has open (for ``SessionTracker.recover`` at start-up).
        Never raises: a database that cannot be read is logged, and none are returned (the
        station must start anyway; the writer reports the same file in its own words)."""
        try:
            return self._read("WHERE stop_at IS NULL")
        except (sqlite3.Error, ValueError) as exc:
            log.error(
                "sessions database %s cannot be read (%s): sessions it left open are not "
                "closed at this start",
                self.path,
                _describe(exc),
            )
            return []

    def sessions(self, since: dt.datetime | None = None) -> list[SessionRecord]:
        """Every session (started at or after ``since``, an aware datetime), by start time.
        No file: none. Raises ``sqlite3.Error`` for a file that cannot be read, ValueError
        for a row that is not a record."""
        if since is not None:
            since = utc(since)  # a naive time is refused here, not compared by accident
        records = self._read()
        if since is not None:
            records = [r for r in records if r.start_at >= since]
        return records

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: "ok", or what is wrong (also when the file is not a
        database at all, or there is none)."""
        if not self.path.exists():
            return f"no database at {self.path}"
        try:
            with contextlib.closing(self._connect_read()) as conn:
                rows = conn.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.Error as exc:
            return _describe(exc)
        return "\n".join(str(row[0]) for row in rows)

    def _connect_read(self) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri() + "?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=READ_TIMEOUT_S)

    def _read(self, where: str = "") -> list[SessionRecord]:
        if not self.path.exists():
            return []
        with contextlib.closing(self._connect_read()) as conn:
            conn.row_factory = sqlite3.Row
            # Start-up reads only the open ones (the sessions_open index): a station's years
            # of records are not read before its first tick.
            rows = conn.execute(f"SELECT * FROM sessions {where}").fetchall()
        records = [_from_row(row) for row in rows]
        records.sort(key=lambda r: (r.start_at, r.session_id))
        return records

    # --- the writer thread ----------------------------------------------------------

    def _run(self) -> None:
        delay = self.retry_s
        conn: sqlite3.Connection | None = None
        try:
            while True:
                with self._lock:
                    while (
                        conn is not None
                        and not self._stopping
                        and not (self._checkpoints or self._others)
                    ):
                        self._work.wait()
                    if self._abandon or (self._stopping and not self._queued()):
                        return
                    batch = self._take()
                try:
                    if conn is None:
                        conn = self._open_writer()
                    if batch:
                        _write(conn, [event for _, event in batch])
                except Exception as exc:  # whatever it is, the writer must go on
                    if conn is not None:
                        with contextlib.suppress(sqlite3.Error):
                            conn.close()
                        conn = None
                    with self._lock:
                        self._put_back(batch)
                        self.failures += 1
                    self._failed(exc, delay)
                    self._retry_now.wait(delay)
                    self._retry_now.clear()
                    delay = min(delay * 2.0, self.retry_max_s)
                    continue
                delay = self.retry_s
                with self._lock:
                    self._inflight = 0
                    self.written += len(batch)
                    drained = not self._queued()
                    if drained:
                        self._idle.notify_all()
                self._log_drops()
                if drained:
                    self._drained()
        finally:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()

    def _open_writer(self) -> sqlite3.Connection:
        """The writer's connection: created if need be, WAL, synchronous FULL, migrated."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            conn.execute("PRAGMA synchronous=FULL")
            synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
            _migrate(conn, self.path)
        except BaseException:
            conn.close()
            raise
        if mode.lower() != "wal" and self.pragmas.get("journal_mode") != mode:
            log.warning(
                "sessions database %s: journal mode %s, not WAL (the file system may not "
                "support it): readers now block the writer for as long as they read",
                self.path,
                mode,
            )
        self.pragmas = {"journal_mode": mode, "synchronous": synchronous}
        return conn

    def _queued(self) -> bool:
        return bool(self._checkpoints or self._others or self._inflight)

    def _take(self) -> list[_Queued]:
        """The oldest events, in the order submitted (called with the lock held)."""
        batch: list[_Queued] = []
        checkpoints, others = self._checkpoints, self._others
        while len(batch) < self._batch and (checkpoints or others):
            if others and (not checkpoints or others[0][0] < checkpoints[0][0]):
                batch.append(others.popleft())
            else:
                batch.append(checkpoints.popleft())
        self._inflight = len(batch)
        return batch

    def _put_back(self, batch: Sequence[_Queued]) -> None:
        """A batch that was not written goes back in front, in order (lock held)."""
        for item in reversed(batch):
            queue = self._checkpoints if item[1].kind is EventKind.CHECKPOINT else self._others
            queue.appendleft(item)
        self._inflight = 0
        self._bound()

    def _bound(self) -> None:
        """Keep at most ``max_pending`` events: the oldest checkpoints go first (lock held)."""
        over = len(self._checkpoints) + len(self._others) + self._inflight - self.max_pending
        while over > 0 and self._checkpoints:
            self._checkpoints.popleft()
            self.dropped_checkpoints += 1
            over -= 1
        # A start or a stop goes only when nothing else can: not while a batch is being
        # written, whose checkpoints come back first if it fails (so the bound may be passed
        # by one batch for as long as a write takes).
        while over > 0 and self._others and not self._inflight:
            self._others.popleft()
            self.dropped_records += 1
            over -= 1

    def _failed(self, exc: BaseException, delay: float) -> None:
        self._episode_failures += 1
        if not self._failing:
            self._failing = True
            self._episode_written = self.written
            log.error(
                "SESSION RECORDS NOT WRITTEN: %s: %s. Charging goes on; the %d event(s) not "
                "written are kept in memory (at most %d; past that the oldest checkpoints go "
                "first) and written when the database works again; retrying in %g s, backing "
                "off to every %g s, quietly.",
                self.path,
                _describe(exc),
                self.pending,
                self.max_pending,
                delay,
                self.retry_max_s,
            )
        self._log_drops()

    def _dropped(self) -> int:
        with self._lock:
            return self.dropped_checkpoints + self.dropped_records

    def _log_drops(self) -> None:
        """Once per episode, the first time events had to be dropped."""
        if self._drops_logged or self._dropped() == self._drops_before:
            return
        self._drops_logged = True
        with self._lock:
            checkpoints, records = self.dropped_checkpoints, self.dropped_records
        log.error(
            "sessions database %s: more than %d events waiting: dropping the oldest from "
            "memory (so far in all: %d checkpoint(s), superseded by later events of their "
            "sessions; %d start/stop record(s))",
            self.path,
            self.max_pending,
            checkpoints,
            records,
        )

    def _drained(self) -> None:
        """Everything submitted is written: the end of an episode, logged once."""
        dropped = self._dropped() - self._drops_before
        if self._failing:
            log.warning(
                "sessions database %s written again: %d event(s) written late, after %d "
                "failed attempt(s)%s",
                self.path,
                self.written - self._episode_written,
                self._episode_failures,
                f"; {dropped} event(s) dropped from memory meanwhile" if dropped else "",
            )
        elif dropped:
            log.warning(
                "sessions database %s caught up; %d event(s) were dropped from memory",
                self.path,
                dropped,
            )
        self._failing = False
        self._episode_failures = 0
        self._drops_before += dropped
        self._drops_logged = False


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION`, a version per transaction."""
    first: int | None = None
    while True:
        conn.execute("BEGIN IMMEDIATE")  # read and bump the version under the write lock
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise SchemaError(
                    f"schema version {version} is newer than this firmware's {SCHEMA_VERSION}: "
                    "not written, so as not to damage what it does not know"
                )
            if first is None:
                first = version
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                if 0 < first < version:  # a new file is made by the same steps: no news
                    log.info("sessions database %s: schema %d -> %d", path, first, version)
                return
            for statement in MIGRATIONS[version + 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise


def _write(conn: sqlite3.Connection, events: Sequence[SessionEvent]) -> None:
    """Upsert the records of ``events`` in one transaction, in order."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(_UPSERT, [_to_row(event.record) for event in events])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _describe(exc: BaseException) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({name})" if name else str(exc) or type(exc).__name__


def _iso(when: dt.datetime | None) -> str | None:
    # Fixed width (microseconds always), so that the text sorts as the time does.
    return None if when is None else when.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _to_row(record: SessionRecord) -> dict[str, object]:
    return {
        "session_id": record.session_id,
        "station_id": record.station_id,
        "port_id": record.port_id,
        "id_tag": record.id_tag,
        "start_at": _iso(record.start_at),
        "meter_start_wh": record.meter_start_wh,
        "energy_source": None if record.energy_source is None else record.energy_source.value,
        "checkpoint_at": _iso(record.checkpoint_at),
        "checkpoint_wh": record.checkpoint_wh,
        "max_offer_a": record.max_offer_a,
        "max_drawn_a": record.max_drawn_a,
        "stop_at": _iso(record.stop_at),
        "meter_stop_wh": record.meter_stop_wh,
        "stop_reason": None if record.stop_reason is None else record.stop_reason.value,
        "stop_detail": record.stop_detail,
    }


def _from_row(row: sqlite3.Row) -> SessionRecord:
    """A record from a row of any schema version (a column it lacks reads as None)."""
    values = {key: row[key] for key in row.keys()}  # noqa: SIM118 (sqlite3.Row: keys() only)

    def when(key: str) -> dt.datetime | None:
        text = values.get(key)
        return None if text is None else dt.datetime.fromisoformat(str(text))

    def number(key: str) -> float | None:
        value = values.get(key)
        return None if value is None else float(value)

    start_at, checkpoint_at = when("start_at"), when("checkpoint_at")
    meter_start, checkpoint_wh = number("meter_start_wh"), number("checkpoint_wh")
    if start_at is None or checkpoint_at is None or meter_start is None or checkpoint_wh is None:
        raise ValueError(f"session {values.get('session_id')!r}: a required column is empty")
    source, reason = values.get("energy_source"), values.get("stop_reason")
    return SessionRecord(
        session_id=str(values["session_id"]),
        station_id=str(values["station_id"]),
        port_id=str(values["port_id"]),
        id_tag=None if values.get("id_tag") is None else str(values["id_tag"]),
        start_at=start_at,
        meter_start_wh=meter_start,
        energy_source=None if source is None else EnergySource(source),
        checkpoint_at=checkpoint_at,
        checkpoint_wh=checkpoint_wh,
        max_offer_a=number("max_offer_a"),
        max_drawn_a=number("max_drawn_a"),
        stop_at=when("stop_at"),
        meter_stop_wh=number("meter_stop_wh"),
        stop_reason=None if reason is None else StopReason(reason),
        stop_detail=None if values.get("stop_detail") is None else str(values["stop_detail"]),
    )
