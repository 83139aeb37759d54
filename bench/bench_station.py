"""Benchmark: a simulated 24 h of the CT4000 jumper station in virtual time.

Run: ``.venv/bin/python bench/bench_station.py``. Prints the wall time, the speed-up
(simulated seconds per wall second) and the ticks taken, for the event-driven virtual runner and,
measured in the same run, for a fixed 50 ms tick over the first simulated hour (what a real
station does), so the ratio between the two is measured here rather than assumed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.app import build_station  # noqa: E402
from firmware.config import load_station  # noqa: E402
from firmware.runner import VirtualRunner  # noqa: E402
from hal.sim.bus import SimBus  # noqa: E402
from hal.sim.ev import EvSpec  # noqa: E402

DAY_S = 24 * 3600.0


def day_of_evs() -> list[EvSpec]:
    """Cars arriving through the day on both ports (commuters, errands, an overnight car)."""
    h = 3600.0
    return [
        EvSpec(port="1", arrive_s=0.5 * h, leave_s=8.5 * h, max_a=32, battery_kwh=60, soc=0.2),
        EvSpec(port="2", arrive_s=1.0 * h, leave_s=9.0 * h, max_a=16, battery_kwh=40, soc=0.3),
        EvSpec(port="1", arrive_s=9.0 * h, leave_s=12.0 * h, max_a=32, battery_kwh=75, soc=0.5),
        EvSpec(port="2", arrive_s=10.0 * h, leave_s=17.0 * h, max_a=48, battery_kwh=80, soc=0.1),
        EvSpec(port="1", arrive_s=13.0 * h, leave_s=15.0 * h, max_a=24, battery_kwh=30, soc=0.4),
        EvSpec(port="1", arrive_s=18.0 * h, max_a=32, battery_kwh=60, soc=0.15, target_soc=0.95),
        EvSpec(port="2", arrive_s=19.0 * h, max_a=32, battery_kwh=100, soc=0.1),
    ]


def make_runner() -> tuple[VirtualRunner, SimBus]:
    config = load_station(ROOT / "configs" / "ct4000-jumper.yaml")
    bus = SimBus([p.id for p in config.site.ports], day_of_evs(), jumper=True, seed=1)
    return VirtualRunner(build_station(config, bus)), bus


def main() -> None:
    runner, bus = make_runner()
    start = time.perf_counter()
    runner.run(DAY_S)
    event_wall = time.perf_counter() - start
    energy = sum(bus.port(p).energy_wh for p in ("1", "2")) / 1000

    fixed, _ = make_runner()
    fixed.max_step_s = 0.05
    hour = 3600.0
    start = time.perf_counter()
    # A fixed 50 ms tick: force the runner to stop at every period by bounding each step.
    t = 0.0
    while t < hour:
        t = min(hour, t + 0.05)
        fixed.run(t)
    fixed_wall = time.perf_counter() - start

    print("ampshare station benchmark: CT4000 + jumper, 2 ports, 7 EVs over a simulated day")
    print(f"  event-driven virtual time: {DAY_S:.0f} s simulated in {event_wall:.3f} s wall")
    print(f"    speed-up sim/wall          {DAY_S / event_wall:12,.0f} x  (goal >= 28,000 x)")
    print(f"    ticks                      {runner.ticks:12,d}")
    print(f"    energy delivered           {energy:12.1f} kWh")
    print(f"  fixed 50 ms tick, first hour: {hour:.0f} s simulated in {fixed_wall:.3f} s wall")
    print(f"    speed-up sim/wall          {hour / fixed_wall:12,.0f} x")
    print(f"    ticks                      {fixed.ticks:12,d}")
    per_tick_event = event_wall / max(runner.ticks, 1) * 1e6
    per_tick_fixed = fixed_wall / max(fixed.ticks, 1) * 1e6
    print(
        f"  wall time per tick: event-driven {per_tick_event:.1f} us, fixed {per_tick_fixed:.1f} us"
    )
    ratio = (DAY_S / event_wall) / (hour / fixed_wall)
    print(f"  ratio of speed-ups (event-driven / fixed tick): {ratio:,.0f} x")


if __name__ == "__main__":
    main()
