"""Run a scenario in virtual time through the real station loop, then trace, check, summarise.

One code path: the station loop (``firmware.station``), the virtual-time runner, the ``sim://``
bus and the allocation core are the product's own; this module only builds them from a
scenario, feeds the scenario's events in, and watches. What it reports is computed from what
the simulated hardware actually did (the vehicles' real draw, the offers on the pilots), never
from what the controller intended, and the safe-offer invariant is re-checked here
independently of the controller's own bookkeeping.

A site scenario with ``coordinator:`` runs as the product would be deployed: every station of
the site its own `Station` with its local tree (`SiteConfig.station_spec`) and a
`RemoteLimitedController`, on its own view of one shared simulated bus, and a `CoordinatorCore`
over the whole site tree, talking through the in-process transport (firmware.link.inprocess)
with the real message codecs; `firmware.runner.SiteRunner` ticks them all in virtual time. The
checker then checks the whole site tree over every port, against the coordinator's limits in force.
Without ``coordinator:`` a site runs as one controller, as before; a site's time-of-use
schedules and site meters then move that controller's limits (`controller.dynamic`).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from controller.allocate import PortRequest, allocate
from controller.core import Controller
from controller.dynamic import dynamic_limits, next_change
from controller.limits import LimitTree
from controller.model import SiteSpec
from controller.site import SiteConfig, SiteMeterSpec
from firmware.app import control_settings
from firmware.link import topics
from firmware.link.auth import Keyring
from firmware.link.coordinator import CoordinatorCore
from firmware.link.inprocess import InProcessTransport
from firmware.link.remote import RemoteLimitedController
from firmware.link.station_link import StationLink
from firmware.port import Mode
from firmware.runner import SiteRunner, VirtualRunner
from firmware.station import Allocator, Snapshot, Station
from hal.interfaces import PortHardware
from hal.sim.bus import SimBus, SimJumper
from tools.scenario import Scenario

# DESIGN.md "The safe-offer invariant": an EV may take up to 5 s to follow a lower offer.
OFFER_WINDOW_S = 5.0
# A meter "shows the EV came down" when it reads no more than the new offer plus its accuracy
# (a class 1 meter, 0.5 A at these currents); the vehicle may then still draw up to the reading
# plus that accuracy, which keeps counting until the 5 s have passed.
CAME_DOWN_TOLERANCE_A = 0.5
# Loads are floats summed over many ports: a breach must exceed the limit by more than this.
LIMIT_EPSILON = 1e-6

ControllerFactory = Callable[[LimitTree, Scenario], Allocator]


def product_controller(tree: LimitTree, scenario: Scenario) -> Allocator:
    return Controller(tree, control_settings(scenario.control))


@dataclass(frozen=True, slots=True)
class Breach:
    """A tick at which a limit was exceeded: by the effective offers or by the real load."""

    t: float
    limit: str
    kind: str  # "invariant" (effective offers) | "load" (what the vehicles drew)
    load: float
    value: float

    def __str__(self) -> str:
        what = "sum of effective offers" if self.kind == "invariant" else "metered load"
        return f"t={self.t:.3f}s limit {self.limit}: {what} {self.load:.2f} > {self.value:.2f}"


@dataclass
class Series:
    """Time series kept for plotting."""

    t: list[float] = field(default_factory=list)
    drawn: dict[str, list[float]] = field(default_factory=dict)
    offer: dict[str, list[float]] = field(default_factory=dict)
    paused: dict[str, list[bool]] = field(default_factory=dict)
    load: dict[str, list[float]] = field(default_factory=dict)
    limit: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class SimResult:
    summary: dict[str, Any]
    breaches: list[Breach]
    series: Series | None


class _EffectiveOffers:
    """The checker's own account of each port's effective offer (DESIGN.md definition)."""

    def __init__(self, ports: list[str]) -> None:
        self.offer = dict.fromkeys(ports, 0.0)
        self.recent: dict[str, deque[tuple[float, float]]] = {p: deque() for p in ports}

    def update(self, t: float, pid: str, offer: float, metered: float | None) -> float:
        old = self.offer[pid]
        if offer != old:
            self.recent[pid].append((t, old))  # ``old`` stayed on the pilot until t
            self.offer[pid] = offer
        window = self.recent[pid]
        while window and window[0][0] <= t - OFFER_WINDOW_S:
            window.popleft()
        if metered is not None and metered <= offer + CAME_DOWN_TOLERANCE_A:
            # The meter shows the vehicle has come down: older offers count only up to what
            # it may still be drawing.
            ceiling = max(offer, metered + CAME_DOWN_TOLERANCE_A if metered > 0.0 else 0.0)
            clipped = [(t, min(o, ceiling)) for t, o in window if min(o, ceiling) > offer]
            window.clear()
            window.extend(clipped)
        return max([offer, *(o for _, o in window)])


class _Recorder:
    """Watches every tick: integrates energy and overshoot, checks limits, writes the trace."""

    def __init__(
        self,
        scenario: Scenario,
        bus: SimBus,
        tree: LimitTree,
        trace_dir: Path | None,
        keep_series: bool,
    ) -> None:
        self.scenario = scenario
        self.bus = bus
        self.tree = tree
        self.ports = [p.id for p in scenario.site.ports]
        self.volts = dict(scenario.voltages)
        self.limit_ids = list(tree.limits())
        self.eff = _EffectiveOffers(self.ports)
        self.t_prev: float | None = None
        self.power_w = dict.fromkeys(self.ports, 0.0)
        self.draw = dict.fromkeys(self.ports, 0.0)
        self.loads: dict[str, float] = tree.loads(self.draw)
        self.limits: dict[str, float] = dict(tree.limits())
        self.ideal_w = 0.0
        self.energy_wh = dict.fromkeys(self.ports, 0.0)
        self.ideal_wh = 0.0
        self.overshoot = dict.fromkeys(self.limit_ids, 0.0)
        self.peak = dict.fromkeys(self.limit_ids, 0.0)
        self.min_charging: float | None = None
        self.paused_s = dict.fromkeys(self.ports, 0.0)
        self.paused_now = dict.fromkeys(self.ports, False)
        self.peak_drawn = dict.fromkeys(self.ports, 0.0)
        self.not_responding: set[str] = set()
        self.faults: list[dict[str, Any]] = []
        self.fault_now: dict[str, str | None] = dict.fromkeys(self.ports)
        self.breaches: list[Breach] = []
        self.ticks = 0
        self._ideal_cache: tuple[tuple[float, ...], tuple[float, ...], float] | None = None
        self.series = Series() if keep_series else None
        self._files: list[IO[str]] = []
        self._port_csv: Any = None
        self._limit_csv: Any = None
        if trace_dir is not None:
            trace_dir.mkdir(parents=True, exist_ok=True)
            pf = open(trace_dir / "ports.csv", "w", newline="", encoding="utf-8")  # noqa: SIM115
            lf = open(trace_dir / "limits.csv", "w", newline="", encoding="utf-8")  # noqa: SIM115
            self._files = [pf, lf]
            self._port_csv = csv.writer(pf)
            self._port_csv.writerow(
                [
                    "t_s",
                    "port",
                    "pilot",
                    "mode",
                    "duty_pct",
                    "offer_a",
                    "effective_a",
                    "drawn_a",
                    "metered_a",
                    "contactor",
                    "soc",
                    "binding",
                ]
            )
            self._limit_csv = csv.writer(lf)
            self._limit_csv.writerow(["t_s", "limit", "load", "effective_load", "limit_value"])

    def close(self) -> None:
        for f in self._files:
            f.close()

    def __call__(self, snap: Snapshot) -> None:
        t = snap.t
        self.ticks += 1
        if self.t_prev is not None:
            self._integrate(t - self.t_prev)
        self.t_prev = t
        if snap.limits:
            self.limits = dict(snap.limits)
        # The state that holds from this tick to the next (the loop wrote its commands).
        effective: dict[str, float] = {}
        for view in snap.ports:
            sim = self.bus.port(view.id)
            drawn = sim.drawn_a
            phases = sim.ev.spec.phases if sim.ev is not None else 1
            self.draw[view.id] = drawn
            self.peak_drawn[view.id] = max(self.peak_drawn[view.id], drawn)
            if view.binding == "not-responding":
                self.not_responding.add(view.id)
            self.power_w[view.id] = drawn * self.volts[view.id] * phases
            effective[view.id] = self.eff.update(t, view.id, view.offer_a, view.drawn_a)
            paused = view.mode in (Mode.B1, Mode.C1) and view.offer_a == 0.0
            self.paused_now[view.id] = paused
            charging = view.mode is Mode.C2 and view.offer_a > 0.0
            if charging and (self.min_charging is None or view.offer_a < self.min_charging):
                self.min_charging = view.offer_a
            if view.fault != self.fault_now[view.id]:
                self.fault_now[view.id] = view.fault
                if view.fault is not None:
                    self.faults.append({"t_s": round(t, 3), "port": view.id, "kind": view.fault})
            if self._port_csv is not None:
                soc = "" if sim.ev is None else f"{sim.ev.soc:.4f}"
                self._port_csv.writerow(
                    [
                        f"{t:.3f}",
                        view.id,
                        "" if view.pilot is None else view.pilot.value,
                        view.mode.value,
                        "" if view.duty_pct is None else f"{view.duty_pct:.1f}",
                        f"{view.offer_a:.1f}",
                        f"{effective[view.id]:.1f}",
                        f"{drawn:.2f}",
                        "" if view.drawn_a is None else f"{view.drawn_a:.2f}",
                        int(view.contactor),
                        soc,
                        view.binding,
                    ]
                )
        # The loads of this tick's draws hold until the next tick (_integrate uses them).
        loads = self.loads = self.tree.loads(self.draw)
        eff_loads = self.tree.loads(effective)
        for lid in self.limit_ids:
            limit = self.limits.get(lid, float("inf"))
            self.peak[lid] = max(self.peak[lid], loads[lid])
            if eff_loads[lid] > limit + LIMIT_EPSILON:
                self.breaches.append(Breach(t, lid, "invariant", eff_loads[lid], limit))
            if loads[lid] > limit + LIMIT_EPSILON:
                self.breaches.append(Breach(t, lid, "load", loads[lid], limit))
            if self._limit_csv is not None:
                self._limit_csv.writerow(
                    [f"{t:.3f}", lid, f"{loads[lid]:.2f}", f"{eff_loads[lid]:.2f}", f"{limit:.2f}"]
                )
        self.ideal_w = self._ideal()
        if self.series is not None:
            s = self.series
            s.t.append(t)
            for view in snap.ports:
                pid = view.id
                s.drawn.setdefault(pid, []).append(self.draw[pid])
                s.offer.setdefault(pid, []).append(view.offer_a)
                s.paused.setdefault(pid, []).append(self.paused_now[pid])
            for lid in self.limit_ids:
                s.load.setdefault(lid, []).append(loads[lid])
                s.limit.setdefault(lid, []).append(self.limits.get(lid, float("nan")))

    def _integrate(self, dt: float) -> None:
        if dt <= 0.0:
            return
        for pid in self.ports:
            self.energy_wh[pid] += self.power_w[pid] * dt / 3600.0
            if self.paused_now[pid]:
                self.paused_s[pid] += dt
        self.ideal_wh += self.ideal_w * dt / 3600.0
        for lid in self.limit_ids:
            over = self.loads[lid] - self.limits.get(lid, float("inf"))
            if over > LIMIT_EPSILON:
                self.overshoot[lid] += over * dt

    def _ideal(self) -> float:
        """Power deliverable now: the fair allocation of the present limits over what each
        plugged-in vehicle's own charger would take (0 when full), with no minimum."""
        wants = []
        phases = []
        for pid in self.ports:
            ev = self.bus.port(pid).ev
            wants.append(ev.charger_limit_a() if ev is not None and ev.wants_energy else 0.0)
            phases.append(float(ev.spec.phases) if ev is not None else 1.0)
        key = (tuple(wants), tuple(sorted(self.limits.values())))
        if self._ideal_cache is not None and self._ideal_cache[:2] == key:
            return self._ideal_cache[2]
        tree = self.tree.with_limits(self.limits)
        requests = {
            pid: PortRequest(want_a=min(w, tree.ports[pid].cap_a))
            for pid, w in zip(self.ports, wants, strict=True)
            if w > 0.0
        }
        amps = allocate(tree, requests).amps if requests else {}
        watts = sum(
            amps.get(pid, 0.0) * self.volts[pid] * ph
            for pid, ph in zip(self.ports, phases, strict=True)
        )
        self._ideal_cache = (key[0], key[1], watts)
        return watts


