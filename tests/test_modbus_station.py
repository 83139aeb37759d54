"""The whole station with the simulated pilot bus and real Modbus meters over loopback: the
simulated ports' meters served by pymodbus's server (``sim: meter_server:``), read by the
Modbus backend, and the allocation redistributing current by that metered draw; the server
stopped mid-run (meters stale, the breaker never overloaded, recovery on the same port)."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware.app import build_station
from firmware.config import ConfigError, load_station
from firmware.runner import RealtimeRunner
from firmware.station import Snapshot, Station
from hal.clock import StationClock
from hal.modbus.meter import ModbusMeter
from hal.modbus.simfeed import SimMeterFeed
from hal.sim.config import SimSection

ROOT = Path(__file__).resolve().parents[1]
SPEED = 10.0
JUMPER_LIMIT_A = 32.0  # 80 % of the CT4000 jumper's 40 A breaker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def station_yaml(port: int, *, ev2_max_a: float = 10.0) -> str:
    meter = f"modbus-tcp://127.0.0.1:{port}?model=sdm120&interval=0.05&timeout=0.2"
    return f"""\
station: jumper-modbus-test
model: ct4000
jumper: true
groups:
  - {{id: feed, breaker_a: 40}}
ports:
  - {{id: "1", group: feed, meter: "{meter}&unit=1"}}
  - {{id: "2", group: feed, meter: "{meter}&unit=2"}}
control:
  demand: {{low_window_s: 8}}
sim:
  meter_server: {{model: sdm120, host: 127.0.0.1, port: {port}}}
  evs:
    - {{port: 1, arrive: 1s, max_a: 32, battery_kwh: 60, soc: 0.2, target_soc: 0.9, response_s: 1}}
    - {{port: 2, arrive: 1s, max_a: {ev2_max_a}, battery_kwh: 60, soc: 0.2, target_soc: 0.9,
       response_s: 1}}
