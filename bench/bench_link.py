"""Benchmark: site sharing over a real Mosquitto on loopback, 100 stations / 200 ports.

Run: ``.venv/bin/python bench/bench_link.py [--plugins 30] [--stations 100]``. Needs the
``mosquitto`` binary (scripts/system-deps.sh installs it). Measures, in one run:

* **Plug-in to new limits applied at every station.** A site of 100 CT4000 jumper stations
  (2 ports each, 40 A feeds) under 20 circuits of 100 A (5 stations each), 5 panels of 400 A
  and a site limit of 200 kW (three levels above the feeds); 60 cars charge, three per
  circuit, and the site limit binds (16 A each). Then, one at a time, a car plugs in at
  another station. Each plug-in lowers every charging car's share (961 A / cars), so the
  coordinator sends new limits to every station with a car. Measured from the station
  loop tick that sees the plug-in, to the tick at which the *last* station of the
  coordinator's answer (its first step after the plug-in that changes 10 stations or more;
  the stations tell it by the ``ts`` of the limits they apply) applied its new caps in its
  ``RemoteLimitedController`` ("wave"), through: telemetry publish -> broker -> coordinator -> step
  -> limits publish -> broker -> station link -> the next station tick. Also: to the tick at
  which the new car is offered current ("new car": that increase waits until the others'
  decreases are confirmed; a share dropping by less than the meters' 0.5 A tolerance cannot
  be confirmed by a reading, so it waits the 5 s EV window plus the 1 s latency margin), and
  to the last cap change of any station before the site is quiet again ("settled").
* **The coordinator's allocation time** for that site: every ``CoordinatorCore.step`` during
  the run, timed inside the coordinator.

Set-up (documented shortcuts): the 100 stations are real ``Station`` objects (sim backend,
``RealtimeRunner`` at speed 1, 50 ms ticks), each with the product's ``StationMqttLink`` (so
100 MQTT clients), all in this one process: their ticks share one CPU core, which adds to the
measured latency what a real site (one controller per station) would not have. The
coordinator (``CoordinatorService`` with the default settings: valid 30 s, period 5 s) runs in
a second process, as it would on its own machine. Stations publish telemetry every 1 s
(``telemetry_period: 1s``) and on every change. Times are wall clock (``time.monotonic`` in
the stations' process). Prints p50 / p99 / max; never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/mosquitto.py: the broker fixture

from mosquitto import Mosquitto  # noqa: E402

from firmware.app import build_station  # noqa: E402
from firmware.config import load_site_config, load_station  # noqa: E402
from firmware.link.auth import generate_key_file  # noqa: E402
from firmware.link.mqtt import BrokerSettings, StationMqttLink  # noqa: E402
from firmware.link.remote import RemoteLimitedController  # noqa: E402
from firmware.link.station_link import StationLink  # noqa: E402
from firmware.runner import RealtimeRunner  # noqa: E402
from firmware.station import Snapshot, Station  # noqa: E402
from hal.clock import StationClock  # noqa: E402
from hal.sim.bus import SimBus  # noqa: E402
from hal.sim.ev import EvSpec  # noqa: E402

# Fallback 8 A on port 1, 0 (paused) on port 2: 100 x 8 A x 208 V = 166 kW must fit the site.
SITE_KW = 200.0
CAR = {"max_a": 32.0, "battery_kwh": 200.0, "soc": 0.05, "response_s": 1.0}


def site_yaml(stations: int) -> str:
    """Site kW -> 5 panels (400 A) -> circuits of 5 stations (100 A) -> 40 A feeds, 2 ports."""
    circuits = (stations + 4) // 5
    panels = (circuits + 3) // 4
    lines = ["site: bench", "voltage_v: 208", "min_a: 8", "groups:"]
    lines.append(f"  - {{id: site, limit_kw: {SITE_KW:g}}}")
    for p in range(panels):
        lines.append(f"  - {{id: p{p}, parent: site, breaker_a: 400}}")
    for c in range(circuits):
        lines.append(f"  - {{id: c{c}, parent: p{c // 4}, breaker_a: 100}}")
    ports = []
    for s in range(stations):
        lines.append(f"  - {{id: f{s:03d}, parent: c{s // 5}, breaker_a: 40}}")
        for k, fallback in ((1, 8), (2, 0)):
            ports.append(
                f"  - {{id: st{s:03d}.{k}, group: f{s:03d}, max_a: 30, fallback_a: {fallback}}}"
            )
    return "\n".join([*lines, "ports:", *ports]) + "\n"


def has_car(s: int) -> bool:
    """Stations 0, 1, 2 of every circuit of 5 start with a car; 3 and 4 get the plug-ins."""
    return s % 5 < 3


def station_yaml(s: int, broker: str, car: bool) -> str:
    text = f"""\
