"""The simulator's recorder: watches every tick of a run and makes its trace and summary.

One job: from each tick's snapshot and what the simulated bus did (the vehicles' real draw),
integrate energy, overshoot, pause time and the deliverable energy, have every limit checked
twice (`tools.checker`: the effective offers, the real load), write ``ports.csv`` /
``limits.csv`` as the run goes and ``summary.json`` at its end, keep the run's bounded
timeline (`tools.timeline`) for the plot and the printed summary, and summarise. What it
reports is computed from what the simulated hardware did, never from what the controller
intended. Its memory does not grow with the run's duration, except for the full-resolution
`Series` that in-process callers (tests) may ask for.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from controller.allocate import PortRequest, allocate
from controller.limits import LimitTree
from firmware.port import Mode
from firmware.station import PortView, Snapshot
from hal.sim.bus import SimBus
from hal.sim.ev import SimEv
from tools.checker import LIMIT_EPSILON, Breach, EffectiveOffers, find_breaches
from tools.scenario import Event, Scenario
from tools.timeline import Timeline, clock_for

__all__ = ["Recorder", "Series", "SimResult"]

_PORT_COLUMNS = [
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
_LIMIT_COLUMNS = ["t_s", "limit", "load", "effective_load", "limit_value"]
# A run of a non-compliant car may breach on every tick: the count is exact, the breaches
# themselves are kept only this far (the first one is what a report names).
KEEP_BREACHES = 100
# The trace files are written a tick at a time; a larger buffer than io's 8 KiB default
# turns a day's ~700,000 rows into fewer, larger writes.
_TRACE_BUFFER = 1 << 20
_FAULT_MODES = (Mode.FAULT, Mode.LOCKOUT, Mode.GFCI_WAIT, Mode.E)


@dataclass
class Series:
    """Every tick's values at full resolution, for in-process callers that inspect a run
    (tests); it grows with the run, so ``ampshare sim`` never asks for it (its plot reads
    the bounded `tools.timeline.Timeline`)."""

    t: list[float] = field(default_factory=list)
    drawn: dict[str, list[float]] = field(default_factory=dict)
    offer: dict[str, list[float]] = field(default_factory=dict)
    paused: dict[str, list[bool]] = field(default_factory=dict)
    load: dict[str, list[float]] = field(default_factory=dict)
    limit: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class SimResult:
    """What a run gives: its summary, the first breaches found (``summary["breaches"]``
    counts them all), its timeline, the full series when asked for."""

    summary: dict[str, Any]
    breaches: list[Breach]
    series: Series | None
    timeline: Timeline | None = None


class Recorder:
    """Watches every tick: integrates energy and overshoot, checks limits, writes the trace."""

    def __init__(
        self,
        scenario: Scenario,
        bus: SimBus,
        tree: LimitTree,
        trace_dir: Path | None,
        keep_series: bool,
        *,
        until: float | None = None,
        plot: bool = False,
    ) -> None:
        self.scenario = scenario
        self.bus = bus
        self.tree = tree
        self.ports = [p.id for p in scenario.site.ports]
        self.volts = dict(scenario.voltages)
        self.limit_ids = list(tree.limits())
        self.eff = EffectiveOffers(self.ports)
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
        self.breach_count = 0
        self.ticks = 0
        run_s = scenario.duration_s if until is None else until
        units = {lid: "kW" if lid.endswith(":kW") else "A" for lid in self.limit_ids}
        self.timeline = Timeline(
            clock_for(scenario, run_s), run_s, list(self.ports), units, numeric=plot
        )
        for event in scenario.events:
            if event.at <= run_s:
                self.timeline.mark(event.at, "event", event.station or "", _event_text(event))
        self.ev_now: dict[str, SimEv | None] = dict.fromkeys(self.ports)
        self.state_now = dict.fromkeys(self.ports, "empty")
        self._ideal_cache: tuple[tuple[float, ...], tuple[float, ...], float] | None = None
        self.series = Series() if keep_series else None
        self._files: list[IO[str]] = []
        self._port_csv: Any = None
        self._limit_csv: Any = None
        if trace_dir is not None:
            trace_dir.mkdir(parents=True, exist_ok=True)
            pf = open(  # noqa: SIM115
                trace_dir / "ports.csv", "w", _TRACE_BUFFER, "utf-8", newline=""
            )
            lf = open(  # noqa: SIM115
                trace_dir / "limits.csv", "w", _TRACE_BUFFER, "utf-8", newline=""
            )
            self._files = [pf, lf]
            self._port_csv = csv.writer(pf)
            self._port_csv.writerow(_PORT_COLUMNS)
            self._limit_csv = csv.writer(lf)
            self._limit_csv.writerow(_LIMIT_COLUMNS)

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
                    locked = view.mode is Mode.LOCKOUT
                    self.timeline.mark(
                        t,
                        "lockout" if locked else "fault",
                        view.id,
                        f"{view.fault} lockout" if locked else view.fault,
                    )
            self._port_story(t, view, sim.ev, drawn, paused)
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
        found = find_breaches(t, self.limit_ids, self.limits, loads, eff_loads)
        if found:
            self.breach_count += len(found)
            self.breaches.extend(found[: KEEP_BREACHES - len(self.breaches)])
        for lid in self.limit_ids:
            self.peak[lid] = max(self.peak[lid], loads[lid])
            self.timeline.limit_load(t, lid, loads[lid], self.limits.get(lid, float("nan")))
            if self._limit_csv is not None:
                limit = self.limits.get(lid, float("inf"))
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

    def _port_story(
        self, t: float, view: PortView, ev: SimEv | None, drawn: float, paused: bool
    ) -> None:
        """The port's status and its arrivals and departures, for the timeline."""
        pid = view.id
        if ev is not self.ev_now[pid]:
            if self.ev_now[pid] is not None:
                self.timeline.mark(t, "departure", pid, "leaves")
            if ev is not None:
                self.timeline.mark(t, "arrival", pid, "arrives")
            self.ev_now[pid] = ev
        if view.fault is not None or view.mode in _FAULT_MODES:
            state = "fault"
        elif ev is None:
            state = "empty"
        elif view.binding == "not-responding":
            state = "not-responding"
        elif not ev.wants_energy:
            state = "full"  # a car at its target is done, not paused, whatever its offer
        elif paused:
            state = "paused"
        elif drawn > 0.0:
            state = "charging"
        else:
            state = "connected"
        if state == "full" and self.state_now[pid] != "full":
            self.timeline.full_at.setdefault(pid, []).append(t)
        self.state_now[pid] = state
        self.timeline.port(t, pid, drawn, view.offer_a, state)

    def _integrate(self, dt: float) -> None:
        if dt <= 0.0:
            return
        waiting = self.timeline.waiting_s
        for pid in self.ports:
            self.energy_wh[pid] += self.power_w[pid] * dt / 3600.0
            if self.paused_now[pid]:
                self.paused_s[pid] += dt
            if self.state_now[pid] == "paused":
                waiting[pid] = waiting.get(pid, 0.0) + dt
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

    def summary(self, until: float, wall_s: float) -> dict[str, Any]:
        """The run's summary (README, "Scenarios"), ``until`` seconds simulated in ``wall_s``."""
        delivered = sum(self.energy_wh.values())
        scenario = self.scenario
        return {
            "scenario": scenario.name,
            "energy_kwh": {p: round(wh / 1000.0, 4) for p, wh in self.energy_wh.items()},
            "peak_a": {lid: round(v, 3) for lid, v in self.peak.items()},
            "limit_a": {lid: round(v, 3) for lid, v in self.tree.limits().items()},
            "overshoot_as": round(sum(self.overshoot.values()), 3),
            "overshoot_by_limit": {lid: round(v, 3) for lid, v in self.overshoot.items() if v > 0},
            "utilization": round(delivered / self.ideal_wh, 4) if self.ideal_wh > 0 else None,
            "delivered_kwh": round(delivered / 1000.0, 4),
            "deliverable_kwh": round(self.ideal_wh / 1000.0, 4),
            "min_charging_a": self.min_charging,
            "peak_drawn_a": {p: round(a, 2) for p, a in self.peak_drawn.items()},
            "not_responding": sorted(self.not_responding),
            "paused_s": {p: round(s, 1) for p, s in self.paused_s.items()},
            "faults": self.faults,
            "breaches": self.breach_count,
            "first_breach": str(self.breaches[0]) if self.breaches else None,
            "deliberate": scenario.deliberate_breach,
            "ports": len(scenario.site.ports),
            "ticks": self.ticks,
            "sim_s": until,
            "wall_s": round(wall_s, 3),
        }

    def result(
        self, until: float, wall_s: float, trace_dir: Path | None, **extra: Any
    ) -> SimResult:
        """The run's result: its summary (plus ``extra`` entries), also written as
        ``summary.json`` beside the trace."""
        summary = self.summary(until, wall_s)
        summary.update(extra)
        link = summary.get("link")
        if isinstance(link, dict):
            self.timeline.link_status(link["transitions"])
        self.timeline.markers.sort(key=lambda m: m.t)
        if trace_dir is not None:
            (trace_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return SimResult(summary, self.breaches, self.series, self.timeline)


def _event_text(event: Event) -> str:
    """A scenario event in a few words (a marker's label)."""
    if event.link_up is not None:
        where = f"{event.station} " if event.station else ""
        return f"{where}link {'up' if event.link_up else 'down'}"
    if event.coordinator_restart:
        return "coordinator restart"
    if event.fault_kind is not None:
        verb = "cleared" if event.fault_clear else "injected"
        return f"{event.fault_kind} {verb} on port {event.fault_port}"
    if event.tag is not None:
        return f"tag {event.tag}"
    return f"site load {event.site_load_kw:g} kW"
