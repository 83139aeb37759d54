"""The real-time runner: its clock is the services' clock, and it ticks at once on an input
change that a backend reports (a board's pilot event), not only every period."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from firmware.app import build_station
from firmware.config import load_station
from firmware.runner import RealtimeRunner
from firmware.station import Snapshot, Station
from hal.clock import StationClock
from hal.sim.bus import SimBus

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


class _EventBus(SimBus):
    """The simulated bus, plus the optional callback of backends that hear input changes."""

    on_input_change: Callable[[], None] | None = None


def _station(bus: SimBus, clock: StationClock | None = None) -> Station:
    config = load_station(CONFIGS / "ct4000-jumper.yaml")
    return build_station(config, bus, clock=clock)


def test_the_runner_uses_the_clock_the_station_was_built_with() -> None:
    clock = StationClock(speed=4.0)
    station = _station(SimBus(["1", "2"], [], jumper=True), clock)
    assert RealtimeRunner(station, speed=4.0).clock is clock


def test_an_input_change_ticks_the_station_before_the_next_period() -> None:
    bus = _EventBus(["1", "2"], [], jumper=True)
    station = _station(bus)
    ticks: list[Snapshot] = []
    runner = RealtimeRunner(station, period_s=0.1)

    async def main() -> int:
        task = asyncio.create_task(runner.run(None, ticks.append))
        for _ in range(500):  # wait for the first tick (at most 5 s)
            if ticks:
                break
            await asyncio.sleep(0.01)
        callback = bus.on_input_change
        assert callback is not None, "the runner did not subscribe to input changes"
        before = len(ticks)
        callback()
        # Only yield to the loop: far less than the 100 ms period passes.
        for _ in range(20):
            await asyncio.sleep(0)
        woke = len(ticks) - before
        runner.stop()
        await asyncio.wait_for(task, 5.0)
        return woke

    assert asyncio.run(main()) >= 1


def test_cancelling_the_runner_task_leaves_the_ports_safe() -> None:
    bus = SimBus(["1", "2"], [], jumper=True)
    station = _station(bus)
    runner = RealtimeRunner(station, period_s=0.05)

    async def main() -> None:
        task = asyncio.create_task(runner.run(None))
        await asyncio.sleep(0.2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5.0)

    asyncio.run(main())
    assert all(not bus.port(p).commanded_closed for p in ("1", "2"))
