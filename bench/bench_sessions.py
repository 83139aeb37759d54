"""Benchmark: the control tick with session recording on beside off, and the store's write rate.

Run: ``.venv/bin/python bench/bench_sessions.py``. The jumper station on the simulated bus,
ticked every 50 ms of virtual time for a simulated hour with two cars charging (an offer change
now and then, a checkpoint a minute): the time of each tick (``Station.step`` plus the per-tick
hook) with the session records queued to a real SQLite store (WAL, synchronous=FULL, its
writer thread running) beside the same ticks without; p50 and p99 and their ratio, measured in
this run. Then the store alone: how many session events a second its writer commits when
handed them as fast as they come (each batch one transaction, fsync'd).
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.app import build_station  # noqa: E402
from firmware.config import load_station  # noqa: E402
from firmware.sessions import SessionStore  # noqa: E402
from firmware.sessions.live import StationSessions  # noqa: E402
from firmware.station import Station  # noqa: E402
from hal.sim.bus import SimBus  # noqa: E402
from hal.sim.ev import EvSpec  # noqa: E402

TICK_S = 0.05
HOUR_S = 3600.0


def station() -> Station:
    config = load_station(ROOT / "configs" / "ct4000-jumper.yaml")
    evs = [
        EvSpec(port="1", arrive_s=1.0, max_a=32, battery_kwh=500, soc=0.1),
        EvSpec(port="2", arrive_s=600.0, leave_s=2400.0, max_a=32, battery_kwh=500, soc=0.1),
    ]
    bus = SimBus(list(config.port_ids), evs, jumper=True, seed=1)
    return build_station(config, bus)


def ticks(record: Path | None) -> list[float]:
    """Seconds per tick over a simulated hour, recording sessions into ``record`` or not."""
    s = station()
    sessions = None
    if record is not None:
        sessions = StationSessions(s, "bench", {"1": 208.0, "2": 208.0}, record)
        sessions.store.open()
    times = []
    t = 0.0
    while t < HOUR_S:
        start = time.perf_counter()
        snap = s.step(t)
        if sessions is not None:
            sessions.ticked(snap)
        times.append(time.perf_counter() - start)
        t += TICK_S
    if sessions is not None:
        sessions.store.close()
    return times


def write_rate(directory: Path, sessions: int = 2000) -> float:
    """Session events committed per second by the writer, handed as fast as they come."""
    from firmware.sessions.model import EnergySource, SessionRecord
    from firmware.sessions.tracker import EventKind, SessionEvent

    store = SessionStore(directory / "rate.sessions.db")
    store.open()
    start = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
    events = []
    for i in range(sessions):
        record = SessionRecord(
            session_id=f"s{i}",
            station_id="bench",
            port_id=str(i % 2 + 1),
            id_tag=None,
            start_at=start,
            meter_start_wh=0.0,
            energy_source=EnergySource.REGISTER,
            checkpoint_at=start,
            checkpoint_wh=float(i),
            max_offer_a=16.0,
            max_drawn_a=15.9,
        )
        events += [
            SessionEvent(EventKind.START, record),
            SessionEvent(EventKind.CHECKPOINT, record),
        ]
    began = time.perf_counter()
    store.submit(events)
    store.flush(timeout_s=600.0)
    elapsed = time.perf_counter() - began
    store.close()
    return len(events) / elapsed


def main() -> None:
    off = ticks(None)
    with tempfile.TemporaryDirectory() as tmp:
        on = ticks(Path(tmp))
        rate = write_rate(Path(tmp))

    def pct(xs: list[float], q: float) -> float:
        return statistics.quantiles(xs, n=100)[q - 1] * 1e6 if q < 100 else max(xs) * 1e6

    print(f"{len(off)} ticks of 50 ms over a simulated hour, two cars")
    print(f"{'recording':10s} {'p50 µs':>8s} {'p99 µs':>8s} {'max µs':>8s}")
    for name, xs in (("off", off), ("on", on)):
        print(f"{name:10s} {pct(xs, 50):8.0f} {pct(xs, 99):8.0f} {max(xs) * 1e6:8.0f}")
    print(f"on/off: p50 x{pct(on, 50) / pct(off, 50):.2f}, p99 x{pct(on, 99) / pct(off, 99):.2f}")
    print(f"store: {rate:,.0f} session events committed per second (WAL, synchronous=FULL)")


if __name__ == "__main__":
    main()
