"""Benchmark: days of charging in virtual time, ampshare beside two baselines.

Run: ``.venv/bin/python bench/bench_sim.py``. Prints, measured in this run:
- wall time and speed-up (sim time / wall time) for 24 h of the CT4000 jumper station with cars
  arriving through the day, and for 24 h of a 100-port site;
- for randomized days (same seeds for all three), utilization and overshoot of ampshare beside
  a static 50/50 split (the 2013 CT4000) and a naive re-allocator without sequencing.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from baselines import NaiveReallocator, StaticSplit  # noqa: E402

from controller.model import GroupSpec, Phases, Policy, PortSpec, SiteSpec  # noqa: E402
from firmware.config import load_site, load_station  # noqa: E402
from firmware.port import PortConfig  # noqa: E402
from hal.sim.ev import EvSpec  # noqa: E402
from tools.scenario import Scenario  # noqa: E402
from tools.simulate import ControllerFactory, product_controller, simulate  # noqa: E402

DAY_S = 24 * 3600.0


def random_day(ports: list[str], seed: int, visits_per_port: int) -> tuple[EvSpec, ...]:
    """Cars arriving through a day on each port, one at a time per port, of mixed kinds."""
    rng = random.Random(seed)
    evs = []
    for pid in ports:
        t = rng.uniform(0, 3 * 3600)
        for _ in range(visits_per_port):
            stay = rng.uniform(1.5, 9) * 3600
            if t + stay > DAY_S:
                break
            evs.append(
                EvSpec(
                    port=pid,
                    arrive_s=t,
                    leave_s=t + stay,
                    max_a=rng.choice([12, 16, 24, 32, 32, 40, 48]),
                    battery_kwh=rng.choice([30, 40, 60, 75, 100]),
                    soc=rng.uniform(0.1, 0.6),
                    target_soc=rng.choice([0.8, 0.9, 1.0]),
                    response_s=rng.uniform(1.0, 5.0),
                )
            )
            t += stay + rng.uniform(0.1, 3) * 3600
    return tuple(evs)


def day_scenario(name: str, site: SiteSpec, seed: int, visits: int, **station: Any) -> Scenario:
    """A randomized day on ``site`` (a station's sharing tree or a whole site)."""
    return Scenario(
        path="<bench>",
        name=name,
        site=site,
        jumper=station.get("jumper", False),
        port_config=station.get("port_config", PortConfig()),
        control=station.get("control", {}),
        duration_s=DAY_S,
        evs=random_day([p.id for p in site.ports], seed, visits),
        seed=seed,
        voltages={p.id: p.voltage_v for p in site.ports},
    )


def jumper_scenario(seed: int) -> Scenario:
    station = load_station(ROOT / "configs" / "ct4000-jumper.yaml")
    return day_scenario(
        f"jumper-day-{seed}",
        station.site,
        seed,
        4,
        jumper=True,
        port_config=station.port_config,
        control=station.control,
    )


def hundred_port_site() -> SiteSpec:
    """500 kW site -> 2 three-phase 400 A panels -> 10 circuits of 100 A -> 10 ports each."""
    groups = [GroupSpec("site", None, limit_kw=500.0)]
    ports = []
    pairs = [Phases.L1_L2, Phases.L2_L3, Phases.L3_L1]
    for p in range(2):
        groups.append(GroupSpec(f"panel{p}", "site", breaker_a=400.0, phases=3))
        for c in range(5):
            cid = f"p{p}c{c}"
            groups.append(GroupSpec(cid, f"panel{p}", breaker_a=100.0))
            for k in range(10):
                ports.append(
                    PortSpec(f"{cid}.{k}", cid, max_a=80.0, phases=pairs[c % 3], fallback_a=6.0)
                )
    return SiteSpec("hundred", tuple(groups), tuple(ports), Policy.EQUAL)


def site_scenario(seed: int) -> Scenario:
    return day_scenario(f"site-100-day-{seed}", hundred_port_site(), seed, 3)


def circuit_scenario(seed: int) -> Scenario:
    """The guide's ten ports on one 100 A circuit, through a randomized day."""
    site = load_site(ROOT / "configs" / "sites" / "ten-ports-100a.yaml")
    return day_scenario(f"ten-ports-day-{seed}", site, seed, 3)


def baseline(kind: str) -> ControllerFactory:
    if kind == "static":
        return lambda tree, _s: StaticSplit(tree)
    return lambda tree, _s: NaiveReallocator(tree)


def main() -> None:
    print("ampshare scenario benchmark (virtual time, real station loop)")
    for label, scenario in (
        ("24 h CT4000 jumper, cars through the day", jumper_scenario(1)),
        ("24 h 100-port site (2 panels, 10 circuits)", site_scenario(1)),
    ):
        start = time.perf_counter()
        result = simulate(scenario)
        wall = time.perf_counter() - start
        s = result.summary
        print(f"  {label}: {len(scenario.evs)} visits")
        print(
            f"    wall {wall:7.2f} s   speed-up {DAY_S / wall:10,.0f} x   ticks {s['ticks']:,}"
            f"   utilization {s['utilization']}   overshoot {s['overshoot_as']} A·s"
        )
    print("  randomized days, same EVs for each controller (utilization / overshoot A·s):")
    controllers: list[tuple[str, ControllerFactory]] = [
        ("ampshare", product_controller),
        ("static 50/50", baseline("static")),
        ("naive, no sequencing", baseline("naive")),
    ]
    for seed in (11, 12, 13):
        scenario = jumper_scenario(seed)
        cells = []
        for name, factory in controllers:
            s = simulate(scenario, controller_factory=factory).summary
            cells.append(f"{name}: {s['utilization']:.4f} / {s['overshoot_as']:.1f}")
        print(f"    jumper day seed {seed}: " + "   ".join(cells))
    for seed in (21, 22):
        scenario = circuit_scenario(seed)
        cells = []
        for name, factory in controllers:
            s = simulate(scenario, controller_factory=factory).summary
            cells.append(f"{name}: {s['utilization']:.4f} / {s['overshoot_as']:.1f}")
        print(f"    ten ports on 100 A, day seed {seed}: " + "   ".join(cells))


if __name__ == "__main__":
    main()
