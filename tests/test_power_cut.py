"""Sessions survive a power cut: ``ampshare run`` of a simulated station with two cars
charging (sped up) is SIGKILLed at 20 random moments and restarted each time; then every
session is on record once, closed, the interrupted ones with PowerLoss at their last
checkpoint and within one checkpoint interval of what the simulator delivered, and the
database passes SQLite's integrity check.

What the simulator delivered is read from outside the station, through the simulated meters'
own Modbus server (``sim: meter_server:``, pymodbus on loopback), just before each kill."""

from __future__ import annotations

import datetime as dt
import itertools
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware.sessions import SessionStore, StopReason, sessions_path

ROOT = Path(__file__).resolve().parent.parent
SPEED = 20.0
STATION = """\
station: cut
model: ct4000
jumper: true
voltage_v: 208
hardware: sim://
groups: [{{id: feed, breaker_a: 40}}]
ports: [{{id: "1", group: feed}}, {{id: "2", group: feed}}]
sim:
  meter_server: {{model: sdm120, port: {port}}}
  evs:
    - {{port: 1, arrive: 1s, max_a: 32, battery_kwh: 500, soc: 0.1, response_s: 1}}
    - {{port: 2, arrive: 3s, max_a: 32, battery_kwh: 500, soc: 0.1, response_s: 1}}
"""
# The most a session can take per second of wall time: both limits at 32 A of a 208 V feed,
# SPEED station seconds per wall second.
MAX_WH_PER_WALL_S = 32.0 * 208.0 * SPEED / 3600.0
# One checkpoint interval of a port at the most it can take (60 s of station time at 30 A,
# the CT4000's port), plus the SDM120 register's resolution (its float32 kWh near these
# values: well under 1 Wh) and the few station seconds between the reading and the kill.
CHECKPOINT_WH = 60.0 * 30.0 * 208.0 / 3600.0
SLACK_WH = 1.0 + 3.0 * 30.0 * 208.0 / 3600.0


def _delivered_wh(port: int) -> dict[str, float] | None:
    """Each simulated meter's import register (Wh) as its Modbus server answers now; None
    before the server listens (a kill during start-up)."""
    import asyncio

    from hal.modbus.line import PollError
    from hal.modbus.meter import read_once
    from hal.registry import BackendError

    out = {}
    for unit in (1, 2):
        url = f"modbus-tcp://127.0.0.1:{port}?unit={unit}&model=sdm120"
        try:
            _, values = asyncio.run(read_once(url, 0.5))
        except (PollError, BackendError, OSError):
            return None
        out[str(unit)] = float(values["kwh_import"]) * 1000.0
    return out


def _run(config: Path, state: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "run",
            "--config",
            str(config),
            "--speed",
            str(SPEED),
            "--state-dir",
            str(state),
            "-q",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sessions_survive_20_kills(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = tmp_path / "cut.yaml"
    config.write_text(STATION.format(port=port))
    state = tmp_path / "state"
    rng = random.Random(20261203)
    runs: list[tuple[dt.datetime, dt.datetime, dict[str, float] | None]] = []
    for _ in range(20):
        began = dt.datetime.now(dt.UTC)
        proc = _run(config, state)
        time.sleep(rng.uniform(0.3, 2.5))  # anywhere: starting, charging, writing
        delivered = _delivered_wh(port)  # the simulator's truth, just before the cut
        proc.send_signal(signal.SIGKILL)
        killed = dt.datetime.now(dt.UTC)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        runs.append((began, killed, delivered))
    # The last start finds what the last kill left open; then a clean stop closes the rest.
    final = _run(config, state, "--for", "10s")
    _, err = final.communicate(timeout=60)
    assert final.returncode == 0, err

    path = sessions_path("cut", state)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = SessionStore(path)
    sessions = store.sessions()
    assert sessions and all(not s.is_open for s in sessions)
    assert len({s.session_id for s in sessions}) == len(sessions)
    lost = [s for s in sessions if s.stop_reason is StopReason.PowerLoss]
    # Most kills land while the cars charge; each leaves its open sessions to be recovered.
    assert len(lost) >= 10, [(s.port_id, s.stop_reason) for s in sessions]
    for s in lost:
        assert s.stop_at == s.checkpoint_at and s.meter_stop_wh == s.checkpoint_wh
    # Each interrupted session against what the simulator had delivered when it was cut: the
    # record is its last checkpoint, so it is behind by at most one checkpoint interval.
    compared = 0
    for began, killed, delivered in runs:
        if delivered is None:
            continue
        for s in lost:
            if began <= s.start_at <= killed:
                truth = delivered[s.port_id] - s.meter_start_wh
                assert -SLACK_WH <= truth - s.energy_wh <= CHECKPOINT_WH + SLACK_WH, (
                    s,
                    truth,
                )
                compared += 1
    assert compared >= 10
    for port in ("1", "2"):
        mine = sorted((s for s in sessions if s.port_id == port), key=lambda s: s.start_at)
        for before, after in itertools.pairwise(mine):
            assert before.stop_at is not None and before.stop_at <= after.start_at  # no overlap
    for s in sessions:
        # Never more than the feed could carry over the session's time (plus a checkpoint's
        # 60 station seconds of slack), never less than nothing.
        limit = (s.duration_s + 60.0 / SPEED) * MAX_WH_PER_WALL_S
        assert 0.0 <= s.energy_wh <= limit, s
    assert sum(s.energy_wh for s in sessions) > 0.0
