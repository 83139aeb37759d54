"""The sessions database (firmware/sessions/store.py) and ``ampshare sessions``: durability
settings read back, the migration from schema 1, the writer under a locked database, a full
disk (a real EFBIG at the OS boundary) and a corrupt file, the memory bound, and the command.

Waits are bounded with generous timeouts; nothing asserts how long anything took."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firmware.sessions import (
    SCHEMA_VERSION,
    EnergySource,
    EventKind,
    SessionEvent,
    SessionRecord,
    SessionStore,
    StopReason,
    sessions_path,
)
from tools.cli import main as ampshare

ROOT = Path(__file__).resolve().parent.parent
T0 = dt.datetime(2026, 11, 23, 17, 0, tzinfo=dt.UTC)
WAIT_S = 30.0  # generous: a loaded machine is slow, never wrong
LOGGER = "ampshare.sessions"


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _record(sid: str, port: str = "1", *, start_s: float = 0.0, **changes: object) -> SessionRecord:
    start = T0 + dt.timedelta(seconds=start_s)
    record = SessionRecord(
        session_id=sid,
        station_id="st1",
        port_id=port,
        id_tag=None,
        start_at=start,
        meter_start_wh=0.0,
        energy_source=EnergySource.INTEGRATED,
        checkpoint_at=start,
        checkpoint_wh=0.0,
        max_offer_a=0.0,
        max_drawn_a=0.0,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def _start(sid: str, **kw: object) -> SessionEvent:
    return SessionEvent(EventKind.START, _record(sid, **kw))  # type: ignore[arg-type]


def _checkpoint(sid: str, wh: float, **kw: object) -> SessionEvent:
    rec = _record(sid, **kw)  # type: ignore[arg-type]
    at = rec.start_at + dt.timedelta(seconds=wh)
    return SessionEvent(
        EventKind.CHECKPOINT, dataclasses.replace(rec, checkpoint_at=at, checkpoint_wh=wh)
    )


def _stop(
    sid: str, wh: float, reason: StopReason = StopReason.EVDisconnected, **kw: object
) -> SessionEvent:
    rec = _record(sid, **kw)  # type: ignore[arg-type]
    at = rec.start_at + dt.timedelta(seconds=wh)
    closed = dataclasses.replace(
        rec, checkpoint_at=at, checkpoint_wh=wh, stop_at=at, meter_stop_wh=wh, stop_reason=reason
    )
    return SessionEvent(EventKind.STOP, closed)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SessionStore]:
    s = SessionStore(sessions_path("st1", tmp_path), retry_s=0.02, retry_max_s=0.1)
    yield s
    s.close(timeout_s=WAIT_S)


def _lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


# --- durability and the schema ---------------------------------------------------------------


def test_wal_and_synchronous_full_are_in_force(store: SessionStore) -> None:
    store.open()
    store.submit([_start("a")])
    assert store.flush(WAIT_S)
    # Read back on the writer's own connection (synchronous is per connection)...
    assert store.pragmas == {"journal_mode": "wal", "synchronous": 2}  # 2: FULL
    # ... and WAL from another one (it is the file's).
    with sqlite3.connect(store.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_the_path_is_in_the_state_directory_with_the_id_encoded(tmp_path: Path) -> None:
    assert sessions_path("st1", tmp_path) == tmp_path / "st1.sessions.db"
    assert sessions_path("a/b", tmp_path) == tmp_path / "a%2Fb.sessions.db"
    # conftest points $STATE_DIRECTORY at a fresh directory: the portstate default.
    from firmware.portstate import default_state_dir

    assert sessions_path("st1").parent == default_state_dir()


def test_records_round_trip_newest_event_wins(store: SessionStore) -> None:
    store.open()
    store.submit([_start("a"), _checkpoint("a", 100.0), _start("b", port="2", start_s=60.0)])
    store.submit([_checkpoint("a", 250.0), _stop("a", 300.0, StopReason.Other)])
    assert store.flush(WAIT_S)
    a, b = store.sessions()
    assert a == _stop("a", 300.0, StopReason.Other).record
    assert a.energy_wh == 300.0 and not a.is_open
    assert b == _start("b", port="2", start_s=60.0).record and b.is_open
    assert store.open_sessions() == [b]
    assert store.sessions(since=T0 + dt.timedelta(seconds=30)) == [b]
    assert store.integrity_check() == "ok"


# The first schema, written out here by hand (not taken from the code under test).
V1 = """
CREATE TABLE sessions (
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
    stop_reason TEXT
);
INSERT INTO sessions VALUES ('old1', 'st1', '1', '04A2', '2026-01-05T08:00:00+00:00', 1000.0,
    '2026-01-05T09:00:00+00:00', 8000.0, '2026-01-05T09:00:00+00:00', 8000.0, 'Local');
