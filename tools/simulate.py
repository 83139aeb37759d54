"""Run a scenario in virtual time through the real station loop, then trace, check, summarise.

One job: build the product's own parts from a scenario and run them. The station loop
(``firmware.station``), the virtual-time runner, the ``sim://`` bus and the allocation core are
the product's own; this module only builds them from a scenario, feeds the scenario's events
in, and has the recorder (`tools.recorder`) watch every tick. What that reports is computed
from what the simulated hardware actually did (the vehicles' real draw, the offers on the
pilots), never from what the controller intended, and the safe-offer invariant is re-checked
by `tools.checker`, independently of the controller's own bookkeeping.

A site scenario with ``coordinator:`` runs as the product would be deployed, every station
its own loop under a coordinator (`tools.simsite`). Without ``coordinator:`` a site runs as
one controller; a site's time-of-use schedules and site meters then move that controller's
limits (`controller.dynamic.DynamicLimits`, as they move the coordinator's).

API::

    simulate(scenario, duration_s=None, trace_dir=None, keep_series=False, plot=False,
             progress=None, controller_factory=product_controller) -> SimResult
    build(scenario, controller_factory) -> (Station, SimBus, LimitTree)
    summary_json(summary) -> str
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from controller.core import Controller
from controller.dynamic import DynamicLimits
from controller.limits import LimitTree
from firmware.auth import AuthMode, Authorizer
from firmware.runner import VirtualRunner
from firmware.station import Allocator, Snapshot, Station
from hal.rfid.sim import SimTagReader
from hal.sim.bus import SimBus
from tools.checker import Breach
from tools.recorder import Recorder, Series, SimResult
from tools.run_sessions import RunSessions
from tools.scenario import Scenario
from tools.simsite import simulate_site

__all__ = [
    "Breach",
    "ControllerFactory",
    "Series",
    "SimResult",
    "build",
    "product_controller",
    "simulate",
    "summary_json",
]

ControllerFactory = Callable[[LimitTree, Scenario], Allocator]


def product_controller(tree: LimitTree, scenario: Scenario) -> Allocator:
    return Controller(tree, scenario.control)


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
    # Who may charge, as the station file says; the drivers' tags reach it through the
    # simulated reader (an EV's id_tag on arrival, tag: events).
    station = Station(
        scenario.site,
        bus,
        controller_factory(tree, scenario),
        jumper=scenario.jumper,
        port_config=scenario.port_config,
        authorizer=Authorizer(scenario.auth, tuple(p.id for p in scenario.site.ports)),
        tag_reader=SimTagReader() if scenario.auth.mode is AuthMode.TAGS else None,
    )
    return station, bus, tree


def simulate(
    scenario: Scenario,
    *,
    duration_s: float | None = None,
    trace_dir: Path | None = None,
    keep_series: bool = False,
    plot: bool = False,
    progress: Callable[[float], None] | None = None,
    controller_factory: ControllerFactory = product_controller,
) -> SimResult:
    """Run ``scenario`` (optionally only its first ``duration_s``) and summarise it.

    ``trace_dir`` gets the trace as the run goes; ``plot`` keeps the currents and loads the
    plot draws in the result's timeline (bounded); ``keep_series`` keeps every tick's values
    (memory grows with the run: for tests)."""
    until = scenario.duration_s if duration_s is None else min(duration_s, scenario.duration_s)
    if scenario.coordinator is not None:
        return simulate_site(scenario, until, trace_dir, keep_series, progress, plot=plot)
    station, bus, tree = build(scenario, controller_factory)
    runner = VirtualRunner(station)
    dynamic = _Dynamic(scenario, station, tree, runner) if _has_dynamic(scenario) else None
    for event in scenario.events:
        if event.at <= until:
            runner.at(event.at, _action(event, station, bus, tree, dynamic))
    reader = station.tag_reader
    if isinstance(reader, SimTagReader):
        for ev in scenario.evs:
            if ev.id_tag is not None and ev.arrive_s <= until:
                runner.at(ev.arrive_s, _presenting(reader, ev.id_tag))
    if dynamic is not None:
        dynamic.schedule(until)
    recorder = Recorder(scenario, bus, tree, trace_dir, keep_series, until=until, plot=plot)
    sessions = RunSessions(scenario, [station])
    report = progress

    def step(snap: Snapshot) -> None:
        recorder(snap)
        sessions(snap)
        if report is not None:
            report(snap.t)

    wall = time.perf_counter()
    try:
        runner.run(until, step)
    finally:
        recorder.close()
    wall_s = time.perf_counter() - wall
    return recorder.result(until, wall_s, trace_dir, sessions=sessions.summary())


def _presenting(reader: SimTagReader, tag: str) -> Callable[[], None]:
    """The driver's tag at the reader (on arrival, a scenario's id_tag)."""

    def present() -> None:
        reader.present(tag)

    return present


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
        elif event.tag is not None:
            if isinstance(station.tag_reader, SimTagReader):
                station.tag_reader.present(event.tag)
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
    `controller.dynamic.DynamicLimits` at every schedule boundary and site-load event (the
    meter reads the last ``site_load_kw`` continuously; none yet: the conservative limit)."""

    def __init__(
        self, scenario: Scenario, station: Station, tree: LimitTree, runner: VirtualRunner
    ) -> None:
        assert scenario.site_config is not None
        self.site = scenario.site_config
        self.dynamic = DynamicLimits(self.site)
        self.start = scenario.start
        self.station = station
        self.tree = tree
        self.runner = runner
        self.site_load_kw: float | None = None

    def apply(self) -> None:
        now = self.runner.now
        wall = self.start + timedelta(seconds=now)
        # A continuous meter: every apply takes a reading now, so it is never stale.
        for gid in self.site.meters:
            self.dynamic.read(gid, self.site_load_kw, now)
        set_tree = getattr(self.station.controller, "set_tree", None)
        if set_tree is not None:
            set_tree(self.tree.with_limits(self.dynamic.limits(wall, now)))

    def schedule(self, until: float) -> None:
        self.runner.at(0.0, self.apply)
        wall = self.start
        while (boundary := self.dynamic.next_change(wall)) is not None:
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


def summary_json(summary: Mapping[str, Any]) -> str:
    return json.dumps(summary, indent=2)