station: st{s:03d}
model: ct4000
jumper: true
min_a: 8
groups:
  - {{id: feed, breaker_a: 40}}
ports:
  - {{id: "1", group: feed, fallback_a: 8}}
  - {{id: "2", group: feed, fallback_a: 0}}
link: {{broker: "{broker}", site: bench, telemetry_period: 1s, key_file: site.key}}
"""
    if car:
        spec = ", ".join(f"{k}: {v}" for k, v in CAR.items())
        text += f"sim:\n  evs:\n    - {{port: 1, arrive: 0s, {spec}}}\n"
    return text


# --- the coordinator, in its own process -------------------------------------------------


def coordinator_process(site_path: str, port: int, out_path: str, stop: Any) -> None:
    """Run the product's coordinator until ``stop`` is set; write its step times (s)."""
    from firmware.link.auth import load_keyring
    from firmware.link.coordinator import CoordinatorCore
    from firmware.link.mqtt import CoordinatorService

    site = load_site_config(site_path)
    # Signed, as every shipped site is (firmware.link.auth): the figures include the HMACs.
    keyring = load_keyring(Path(site_path).parent / "site.key")
    core = CoordinatorCore(site, keyring=keyring)
    steps: list[float] = []
    step = core.step

    def timed(now: float, wall: Any) -> Any:
        t0 = time.perf_counter()
        out = step(now, wall)
        steps.append(time.perf_counter() - t0)
        return out

    core.step = timed  # type: ignore[method-assign]

    async def main() -> None:
        service = CoordinatorService(BrokerSettings("127.0.0.1", port), core, site.spec.id)
        await service.start()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await service.stop()

    asyncio.run(main())
    Path(out_path).write_text(json.dumps(steps))


# --- the stations, here --------------------------------------------------------------------


@dataclass
class Rig:
    stations: dict[str, Station] = field(default_factory=dict)
    clocks: dict[str, StationClock] = field(default_factory=dict)
    caps: dict[str, dict[str, float]] = field(default_factory=dict)
    # (monotonic, station, ts of the limits message now in force) at each tick caps changed
    changes: list[tuple[float, str, float | None]] = field(default_factory=list)
    connected_at: dict[str, tuple[float, float]] = field(default_factory=dict)  # (mono, wall)
    offered_at: dict[str, float] = field(default_factory=dict)  # port 1 first offered

    def tick(self, sid: str, snap: Snapshot) -> None:
        now = time.monotonic()
        link = self.link(sid)
        caps = link.in_force(snap.t)
        if caps != self.caps.get(sid):
            self.caps[sid] = caps
            self.changes.append((now, sid, link.limits_ts(snap.t)))
        view = snap.ports[0]
        if view.mode.value != "A" and sid not in self.connected_at:
            self.connected_at[sid] = (now, time.time())
        if view.offer_a > 0.0 and sid not in self.offered_at:
            self.offered_at[sid] = now

    def link(self, sid: str) -> StationLink:
        controller = self.stations[sid].controller
        assert isinstance(controller, RemoteLimitedController)
        link = controller.sources[0]
        assert isinstance(link, StationLink)
        return link

    def charging(self) -> int:
        return sum(1 for st in self.stations.values() if st.last and st.last.ports[0].offer_a > 0.0)


async def wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def quiet(rig: Rig, seconds: float, timeout: float) -> None:
    """Until no station's caps changed for ``seconds``."""
    await wait(lambda: not rig.changes or time.monotonic() - rig.changes[-1][0] > seconds, timeout)