"""


def load(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(text)
    return path


class Run:
    """A station on the real-time runner at SPEED x, with a hook on every tick."""

    def __init__(self, path: Path) -> None:
        self.clock = StationClock(SPEED)
        self.station: Station = build_station(load_station(path), clock=self.clock)
        self.runner = RealtimeRunner(self.station, speed=SPEED, clock=self.clock)
        self.snaps: list[Snapshot] = []

    def on_step(self, snap: Snapshot) -> None:
        self.snaps.append(snap)

    @property
    def last(self) -> Snapshot:
        return self.snaps[-1]

    def offers(self, snap: Snapshot | None = None) -> dict[str, float]:
        return {v.id: v.offer_a for v in (snap or self.last).ports}

    async def until(self, predicate: Callable[[], bool], timeout: float = 8.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.snaps and predicate()):
            if time.monotonic() > deadline:
                raise AssertionError(f"not reached; last offers {self.offers()}")
            await asyncio.sleep(0.02)


def check_breaker(snaps: list[Snapshot]) -> None:
    for snap in snaps:
        offered = sum(v.offer_a for v in snap.ports)
        effective = sum(v.effective_a for v in snap.ports)
        assert offered <= JUMPER_LIMIT_A + 1e-6, (snap.t, offered)
        assert effective <= JUMPER_LIMIT_A + 1e-6, (snap.t, effective)


def test_config_serves_the_sim_meters_before_the_modbus_meters_poll(tmp_path: Path) -> None:
    port = free_port()
    config = load_station(load(tmp_path, station_yaml(port)))
    assert isinstance(config.hardware_section, SimSection)
    server = config.hardware_section.meter_server
    assert server is not None and (server.model, server.port) == ("sdm120", port)
    station = build_station(config)
    assert isinstance(station.services[0], SimMeterFeed)
    assert [type(s) for s in station.services[1:]] == [ModbusMeter, ModbusMeter]


def test_config_refuses_an_unknown_meter_server_model(tmp_path: Path) -> None:
    text = station_yaml(free_port()).replace(
        "meter_server: {model: sdm120", "meter_server: {model: sdm999"
    )
    with pytest.raises(ConfigError) as info:
        load_station(load(tmp_path, text))
    message = str(info.value)
    assert (
        "station.yaml:12: sim.meter_server.model:" in message
        and "unknown meter model 'sdm999'" in message
    )


def test_allocation_redistributes_by_the_draw_metered_over_modbus(tmp_path: Path) -> None:
    run = Run(load(tmp_path, station_yaml(free_port(), ev2_max_a=10.0)))

    async def main() -> None:
        task = asyncio.create_task(run.runner.run(on_step=run.on_step))
        try:
            # both charging: 16/16
            await run.until(lambda: run.offers() == {"1": 16.0, "2": 16.0})
            # the 10 A car's metered draw lowers it; the other car gets what it leaves
            await run.until(lambda: run.offers()["1"] > 16.5)
            views = {v.id: v for v in run.last.ports}
            assert views["2"].offer_a < 16.0
            assert views["2"].drawn_a == pytest.approx(10.0, abs=0.3)  # read over Modbus
        finally:
            run.runner.stop()
            await task

    asyncio.run(main())
    check_breaker(run.snaps)
    feed = run.station.services[0]
    assert isinstance(feed, SimMeterFeed) and feed.server.requests > 10
    assert not feed.server.serving  # stopped with the station


def test_meter_server_stopped_mid_run_meters_go_stale_and_recover(tmp_path: Path) -> None:
    run = Run(load(tmp_path, station_yaml(free_port(), ev2_max_a=10.0)))

    async def main() -> None:
        task = asyncio.create_task(run.runner.run(on_step=run.on_step))
        feed = run.station.services[0]
        assert isinstance(feed, SimMeterFeed)
        try:
            await run.until(lambda: run.offers()["1"] > 16.5)  # redistributed by metered draw
            await feed.server.stop()
            # no answer for meter_stale_s (10 station s): both ports count as drawing their full
            # effective offers, so the 10 A car's unused share is taken back from the other
            await run.until(lambda: all(v.drawn_a is None for v in run.last.ports))
            meters = [s for s in run.station.services if isinstance(s, ModbusMeter)]
            assert all(m.is_stale() for m in meters)
            await run.until(lambda: run.offers() == {"1": 16.0, "2": 16.0})
            await feed.server.start()  # back on the same port: readings resume by themselves
            await run.until(lambda: all(v.drawn_a is not None for v in run.last.ports))
            assert not any(m.is_stale() for m in meters)
        finally:
            run.runner.stop()
            await task

    asyncio.run(main())
    check_breaker(run.snaps)


def test_ampshare_run_with_the_shipped_modbus_config(tmp_path: Path) -> None:
    """`ampshare run --config configs/ct4000-jumper-modbus.yaml` (sped up to stay short, on a
    free port instead of the shipped 15020). At 10x a station second is 0.1 wall s, so the
    meters are polled every 50 ms here instead of the default 0.5 s: a reading is then at most
    about 0.5 station s old against the 10 s meter_stale_s, however the machine is loaded."""
    text = (ROOT / "configs" / "ct4000-jumper-modbus.yaml").read_text()
    assert text.count("15020") == 5 and text.count('&model=sdm120"') == 2
    config = tmp_path / "ct4000-jumper-modbus.yaml"
    config.write_text(
        text.replace("15020", str(free_port())).replace(
            '&model=sdm120"', '&model=sdm120&interval=0.05"'
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "run",
            "--config",
            str(config),
            "--for",
            "20s",
            "--speed",
            "10",
            "--no-live",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # both cars charging, what they draw read back over Modbus (each port's last record)
    rows = re.findall(
        r"port ([12]) at the end: C2, offer 16\.0 A, drawn (\d+\.\d) A", result.stderr
    )
    drawn = dict(rows)
    assert set(drawn) == {"1", "2"}, result.stderr
    assert float(drawn["1"]) == pytest.approx(16.0, abs=0.3)
    assert float(drawn["2"]) == pytest.approx(12.0, abs=0.3)