INSERT INTO sessions VALUES ('old2', 'st1', '2', NULL, '2026-01-06T08:00:00+00:00', 0.0,
    '2026-01-06T08:30:00+00:00', 2500.0, NULL, NULL, NULL);
PRAGMA user_version = 1;
"""


def test_a_schema_1_database_is_migrated_with_its_rows_kept(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with sqlite3.connect(store.path) as conn:
        conn.executescript(V1)
    store.open()
    store.submit([_start("new")])
    assert store.flush(WAIT_S)
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        columns = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
    assert {"energy_source", "stop_detail", "max_offer_a", "max_drawn_a"} <= columns
    old1, old2, new = store.sessions()
    assert (old1.session_id, old1.id_tag, old1.energy_wh) == ("old1", "04A2", 7000.0)
    assert old1.stop_reason is StopReason.Local
    assert old1.start_at == dt.datetime(2026, 1, 5, 8, tzinfo=dt.UTC)
    # What schema 1 did not record is unknown, not invented.
    assert old1.energy_source is None and old1.max_offer_a is None
    assert old1.max_drawn_a is None and old1.stop_detail is None
    assert old2.is_open and store.open_sessions() == [old2, new]
    assert new == _start("new").record
    assert any("schema 1 -> 2" in line for line in _lines(caplog, logging.INFO))
    assert store.integrity_check() == "ok"


def test_a_newer_schema_is_never_written(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    with sqlite3.connect(store.path) as conn:
        conn.execute("PRAGMA user_version = 7")
    store.open()
    store.submit([_start("a")])
    _until(lambda: store.failures >= 2, "two failed attempts")
    [error] = _lines(caplog, logging.ERROR)
    assert "schema version 7" in error and store.pending == 1
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 7
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    assert store.close(timeout_s=0.2) is False  # and the loss is said (not waited out)
    assert any("LOST: 1 event(s)" in m for m in _lines(caplog, logging.ERROR))


# --- when writing fails ----------------------------------------------------------------------


def test_a_locked_database_keeps_events_in_memory_and_writes_them_once_released(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.open()
    store.submit([_start("a")])
    assert store.flush(WAIT_S)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        events = [_checkpoint("a", 10.0), _start("b", port="2"), _stop("a", 20.0)]
        # submit must return while the database is locked: in a thread, so that a submit
        # that waited for the lock would fail this test instead of hanging it.
        submitter = threading.Thread(target=store.submit, args=(events,))
        submitter.start()
        submitter.join(WAIT_S)
        assert not submitter.is_alive(), "submit waited for the database"
        _until(lambda: store.failures >= 3, "three failed attempts")
        assert store.pending == 3
        [error] = _lines(caplog, logging.ERROR)
        assert "database is locked" in error and "kept in memory" in error
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert store.flush(WAIT_S)
    assert [r.session_id for r in store.sessions()] == ["a", "b"]
    assert store.sessions()[0] == _stop("a", 20.0).record
    assert len(_lines(caplog, logging.ERROR)) == 1  # one line for the whole episode
    [recovered] = _lines(caplog, logging.WARNING)
    assert "written again" in recovered and "3 event(s) written late" in recovered


# Run in a child process: RLIMIT_FSIZE and SIGXFSZ are the whole process's.
FULL_DISK = r"""
import json, logging, os, resource, signal, sys, time
sys.path.insert(0, sys.argv[2])
from tests.test_sessions_store import _checkpoint, _start, _stop
from firmware.sessions import SessionStore

# Past the limit a write fails with EFBIG (instead of the signal killing the process).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
lines = []
class Keep(logging.Handler):
    def emit(self, record):
        lines.append([record.levelname, record.getMessage()])
logger = logging.getLogger("ampshare.sessions")
logger.addHandler(Keep())
logger.setLevel(logging.INFO)

store = SessionStore(sys.argv[1], max_pending=50, retry_s=0.02, retry_max_s=0.1)
store.open()
store.submit([_start(f"s{n}", start_s=n) for n in range(5)])
assert store.flush(30)
# The disk is full now: no file may grow past what the database file has (its WAL, a
# checkpoint into it on reconnecting, are all refused with EFBIG).
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(sys.argv[1]), hard))
started = 10
store.submit([_start(f"s{n}", start_s=n) for n in range(5, started)])
# Meanwhile the station goes on: checkpoints and the stops of every session.
for n in range(200):
    store.submit([_checkpoint(f"s{n % started}", n, start_s=n % started)])
store.submit([_stop(f"s{n}", 500.0, start_s=n) for n in range(started)])
# Two more failed attempts: the batch in flight has come back and the bound holds.
failures = store.failures
deadline = time.monotonic() + 30
while store.failures < failures + 2 and time.monotonic() < deadline:
    time.sleep(0.01)