async def run_site(broker: Mosquitto, workdir: Path, n: int, plugins: int) -> dict[str, Any]:
    site_path = workdir / "site.yaml"
    site_path.write_text(site_yaml(n))
    generate_key_file(workdir / "site.key")
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    steps_path = workdir / "steps.json"
    coordinator = ctx.Process(
        target=coordinator_process, args=(str(site_path), broker.port, str(steps_path), stop)
    )
    coordinator.start()

    rig = Rig()
    runners: list[RealtimeRunner] = []
    tasks: list[asyncio.Task[None]] = []
    for s in range(n):
        sid = f"st{s:03d}"
        path = workdir / f"{sid}.yaml"
        path.write_text(station_yaml(s, broker.url, has_car(s)))
        clock = StationClock()
        station = build_station(load_station(path), clock=clock)
        rig.stations[sid], rig.clocks[sid] = station, clock
        runner = RealtimeRunner(station, clock=clock)
        runners.append(runner)
        hook = lambda snap, sid=sid: rig.tick(sid, snap)  # noqa: E731
        tasks.append(asyncio.create_task(runner.run(on_step=hook)))
    result: dict[str, Any] = {
        "wave": [],
        "new_car": [],
        "settled": [],
        "stations_changed": [],
        "all_changed": [],
    }
    try:
        started = await wait(
            lambda: (
                rig.charging() == sum(has_car(s) for s in range(n))
                and all(rig.link(sid).caps(rig.clocks[sid]()) is not None for sid in rig.stations)
            ),
            120.0,
        )
        if not started:
            raise SystemExit(f"the site did not start sharing: {rig.charging()} cars charging")
        await quiet(rig, 3.0, 60.0)
        links = [s for st in rig.stations.values() for s in st.services]
        sent = [x.published for x in links if isinstance(x, StationMqttLink)]
        await asyncio.sleep(2.0)
        now = [x.published for x in links if isinstance(x, StationMqttLink)]
        result["telemetry_per_s"] = (sum(now) - sum(sent)) / 2.0
        result["warmup_s"] = time.monotonic()
        free = [f"st{s:03d}" for s in range(n) if not has_car(s)]
        for i in range(plugins):
            sid = free[i]
            bus = rig.stations[sid].hardware
            assert isinstance(bus, SimBus)
            bus.schedule(EvSpec(port="1", arrive_s=rig.clocks[sid]() + 0.01, **CAR))  # type: ignore[arg-type]
            if not await wait(lambda sid=sid: sid in rig.offered_at, 30.0):
                print(f"  plug-in {i}: the new car was never offered current", file=sys.stderr)
                continue
            await quiet(rig, 1.5, 20.0)
            t0, t0_wall = rig.connected_at[sid]
            # The coordinator's answer to the plug-in: the first step after it that changed
            # caps. Its messages share one ts (its wall clock at the step, > the plug-in's).
            # (A step that only touched the plugged station itself, or one other, is not the
            # answer: the answer lowers every charging car's share.)
            after = [(t, o, ts) for t, o, ts in rig.changes if t > t0 and ts is not None]
            steps: dict[float, list[float]] = {}
            for t, other, ts in after:
                if other != sid and ts is not None and ts > t0_wall:
                    steps.setdefault(round(ts, 3), []).append(t)
            answers = [ts for ts, applied in steps.items() if len(applied) >= 10]
            if answers:
                applied = steps[min(answers)]
                result["wave"].append(max(applied) - t0)
                result["stations_changed"].append(len(applied))
            result["all_changed"].append(len({o for _, o, _ in after} - {sid}))
            result["settled"].append(max(t for t, _, _ in after) - t0)
            result["new_car"].append(rig.offered_at[sid] - t0)
    finally:
        for runner in runners:
            runner.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        stop.set()
        coordinator.join(30)
    result["steps"] = json.loads(steps_path.read_text()) if steps_path.exists() else []
    return result


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def show(name: str, values: list[float], unit: str = "ms", scale: float = 1e3) -> None:
    if not values:
        print(f"{name}: no samples")
        return
    p50, p99 = pct(values, 0.5) * scale, pct(values, 0.99) * scale
    top, mean = max(values) * scale, statistics.fmean(values) * scale
    print(
        f"{name}: p50 {p50:.1f} {unit}, p99 {p99:.1f} {unit}, max {top:.1f} {unit}, "
        f"mean {mean:.1f} {unit} (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=100)
    parser.add_argument("--plugins", type=int, default=30)
    args = parser.parse_args()
    if args.stations % 5 or args.plugins > args.stations * 2 // 5:
        raise SystemExit("--stations: a multiple of 5; --plugins: at most 2/5 of the stations")
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "mosquitto") as broker:
        start = time.perf_counter()
        result = asyncio.run(run_site(broker, Path(tmp), args.stations, args.plugins))
        wall = time.perf_counter() - start
    print(
        f"site: {args.stations} stations / {2 * args.stations} ports, 3 levels above the feeds, "
        f"{args.stations * 3 // 5} cars then {args.plugins} plug-ins; Mosquitto on loopback; "
        f"{wall:.0f} s wall"
    )
    rate = result.get("telemetry_per_s", 0.0)
    print(f"steady state: {rate:.0f} telemetry messages/s into the coordinator")
    show("plug-in -> new limits applied at every station (wave)", result["wave"])
    if result["stations_changed"]:
        counts, total = result["stations_changed"], result["all_changed"]
        print(
            f"  stations in that answer: {min(counts)}..{max(counts)} (the site limit binds: "
            f"every car's share drops); any change until settled: {min(total)}..{max(total)}"
        )
    show("plug-in -> the new car offered current", result["new_car"])
    show("plug-in -> the last cap change of any station (all settled)", result["settled"])
    show("coordinator allocation (CoordinatorCore.step), every step of the run", result["steps"])


if __name__ == "__main__":
    main()