def build(
    scenario: Scenario, controller_factory: ControllerFactory = product_controller
) -> tuple[Station, SimBus, LimitTree]:
    """The station (or whole site, as one controller) on a simulated bus with the EVs."""
    tree = LimitTree.from_spec(scenario.site)
    bus = SimBus(
        [p.id for p in scenario.site.ports],
        scenario.evs,
        voltage_v=[p.voltage_v for p in scenario.site.ports],
        jumper=scenario.jumper,
        seed=scenario.seed,
    )
    station = Station(
        scenario.site,
        bus,
        controller_factory(tree, scenario),
        jumper=scenario.jumper,
        port_config=scenario.port_config,
    )
    return station, bus, tree


def simulate(
    scenario: Scenario,
    *,
    duration_s: float | None = None,
    trace_dir: Path | None = None,
    keep_series: bool = False,
    progress: Callable[[float], None] | None = None,
    controller_factory: ControllerFactory = product_controller,
) -> SimResult:
    """Run ``scenario`` (optionally only its first ``duration_s``) and summarise it."""
    until = scenario.duration_s if duration_s is None else min(duration_s, scenario.duration_s)
    if scenario.coordinator is not None:
        return _simulate_site(scenario, until, trace_dir, keep_series, progress)
    station, bus, tree = build(scenario, controller_factory)
    runner = VirtualRunner(station)
    dynamic = _Dynamic(scenario, station, tree, runner) if _has_dynamic(scenario) else None
    for event in scenario.events:
        if event.at <= until:
            runner.at(event.at, _action(event, station, bus, tree, dynamic))
    if dynamic is not None:
        dynamic.schedule(until)
    recorder = _Recorder(scenario, bus, tree, trace_dir, keep_series)
    step: Callable[[Snapshot], None] = recorder
    if progress is not None:
        report = progress

        def step(snap: Snapshot) -> None:
            recorder(snap)
            report(snap.t)

    wall = time.perf_counter()
    try:
        runner.run(until, step)
    finally:
        recorder.close()
    wall_s = time.perf_counter() - wall
    summary = _summary(scenario, recorder, until, wall_s)
    if trace_dir is not None:
        (trace_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return SimResult(summary, recorder.breaches, recorder.series)


def _action(
    event: Any,
    station: Station,
    bus: SimBus,
    tree: LimitTree,
    dynamic: _Dynamic | None = None,
) -> Callable[[], None]:
    def run() -> None:
        if event.link_up is not None:
            station.link_up = event.link_up
        elif event.fault_kind is not None:
            bus.inject(event.fault_port, event.fault_kind, active=not event.fault_clear)
        elif event.site_load_kw is not None:
            if dynamic is not None and dynamic.site.meters:
                dynamic.site_load_kw = event.site_load_kw
                dynamic.apply()
            else:
                _apply_site_load(station, tree, event.site_load_kw)

    return run


def _has_dynamic(scenario: Scenario) -> bool:
    site = scenario.site_config
    return site is not None and bool(site.schedules or site.meters)


class _Dynamic:
    """Time of use and site meters for a site run as one controller: the limits from
    `controller.dynamic` at every schedule boundary and site-load event (the meter reads the
    last ``site_load_kw`` continuously; none yet: the conservative limit)."""

    def __init__(
        self, scenario: Scenario, station: Station, tree: LimitTree, runner: VirtualRunner
    ) -> None:
        assert scenario.site_config is not None
        self.site = scenario.site_config
        self.start = scenario.start
        self.station = station
        self.tree = tree
        self.runner = runner
        self.site_load_kw: float | None = None

    def apply(self) -> None:
        wall = self.start + timedelta(seconds=self.runner.now)
        readings = dict.fromkeys(self.site.meters, self.site_load_kw)
        set_tree = getattr(self.station.controller, "set_tree", None)
        if set_tree is not None:
            set_tree(self.tree.with_limits(dynamic_limits(self.site, wall, readings)))

    def schedule(self, until: float) -> None:
        self.runner.at(0.0, self.apply)
        wall = self.start
        while (boundary := next_change(self.site, wall)) is not None:
            t = (boundary - self.start).total_seconds()
            if t > until:
                break
            self.runner.at(t, self.apply)
            wall = boundary


def _apply_site_load(station: Station, tree: LimitTree, site_load_kw: float) -> None:
    """Dynamic load management: the root kW limit becomes its maximum minus unmanaged load."""
    root_kw = [lid for lid in tree.limits() if lid.endswith(":kW")]
    if not root_kw:
        return
    lid = root_kw[0]
    lowered = tree.with_limits({lid: max(0.0, tree.limits()[lid] - site_load_kw)})
    set_tree = getattr(station.controller, "set_tree", None)
    if set_tree is not None:
        set_tree(lowered)


def _summary(scenario: Scenario, rec: _Recorder, until: float, wall_s: float) -> dict[str, Any]:
    delivered = sum(rec.energy_wh.values())
    site: SiteSpec = scenario.site
    return {
        "scenario": scenario.name,
        "energy_kwh": {p: round(wh / 1000.0, 4) for p, wh in rec.energy_wh.items()},
        "peak_a": {lid: round(v, 3) for lid, v in rec.peak.items()},
        "limit_a": {lid: round(v, 3) for lid, v in rec.tree.limits().items()},
        "overshoot_as": round(sum(rec.overshoot.values()), 3),
        "overshoot_by_limit": {lid: round(v, 3) for lid, v in rec.overshoot.items() if v > 0},
        "utilization": round(delivered / rec.ideal_wh, 4) if rec.ideal_wh > 0 else None,
        "delivered_kwh": round(delivered / 1000.0, 4),
        "deliverable_kwh": round(rec.ideal_wh / 1000.0, 4),
        "min_charging_a": rec.min_charging,
        "peak_drawn_a": {p: round(a, 2) for p, a in rec.peak_drawn.items()},
        "not_responding": sorted(rec.not_responding),
        "paused_s": {p: round(s, 1) for p, s in rec.paused_s.items()},
        "faults": rec.faults,
        "breaches": len(rec.breaches),
        "first_breach": str(rec.breaches[0]) if rec.breaches else None,
        "deliberate": scenario.deliberate_breach,
        "ports": len(site.ports),
        "ticks": rec.ticks,
        "sim_s": until,
        "wall_s": round(wall_s, 3),
    }


def summary_json(summary: Mapping[str, Any]) -> str:
    return json.dumps(summary, indent=2)


# --- a site of stations under a coordinator ------------------------------------------------


class _BusView:
    """One station's ports of the site's shared simulated bus: that station's `Hardware`."""

    def __init__(self, bus: SimBus, port_ids: Sequence[str]) -> None:
        self._bus = bus
        self._ports = tuple(PortHardware(p, p, p, p) for p in map(bus.port, port_ids))
        self._jumper = SimJumper(False)

    @property
    def ports(self) -> Sequence[PortHardware]:
        return self._ports

    @property
    def jumper(self) -> SimJumper:
        return self._jumper

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for hw in self._ports:
            hw.pilot.steady()
            hw.contactor.command(False)
        self._bus.advance(self._bus.now)

    def advance(self, now: float) -> None:
        self._bus.advance(now)

    def next_change(self, now: float) -> float | None:
        return self._bus.next_change(now)


def _coordinated_site(scenario: Scenario) -> SiteConfig:
    """The site the coordinator runs. Without a meter: group, ``site_load_kw`` events lower
    the root's kW limit as they do for one controller (an implicit meter on the root that
    reads the root's own limit until the first event)."""
    site = scenario.site_config
    assert site is not None
    if site.meters or not any(e.site_load_kw is not None for e in scenario.events):
        return site
    root = next(g for g in site.spec.groups if g.parent is None)
    assert root.limit_kw is not None  # tools.scenario refuses the event otherwise
    meter = SiteMeterSpec(max_kw=root.limit_kw, conservative_kw=root.limit_kw)
    return dataclasses.replace(site, meters={root.id: meter})


class _Site:
    """A coordinated site: stations with their links, the coordinator, the transport."""

    def __init__(self, scenario: Scenario, bus: SimBus) -> None:
        spec = scenario.coordinator
        assert spec is not None
        self.scenario = scenario
        self.spec = spec
        self.config = _coordinated_site(scenario)
        self.site_id = self.config.spec.id
        self.transport = InProcessTransport(
            spec.latency_s, jitter_s=spec.jitter_s, seed=scenario.seed
        )
        # The link is signed as on a real site (firmware.link.auth), so a simulated day runs
        # the same verification; the key is made from the seed: a run is reproducible.
        self.keyring = Keyring((hashlib.sha256(f"ampshare sim {scenario.seed}".encode()).digest(),))
        self.coordinator = CoordinatorCore(self.config, spec.settings, keyring=self.keyring)
        self.restarts = 0
        self.links: dict[str, StationLink] = {}
        self.stations: dict[str, Station] = {}
        for sid in self.config.stations:
            local = self.config.station_spec(sid)
            pids = [p.id for p in local.ports]
            link = StationLink(
                self.site_id,
                sid,
                pids,
                telemetry_period_s=spec.telemetry_period_s,
                rise_delay_s=spec.settings.rise_delay_s,
                keyring=self.keyring,
            )
            controller = Controller(LimitTree.from_spec(local), control_settings(scenario.control))
            self.links[sid] = link
            self.stations[sid] = Station(
                local,
                _BusView(bus, pids),
                RemoteLimitedController(controller, link),
                jumper=False,
                port_config=scenario.port_config,
            )
        self._limits_topic = {topics.station_limits(self.site_id, s): s for s in self.links}
        self._index = {sid: i for i, sid in enumerate(self.links)}
        self._histories = [
            [bus.history(p.id) for p in station.site.ports] for station in self.stations.values()
        ]
        self._order = {p.id: i for i, p in enumerate(scenario.site.ports)}
        self.site_load_kw: float | None = None
        self._dirty = True  # the coordinator has news (an event) beyond what it was sent
        self.status: dict[str, str] = {}
        self.fallback_s: dict[str, float] = dict.fromkeys(self.links, 0.0)
        self.transitions: list[dict[str, Any]] = []
        self._t_prev: float | None = None

    def wall(self, now: float) -> Any:
        return self.scenario.start + timedelta(seconds=now)

    def restart_coordinator(self) -> None:
        self.coordinator = CoordinatorCore(self.config, self.spec.settings, keyring=self.keyring)
        self.restarts += 1
        self._dirty = True

    def before(self, now: float) -> list[int]:
        heard = self._dirty
        self._dirty = False
        woken: list[int] = []
        for topic, payload in self.transport.deliver(now):
            sid = self._limits_topic.get(topic)
            if sid is not None:
                self.links[sid].receive_limits(now, payload)
                woken.append(self._index[sid])
            elif topic.endswith("/telemetry"):
                self.coordinator.receive_telemetry(now, payload)
                heard = True
        if self.site_load_kw is not None:
            for group in self.config.meters:
                self.coordinator.set_meter(now, group, self.site_load_kw)
        deadline = self.coordinator.next_deadline()
        if not heard and deadline is not None and deadline > now:
            return woken  # nothing new, no timer due: the step would decide the same
        for msg in self.coordinator.step(now, self.wall(now)):
            topic = topics.station_limits(self.site_id, msg.station)
            self.transport.send(now, topic, self.coordinator.encode(msg))
        return woken

    def changed(self, index: int, now: float) -> bool:
        """Whether a port of station ``index`` changed at ``now`` (the bus records changes)."""
        return any(h and h[-1].t == now for h in self._histories[index])

    def after(self, now: float, snaps: list[Snapshot]) -> None:
        dt = 0.0 if self._t_prev is None else now - self._t_prev
        self._t_prev = now
        for (sid, link), snap in zip(self.links.items(), snaps, strict=True):
            if self.status.get(sid, "sharing") != "sharing":
                self.fallback_s[sid] += dt
            status = link.status(now, snap)
            if status != self.status.get(sid):
                self.transitions.append({"t_s": round(now, 3), "station": sid, "status": status})
                self.status[sid] = status
            if link.telemetry_due(now, snap):
                topic = topics.station_telemetry(self.site_id, sid)
                self.transport.send(now, topic, link.telemetry(now, snap))

    def deadlines(self) -> list[float | None]:
        return [self.transport.next_delivery(), self.coordinator.next_deadline()]

    def snapshot(self, now: float, snaps: list[Snapshot]) -> Snapshot:
        """The whole site as one snapshot for the checker: every port, the site's limits."""
        views = sorted((v for snap in snaps for v in snap.ports), key=lambda v: self._order[v.id])
        return Snapshot(now, tuple(views), {}, self.coordinator.limits(), None)

    def action(self, event: Any, bus: SimBus) -> Callable[[], None]:
        def run() -> None:
            if event.link_up is not None:
                self.transport.set_up(event.link_up, event.station)
            elif event.coordinator_restart:
                self.restart_coordinator()
            elif event.fault_kind is not None:
                bus.inject(event.fault_port, event.fault_kind, active=not event.fault_clear)
            elif event.site_load_kw is not None:
                self.site_load_kw = event.site_load_kw
                self._dirty = True

        return run

    def summary(self) -> dict[str, Any]:
        t = self.transport
        return {
            "stations": len(self.links),
            "messages": t.sent,
            "delivered": t.delivered,
            "dropped": t.dropped,
            "fallback_s": {sid: round(v, 1) for sid, v in self.fallback_s.items()},
            "transitions": self.transitions,
            "rejected_by_stations": {
                sid: dict(link.rejected) for sid, link in self.links.items() if link.rejected
            },
            "rejected_by_coordinator": dict(self.coordinator.rejected),
            "coordinator_restarts": self.restarts,
        }


def _simulate_site(
    scenario: Scenario,
    until: float,
    trace_dir: Path | None,
    keep_series: bool,
    progress: Callable[[float], None] | None,
) -> SimResult:
    tree = LimitTree.from_spec(scenario.site)
    bus = SimBus(
        [p.id for p in scenario.site.ports],
        scenario.evs,
        voltage_v=[p.voltage_v for p in scenario.site.ports],
        jumper=False,
        seed=scenario.seed,
    )
    site = _Site(scenario, bus)
    runner = SiteRunner(
        site.stations.values(),
        bus,
        before=site.before,
        after=site.after,
        deadlines=site.deadlines,
        changed=site.changed,
    )
    for event in scenario.events:
        if event.at <= until:
            runner.at(event.at, site.action(event, bus))
    recorder = _Recorder(scenario, bus, tree, trace_dir, keep_series)

    def step(now: float, snaps: list[Snapshot]) -> None:
        recorder(site.snapshot(now, snaps))
        if progress is not None:
            progress(now)

    wall = time.perf_counter()
    try:
        runner.run(until, step)
    finally:
        recorder.close()
    wall_s = time.perf_counter() - wall
    summary = _summary(scenario, recorder, until, wall_s)
    summary["link"] = site.summary()
    if trace_dir is not None:
        (trace_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return SimResult(summary, recorder.breaches, recorder.series)
