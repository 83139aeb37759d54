"""Benchmark: days of charging in virtual time, ampshare beside two baselines.

Run: ``.venv/bin/python bench/bench_sim.py``. Prints, measured in this run:
- wall time and speed-up (sim time / wall time) for 24 h of the CT4000 jumper station with cars
  arriving through the day, and for 24 h of a 100-port site;
- for randomized days (same seeds for all three), utilization and overshoot of ampshare beside
  a static 50/50 split (the 2013 CT4000) and a naive re-allocator without sequencing.

The 100-port day must also stay within a number of station ticks per simulated hour: the cost
of a tick is flat, so a model that multiplies events shows up here first (the sim EV's delay
line of 71c84b6 turned this 48 s run into more than 49 CPU-minutes). Past the bound the run
stops and the script exits non-zero.
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

from controller.core import ControlSettings  # noqa: E402
from controller.model import GroupSpec, Phases, Policy, PortSpec, SiteSpec  # noqa: E402
from firmware.config import load_site, load_station  # noqa: E402
from firmware.port import PortConfig  # noqa: E402
from hal.sim.ev import EvSpec  # noqa: E402
from tools.scenario import Scenario  # noqa: E402
from tools.simulate import ControllerFactory, product_controller, simulate  # noqa: E402

DAY_S = 24 * 3600.0
HOUR_S = 3600.0

# Station ticks per simulated hour of site_scenario(1) before 71c84b6: 3,564 in its first 8 h.
# With that commit's regression the same 8 h took 15,855 and the whole day never ended. Twice
# the old rate leaves room for model and firmware changes and still catches that class of bug.
SITE_TICKS_PER_H_BEFORE = 3564 / 8
SITE_TICKS_PER_H_BOUND = 2.0 * SITE_TICKS_PER_H_BEFORE


class TickBudgetExceeded(Exception):
    """A run needed more station ticks than its budget allows (checked as it goes)."""


class TickBudget:
    """Counts ticks while a run goes and stops it as soon as it is over its rate bound.

    The first simulated hour gets a whole hour's budget (arrivals, handshakes); after that,
    the budget grows with simulated time, so a run whose ticks explode stops within minutes of
    wall time instead of running for hours before anyone sees a number.
    """

    def __init__(self, per_hour: float) -> None:
        self.per_hour = per_hour
        self.ticks = 0

    def __call__(self, t: float) -> None:
        self.ticks += 1
        allowed = self.per_hour * max(t, HOUR_S) / HOUR_S
        if self.ticks > allowed:
            raise TickBudgetExceeded(
                f"{self.ticks:,} ticks by t={t / HOUR_S:.2f} h: more than {self.per_hour:,.0f}"
                " per simulated hour"
            )


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
        control=station.get("control", ControlSettings()),
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


def main() -> int:
    print("ampshare scenario benchmark (virtual time, real station loop)")
    for label, scenario, bound in (
        ("24 h CT4000 jumper, cars through the day", jumper_scenario(1), None),
        ("24 h 100-port site (2 panels, 10 circuits)", site_scenario(1), SITE_TICKS_PER_H_BOUND),
    ):
        print(f"  {label}: {len(scenario.evs)} visits")
        budget = TickBudget(bound) if bound is not None else None
        start = time.perf_counter()
        try:
            result = simulate(scenario, progress=budget)
        except TickBudgetExceeded as exc:
            wall = time.perf_counter() - start
            print(
                f"FAIL: {label}: {exc} after {wall:.1f} s of wall time (before 71c84b6:"
                f" {SITE_TICKS_PER_H_BEFORE:,.1f} per hour). Something multiplies the events"
                " of the simulated bus (hal/sim); see tests/test_sim_ev_delay.py.",
                file=sys.stderr,
            )
            return 1
        wall = time.perf_counter() - start
        s = result.summary
        per_hour = s["ticks"] / (s["sim_s"] / HOUR_S)
        print(
            f"    wall {wall:7.2f} s   speed-up {DAY_S / wall:10,.0f} x   ticks {s['ticks']:,}"
            f"   utilization {s['utilization']}   overshoot {s['overshoot_as']} A·s"
        )
        if bound is None:
            print(f"    ticks per simulated hour {per_hour:,.1f}")
            continue
        print(
            f"    ticks per simulated hour {per_hour:,.1f}   bound {bound:,.1f}"
            f" (2 x {SITE_TICKS_PER_H_BEFORE:,.1f} before 71c84b6)"
        )
        if per_hour > bound:
            print(
                f"FAIL: {label}: {per_hour:,.1f} ticks per simulated hour > {bound:,.1f}",
                file=sys.stderr,
            )
            return 1
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
