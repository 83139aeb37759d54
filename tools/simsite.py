"""A coordinated site in the simulator: every station its own loop, a coordinator between them.

One job: run a site scenario with ``coordinator:`` as the product would be deployed. Every
station of the site is its own `Station` with its local tree (`SiteConfig.station_spec`) and a
`RemoteLimitedController`, on its own view (`hal.sim.view.BusView`) of one shared simulated
bus; a `CoordinatorCore` runs over the whole site tree; they talk through the in-process
transport (`firmware.link.inprocess`) with the real message codecs, signed as on a real site;
`firmware.runner.SiteRunner` ticks them all in virtual time. The scenario's events (link cuts,
coordinator restarts, faults, site load) are fed in, and the recorder (`tools.recorder`) checks
the whole site tree over every port, against the coordinator's limits in force.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.core import Controller
from controller.limits import LimitTree
from controller.site import SiteConfig, SiteMeterSpec
from firmware.link import topics
from firmware.link.auth import Keyring
from firmware.link.coordinator import CoordinatorCore
from firmware.link.inprocess import InProcessTransport
from firmware.link.remote import RemoteLimitedController
from firmware.link.station_link import StationLink
from firmware.runner import SiteRunner
from firmware.station import Snapshot, Station
from hal.sim.bus import SimBus
from hal.sim.view import BusView
from tools.recorder import Recorder, SimResult
from tools.run_sessions import RunSessions
from tools.scenario import Scenario

__all__ = ["simulate_site"]


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
            controller = Controller(LimitTree.from_spec(local), scenario.control)
            self.links[sid] = link
            self.stations[sid] = Station(
                local,
                BusView(bus, pids),
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

    def wall(self, now: float) -> datetime:
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


def simulate_site(
    scenario: Scenario,
    until: float,
    trace_dir: Path | None,
    keep_series: bool,
    progress: Callable[[float], None] | None,
    *,
    plot: bool = False,
) -> SimResult:
    """Run the coordinated site of ``scenario`` up to ``until`` (`tools.simulate.simulate`
    hands it over); the summary has the link's story under ``link``."""
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
    recorder = Recorder(scenario, bus, tree, trace_dir, keep_series, until=until, plot=plot)
    sessions = RunSessions(scenario, list(site.stations.values()))

    def step(now: float, snaps: list[Snapshot]) -> None:
        recorder(site.snapshot(now, snaps))
        for snap in snaps:
            sessions(snap)
        if progress is not None:
            progress(now)

    wall = time.perf_counter()
    try:
        runner.run(until, step)
    finally:
        recorder.close()
    wall_s = time.perf_counter() - wall
    return recorder.result(
        until, wall_s, trace_dir, link=site.summary(), sessions=sessions.summary()
    )