during = {
    "pending": store.pending,
    "dropped_checkpoints": store.dropped_checkpoints,
    "dropped_records": store.dropped_records,
    "lines": list(lines),
}
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space again
flushed = store.flush(30)
closed = store.close()
print(json.dumps({
    "during": during,
    "flushed": flushed,
    "closed": closed,
    "open": len(store.open_sessions()),
    "sessions": len(store.sessions()),
    "integrity": store.integrity_check(),
    "lines": lines,
}))
"""


def test_a_full_disk_efbig_keeps_the_station_going_and_drops_checkpoints_first(
    tmp_path: Path,
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path / "st1.sessions.db"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr  # the process kept running to the end
    out = json.loads(proc.stdout)
    during = out["during"]
    errors = [m for level, m in during["lines"] if level == "ERROR"]
    assert "SESSION RECORDS NOT WRITTEN" in errors[0] and "disk I/O error" in errors[0]
    # Kept in memory up to the bound; the oldest checkpoints went, never a start or a stop.
    assert during["pending"] == 50
    assert during["dropped_checkpoints"] > 0 and during["dropped_records"] == 0
    assert "dropping the oldest" in errors[1]
    assert len(errors) == 2  # the failure and the drops, each once for the episode
    # Space again: everything kept is written, and every session is closed.
    assert out["flushed"] and out["closed"]
    assert out["sessions"] == 10 and out["open"] == 0
    assert out["integrity"] == "ok"
    final = [m for level, m in out["lines"] if level != "ERROR"]
    assert len(final) == 1 and "written again" in final[0] and "dropped" in final[0]


def test_a_corrupt_file_is_reported_and_nothing_is_lost_or_raised(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.path.write_bytes(b"\x00garbage, not SQLite\xff" * 512)
    store.open()
    store.submit([_start("a"), _stop("a", 5.0)])  # nothing raised into the caller
    _until(lambda: store.failures >= 3, "three failed attempts")
    assert store.pending == 2
    [error] = _lines(caplog, logging.ERROR)
    assert "file is not a database" in error and "kept in memory" in error
    assert "not a database" in store.integrity_check()
    assert store.open_sessions() == []  # logged, not raised: a station must start anyway
    with pytest.raises(sqlite3.DatabaseError):
        store.sessions()
    # An operator moves the file aside: the writer uses a new one, without a restart.
    store.path.rename(store.path.with_name("st1.sessions.db.bad"))
    assert store.flush(WAIT_S)
    assert store.sessions() == [_stop("a", 5.0).record]
    assert any("written again" in m for m in _lines(caplog, logging.WARNING))


def test_past_the_bound_the_oldest_checkpoints_go_first_and_the_newest_record_stays(
    store: SessionStore,
) -> None:
    store.max_pending = 5  # not started yet: nothing is written meanwhile
    store.submit([_start("a"), *(_checkpoint("a", float(n)) for n in range(10))])
    assert store.pending == 5 and store.dropped_checkpoints == 6
    store.submit([_stop("a", 99.0)])
    assert store.pending == 5 and store.dropped_checkpoints == 7
    assert store.dropped_records == 0
    store.open()
    assert store.flush(WAIT_S)
    assert store.sessions() == [_stop("a", 99.0).record]  # superseded checkpoints lost nothing


def test_with_no_checkpoint_left_the_oldest_record_goes_and_is_counted(
    tmp_path: Path,
) -> None:
    store = SessionStore(tmp_path / "x.sessions.db", max_pending=3)
    store.submit([_start(f"s{n}", start_s=n) for n in range(5)])
    assert store.pending == 3 and store.dropped_records == 2
    store.open()
    assert store.close(WAIT_S)
    assert [r.session_id for r in store.sessions()] == ["s2", "s3", "s4"]


def test_close_writes_what_is_pending_and_says_what_it_could_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SessionStore(tmp_path / "st1.sessions.db")
    store.open()
    # More than one transaction's worth, submitted just before closing.
    store.submit([_start(f"s{n:04}", start_s=n) for n in range(3000)])
    assert store.close(WAIT_S)
    assert len(store.sessions()) == 3000
    # A database locked for longer than close() may wait: False, and the loss said.
    locked = SessionStore(tmp_path / "st1.sessions.db", retry_s=0.02)
    holder = sqlite3.connect(locked.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        locked.open()
        locked.submit([_stop("s0000", 1.0)])
        assert locked.close(timeout_s=0.5) is False
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert any("LOST: 1 event(s)" in m for m in _lines(caplog, logging.ERROR))


# --- ampshare sessions -----------------------------------------------------------------------


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """Two ports' sessions of station st1: closed, faulted and still open."""
    s = SessionStore(sessions_path("st1", tmp_path))
    s.submit(
        [
            _start("a", id_tag="04A2B3"),
            _stop("a", 5400.0, StopReason.Local, id_tag="04A2B3"),  # 5.4 kWh in 1h30m
            _start("b", port="2", start_s=86400.0),
        ]
    )
    faulted = _stop("b", 1234.5, StopReason.Other, port="2", start_s=86400.0)
    s.submit(
        [SessionEvent(EventKind.STOP, dataclasses.replace(faulted.record, stop_detail="overdraw"))]
    )
    s.submit([_start("c", start_s=2 * 86400.0), _checkpoint("c", 600.0, start_s=2 * 86400.0)])
    s.open()
    assert s.close(WAIT_S)
    return tmp_path


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = ampshare(["sessions", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_sessions_prints_a_row_per_session(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(capsys, "--state-dir", str(state_dir))
    assert code == 0
    head, *rows = out.splitlines()
    assert head.split() == ["start", "port", "tag", "kWh", "duration", "stop"]
    local = T0.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert rows[0].split() == [*local.split(), "1", "04A2B3", "5.400", "1h30m", "Local"]
    assert rows[1].split()[2:] == ["2", "-", "1.234", "20m34s", "Other:", "overdraw"]
    assert rows[2].split()[2:] == ["1", "-", "0.600", "10m", "(open)"]


def test_sessions_json_has_every_field_in_utc(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(capsys, "--state-dir", str(state_dir), "--station", "st1", "--json")
    assert code == 0
    a, b, c = json.loads(out)
    assert a["session_id"] == "a" and a["id_tag"] == "04A2B3"
    assert a["start_at"] == "2026-11-23T17:00:00+00:00"
    assert a["stop_at"] == "2026-11-23T18:30:00+00:00"
    assert a["energy_kwh"] == 5.4 and a["duration_s"] == 5400.0
    assert a["stop_reason"] == "Local" and a["energy_source"] == "integrated"
    assert set(a) >= {f.name for f in dataclasses.fields(SessionRecord)}
    assert (b["stop_reason"], b["stop_detail"]) == ("Other", "overdraw")
    assert c["stop_at"] is None and c["checkpoint_wh"] == 600.0


def test_sessions_csv_has_a_header_and_the_same_fields(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(capsys, "--state-dir", str(state_dir), "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["session_id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["start_at"] == "2026-11-23T17:00:00+00:00" and rows[0]["id_tag"] == "04A2B3"
    assert rows[1]["stop_detail"] == "overdraw" and rows[2]["stop_reason"] == ""


def test_sessions_since_keeps_the_later_starts(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(
        capsys, "--state-dir", str(state_dir), "--json", "--since", "2026-11-24T12:00Z"
    )
    assert code == 0 and [s["session_id"] for s in json.loads(out)] == ["b", "c"]
    code, out, _ = _cli(
        capsys, "--state-dir", str(state_dir), "--csv", "--since", "2026-11-25T18:00+01:00"
    )
    assert code == 0 and [r["session_id"] for r in csv.DictReader(io.StringIO(out))] == ["c"]
    # A date alone is local midnight, like the starts the table shows.
    midnight = dt.datetime(2026, 11, 24).astimezone()
    starts = {"a": T0, "b": T0 + dt.timedelta(days=1), "c": T0 + dt.timedelta(days=2)}
    code, out, _ = _cli(capsys, "--state-dir", str(state_dir), "--json", "--since", "2026-11-24")
    assert [s["session_id"] for s in json.loads(out)] == [
        sid for sid, start in starts.items() if start >= midnight
    ]
    # A duration ago: a hundred years back keeps them all.
    code, out, _ = _cli(capsys, "--state-dir", str(state_dir), "--json", "--since", "36500d")
    assert code == 0 and len(json.loads(out)) == 3
    code, out, err = _cli(capsys, "--state-dir", str(state_dir), "--since", "2099-01-01")
    assert code == 0 and out == "" and "no sessions since then" in err


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", "12", "-5d"])
def test_a_bad_since_is_exit_2_with_a_message(
    state_dir: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        ampshare(["sessions", "--state-dir", str(state_dir), "--since", bad])
    assert exit_.value.code == 2
    assert "--since" in capsys.readouterr().err


def test_sessions_without_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "--state-dir", str(tmp_path), "--json")
    assert (code, json.loads(out)) == (0, []) and "no sessions database" in err
    code, out, err = _cli(capsys, "--state-dir", str(tmp_path), "--station", "st9")
    assert code == 2 and out == "" and "'st9' has no sessions database" in err


def test_sessions_with_an_unreadable_database_is_exit_1(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (state_dir / "st2.sessions.db").write_bytes(b"not a database" * 300)
    code, out, err = _cli(capsys, "--state-dir", str(state_dir), "--json")
    assert code == 1 and "st2.sessions.db" in err
    assert len(json.loads(out)) == 3  # st1's are still printed
