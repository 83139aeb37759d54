"""The controller core end to end, against a small model of vehicles that lag.

The safety property is checked on every tick of every run: for every limit, the load of the
effective offers stays within it (docs/design.md "The safe-offer invariant") and so does the load
of what the modelled vehicles actually draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core import Controller, ControlSettings
from controller.demand import DemandSettings
from controller.limits import LimitTree
from controller.model import Decision, GroupSpec, Phases, PortObservation, PortSpec, SiteSpec
from controller.rotation import RotationSettings, WakeSettings

EPS = 1e-6
DEFAULTS = ControlSettings()
# A port meter's sampling period: a changed draw is seen this long after it happens.
METER_S = 0.1

# --- a vehicle model -------------------------------------------------------------------


@dataclass
class Ev:
    """A J1772 vehicle: follows a higher offer at once (the worst case), a lower one only
    after ``lag`` seconds (<= 5 s, J1772), and draws min(what it follows, its own max).

    When it changes its own draw (demand change, B <-> C), it looks at the pilot as it is
    now: the assumption behind meter confirmation (controller.sequence).
    """

    max_a: float
    lag: float
    start: float
    requesting: bool = True
    wakes: bool = True  # False: once paused in B it never goes back to C by itself
    offers: list[tuple[float, float]] = field(default_factory=list)  # (since, offer)
    energy_as: float = 0.0

    def follows(self, t: float) -> float:
        if not self.offers:
            return 0.0
        best = self.offers[-1][1]
        for (_, offer), (superseded, _) in zip(self.offers, self.offers[1:], strict=False):
            if t < superseded + self.lag:
                best = max(best, offer)
        return best

    def draw(self, t: float) -> float:
        a = self.follows(t)
        return min(a, self.max_a) if self.requesting and a >= 6.0 else 0.0

    def see(self, t: float, offer: float) -> None:
        if not self.offers or self.offers[-1][1] != offer:
            self.offers.append((t, offer))
        # Forget what can no longer count.
        while len(self.offers) > 1 and t >= self.offers[1][0] + self.lag:
            self.offers.pop(0)

    def reread(self, t: float) -> None:
        if self.offers:
            self.offers = [(t, self.offers[-1][1])]

    def next_change(self, t: float) -> float | None:
        times = [s + self.lag for s, _ in self.offers[1:] if s + self.lag > t]
        return min(times) if times else None


@dataclass(frozen=True)
class Event:
    at: float
    kind: str  # plug, unplug, max, request, stale, link, limit
    port: str = ""
    value: float = 0.0
    lag: float = 2.0


@dataclass
class Run:
    decisions: list[tuple[float, Decision]]
    evs: dict[str, Ev]
    energy: dict[str, float]


def simulate(
    tree: LimitTree,
    events: list[Event],
    until: float,
    cfg: ControlSettings = DEFAULTS,
    *,
    tick: float | None = None,
    check: bool = True,
) -> Run:
    """Drive a controller from event to event (and every ``tick`` s if given), like the
    virtual-time runner: the next tick is the next event, vehicle change or controller
    deadline. Checks the safety properties on every tick."""
    ctl = Controller(tree, cfg)
    evs: dict[str, Ev] = {}
    energy = dict.fromkeys(tree.ports, 0.0)
    stale: set[str] = set()
    link = True
    pending = sorted(events, key=lambda e: e.at)
    decisions: list[tuple[float, Decision]] = []
    t = 0.0
    last_t = 0.0
    while t <= until:
        # Energy since the last tick (draws are constant between vehicle changes, which are ticks).
        for pid, ev in evs.items():
            a = ev.draw(last_t)
            energy[pid] += a * (t - last_t)
        while pending and pending[0].at <= t:
            e = pending.pop(0)
            if e.kind == "plug":
                evs[e.port] = Ev(max_a=e.value, lag=e.lag, start=t)
            elif e.kind == "unplug":
                evs.pop(e.port, None)
            elif e.kind == "max" and e.port in evs:
                evs[e.port].max_a = e.value
                evs[e.port].reread(t)
            elif e.kind == "request" and e.port in evs:
                evs[e.port].requesting = bool(e.value)
                evs[e.port].reread(t)
            elif e.kind == "nowake" and e.port in evs:
                evs[e.port].wakes = False
            elif e.kind == "stale":
                (stale.add if e.value else stale.discard)(e.port)
            elif e.kind == "link":
                link = bool(e.value)
            elif e.kind == "limit":
                ctl.set_tree(tree.with_limits({e.port: e.value}))
        obs = {}
        for pid in tree.ports:
            plugged = evs.get(pid)
            if plugged is None:
                obs[pid] = PortObservation(False, False, 0.0)
            else:
                m = None if pid in stale else plugged.draw(t)
                obs[pid] = PortObservation(True, plugged.requesting, m, plugged.start)
        d = ctl.update(t, obs, link_up=link)
        decisions.append((t, d))
        for pid, ev in evs.items():
            offer = d.offers[pid]
            if not ev.wakes and not ev.requesting:
                pass  # it stays in B whatever it is offered
            elif offer == 0.0 and ev.requesting and not ev.wakes:
                ev.requesting = False  # paused: it leaves C (J1772) and will not come back
            ev.see(t, offer)
        draws = {pid: ev.draw(t) for pid, ev in evs.items()}
        if check:
            check_tick(ctl.tree, d, draws)
        last_t = t
        times = [until + 1.0]
        if any(obs[p].metered_a not in (None, a) for p, a in draws.items()):
            times.append(t + METER_S)  # the meter shows the vehicle's new draw
        if pending:
            times.append(pending[0].at)
        nd = ctl.next_deadline()
        if nd is not None:
            times.append(nd)
        times.extend(x for ev in evs.values() if (x := ev.next_change(t)) is not None)
        if tick is not None:
            times.append(t + tick)
        nxt = min(times)
        assert nxt > t, f"no progress at {t}"
        t = nxt
    return Run(decisions, evs, energy)


def check_tick(tree: LimitTree, d: Decision, draws: dict[str, float]) -> None:
    for lid, load in d.loads.items():
        assert load <= d.limits[lid] + EPS, f"effective offers overload {lid}: {load}"
    for lid, load in tree.loads(draws).items():
        assert load <= d.limits[lid] + EPS, f"vehicles overload {lid}: {load}"
    for pid, offer in d.offers.items():
        port = tree.ports[pid]
        assert offer == 0.0 or offer >= port.min_a - EPS, (pid, offer)
        assert offer <= port.cap_a + EPS, (pid, offer)
        assert d.effective[pid] >= offer


def at(run: Run, t: float) -> Decision:
    """The last decision at or before ``t``."""
    return [d for tt, d in run.decisions if tt <= t][-1]


# --- sites -----------------------------------------------------------------------------


def jumper() -> LimitTree:
    # CT4000 with the power-sharing jumper: both ports on one 40 A breaker (32 A), 30 A ports.
    spec = SiteSpec(
        "ct4000", (GroupSpec("g", breaker_a=40),), (PortSpec("1", "g", 30), PortSpec("2", "g", 30))
    )
    return LimitTree.from_spec(spec)


def circuit(n: int, breaker_a: float = 100.0, max_a: float = 32.0) -> LimitTree:
    ports = tuple(PortSpec(f"p{i:02d}", "c", max_a) for i in range(n))
    return LimitTree.from_spec(SiteSpec("s", (GroupSpec("c", breaker_a=breaker_a),), ports))


def panel() -> LimitTree:
    # A 3-phase panel with a kW limit above two circuits of 208 V ports on different lines.
    spec = SiteSpec(
        "site",
        (
            GroupSpec("site", limit_kw=15.0),
            GroupSpec("panel", parent="site", breaker_a=60, phases=3),
            GroupSpec("c1", parent="panel", breaker_a=40),
            GroupSpec("c2", parent="panel", breaker_a=40),
        ),
        (
            PortSpec("a", "c1", 32, phases=Phases.L1_L2),
            PortSpec("b", "c1", 32, phases=Phases.L1_L2, min_a=6.0),
            PortSpec("c", "c2", 32, phases=Phases.L2_L3),
            PortSpec("d", "c2", 32, phases=Phases.L3_L1, power_select_a=16.0, fallback_a=8.0),
            PortSpec("e", "panel", 24, phases=Phases.L1_N, voltage_v=120.0, fallback_a=6.0),
        ),
    )
    return LimitTree.from_spec(spec)


# --- the guide's worked examples --------------------------------------------------------


def test_jumper_two_evs_share_16_16() -> None:
    run = simulate(jumper(), [Event(0, "plug", "1", 32), Event(0, "plug", "2", 32)], 30)
    d = at(run, 30)
    assert d.offers == {"1": 16.0, "2": 16.0}
    assert d.binding == {"1": "g", "2": "g"}
    assert d.loads == {"g": 32.0} and d.limits == {"g": 32.0}


def test_jumper_one_alone_gets_its_port_cap() -> None:
    run = simulate(jumper(), [Event(0, "plug", "1", 32)], 10)
    assert at(run, 10).offers == {"1": 30.0, "2": 0.0}
    assert at(run, 10).binding == {"1": "port", "2": "idle"}


def test_jumper_one_drawing_10_a_the_other_rises_after_the_demand_window() -> None:
    cfg = ControlSettings()
    run = simulate(jumper(), [Event(0, "plug", "1", 32), Event(0, "plug", "2", 10)], 200, cfg)
    assert at(run, 59).offers == {"1": 16.0, "2": 16.0}
    d = at(run, 70)
    # Lowered to its draw plus the headroom (11 A); the rest goes to the other: 32 - 11 = 21.
    assert d.offers["2"] == 10.0 + cfg.demand.headroom_a
    assert d.offers["1"] == 32.0 - 10.0 - cfg.demand.headroom_a
    assert d.binding["2"] == "demand"
    # With a smaller headroom the other gets nearer the guide's 22 A (32 - 10).
    tight = ControlSettings(demand=DemandSettings(headroom_a=0.5, near_a=0.25))
    run = simulate(jumper(), [Event(0, "plug", "1", 32), Event(0, "plug", "2", 10)], 200, tight)
    assert at(run, 70).offers["1"] == 21.5


def test_jumper_probe_gives_the_slow_one_its_share_back_when_it_wants_it() -> None:
    events = [Event(0, "plug", "1", 32), Event(0, "plug", "2", 10), Event(300, "max", "2", 32)]
    run = simulate(jumper(), events, 400)
    assert at(run, 299).offers["2"] == 11.0
    # It draws its full 11 A: near its offer, probed at once, back to 16/16.
    assert at(run, 320).offers == {"1": 16.0, "2": 16.0}


def test_jumper_one_finishing_the_other_gets_30_a() -> None:
    events = [Event(0, "plug", "1", 32), Event(0, "plug", "2", 32), Event(100, "max", "2", 0)]
    run = simulate(jumper(), events, 400)
    assert at(run, 99).offers == {"1": 16.0, "2": 16.0}
    d = at(run, 400)
    assert d.offers["1"] == 30.0  # its port cap (the guide: "rediverts the available power")
    assert d.offers["2"] == 0.0  # 2 A left is under its minimum
    assert d.binding["2"] == "finished"
    # It ramps back up when it wants energy again and has room (here: car 1 leaves).
    events += [Event(500, "unplug", "1"), Event(520, "max", "2", 32)]
    run = simulate(jumper(), events, 700)
    assert at(run, 700).offers["2"] == 30.0


def test_finished_vehicle_keeps_its_minimum_when_there_is_room() -> None:
    events = [Event(0, "plug", "1", 20), Event(0, "plug", "2", 32), Event(100, "max", "2", 0)]
    run = simulate(jumper(), events, 600)
    d = at(run, 600)
    assert d.offers["2"] == 8.0
    assert d.binding["2"] == "finished"
    assert d.offers["1"] >= 20.0
    # When it draws again it ramps back up (probe at once when it takes its minimum).
    events.append(Event(700, "max", "2", 32))
    run = simulate(jumper(), events, 900)
    assert at(run, 900).offers["2"] >= 12.0


def test_twelve_evs_on_an_80_a_circuit_rotate_and_even_out() -> None:
    cfg = ControlSettings()
    tree = circuit(12)
    events = [Event(i * 1.0, "plug", f"p{i:02d}", 32, lag=1.0 + (i % 4)) for i in range(12)]
    periods = 6  # 12 vehicles, 2 waiting per period: everybody waits once in 6 periods
    until = 12.0 + periods * cfg.rotation.period_s
    run = simulate(tree, events, until, cfg)
    d = at(run, 100)
    charging = [p for p, a in d.offers.items() if a > 0]
    assert len(charging) == 10 and all(d.offers[p] == 8.0 for p in charging)
    assert sorted(p for p, b in d.binding.items() if b == "paused") == ["p10", "p11"]
    # Over whole rotation periods the energy per vehicle evens out.
    energy = list(run.energy.values())
    mean = sum(energy) / len(energy)
    assert (max(energy) - min(energy)) / mean < 0.02, run.energy
    # Nobody flapped: pauses happen only at re-ranks (each port paused once or twice).
    pauses = dict.fromkeys(tree.ports, 0)
    prev = dict.fromkeys(tree.ports, 0.0)
    for _, dec in run.decisions:
        for p, a in dec.offers.items():
            if prev[p] > 0 and a == 0:
                pauses[p] += 1
            prev[p] = a
    assert max(pauses.values()) <= 2


def test_rotation_hysteresis_no_flapping_near_the_threshold() -> None:
    # Three vehicles, a limit that jitters around 3 x 8 A every 10 s: the waiting one does
    # not start and stop with it.
    tree = circuit(3, breaker_a=40)
    events = [Event(0, "plug", f"p{i:02d}", 32) for i in range(3)]
    for k in range(60):
        events.append(Event(5 + 10 * k, "limit", "c", 23.5 if k % 2 == 0 else 24.5))
    run = simulate(tree, events, 600)
    starts = 0
    prev = 0.0
    for _, d in run.decisions:
        if prev == 0.0 and d.offers["p02"] > 0.0:
            starts += 1
        prev = d.offers["p02"]
    assert starts <= 2


# --- sessions, state B, meters -----------------------------------------------------------


def test_new_port_is_served_within_one_tick_when_there_is_room() -> None:
    tree = circuit(3)
    c = Controller(tree)
    d = c.update(0.0, {"p00": PortObservation(True, False, 0.0, 0.0)})
    # In B: offered its minimum at once (it may go to C at any moment).
    assert d.offers["p00"] == 8.0
    assert d.binding["p00"] == "demand"
    d = c.update(1.0, {"p00": PortObservation(True, True, 0.0, 0.0)})
    assert d.offers["p00"] == 32.0  # in C: its full share


def test_unplugged_port_is_offered_nothing() -> None:
    c = Controller(jumper())
    c.update(0.0, {"1": PortObservation(True, True, 0.0, 0.0)})
    d = c.update(1.0, {"1": PortObservation(False, False, 0.0)})
    assert d.offers["1"] == 0.0
    assert d.binding == {"1": "idle", "2": "idle"}
    assert d.effective["1"] == 0.0  # its meter shows nothing flows


def test_stale_meter_never_lowers() -> None:
    events = [
        Event(0, "plug", "1", 32),
        Event(0, "plug", "2", 5),
        Event(0, "stale", "2", 1),
    ]
    run = simulate(jumper(), events, 1000)
    assert at(run, 1000).offers == {"1": 16.0, "2": 16.0}


def test_vehicle_in_b_by_choice_ranks_after_charging_ones() -> None:
    # 2 ports on 16 A: the one that left C while offered yields its minimum to the other.
    tree = circuit(2, breaker_a=20, max_a=16)
    events = [
        Event(0, "plug", "p00", 16),
        Event(0, "plug", "p01", 16),
        Event(50, "request", "p00", 0),
    ]
    run = simulate(tree, events, 400)
    d = at(run, 400)
    assert d.offers["p01"] == 16.0
    assert d.offers["p00"] == 0.0
    # Back in C on its own (it saw no PWM, some vehicles do): it gets its share again.
    events.append(Event(500, "request", "p00", 1))
    run = simulate(tree, events, 600)
    assert at(run, 600).offers == {"p00": 8.0, "p01": 8.0}


def test_session_start_change_starts_a_new_session() -> None:
    c = Controller(jumper())
    for t in range(0, 200):
        c.update(float(t), {"1": PortObservation(True, True, 0.0, 0.0)})
    assert c.update(200.0, {"1": PortObservation(True, True, 0.0, 0.0)}).binding["1"] == "finished"
    d = c.update(201.0, {"1": PortObservation(True, True, 0.0, 201.0)})
    assert d.binding["1"] == "port"
    assert d.offers["1"] == 30.0


# --- wake-up ----------------------------------------------------------------------------


def test_vehicle_that_never_goes_to_c_gets_wake_ups_then_not_responding() -> None:
    cfg = ControlSettings()
    tree = circuit(2, breaker_a=20, max_a=16)  # 16 A for two
    c = Controller(tree, cfg)
    b = PortObservation(True, False, 0.0, 0.0)
    charging = PortObservation(True, True, 8.0, 0.0)
    t = 0.0
    offers: list[tuple[float, float]] = []
    while t < 200.0:
        d = c.update(t, {"p00": b, "p01": charging})
        offers.append((t, d.offers["p00"]))
        nd = c.next_deadline()
        t = min(t + 1.0, nd) if nd is not None else t + 1.0
    off = [t for t, a in offers if a == 0.0]
    # Three interruptions of 3 s, each 30 s after PWM came on, then not responding.
    assert 30.0 in off and 63.0 in off and 96.0 in off
    assert 34.0 not in off
    d = c.update(200.0, {"p00": b, "p01": PortObservation(True, True, 16.0, 0.0)})
    assert d.binding["p00"] == "not-responding"
    assert d.offers == {"p00": 0.0, "p01": 16.0}  # its share went to the other
    # It goes to C on its own: offered again.
    d = c.update(210.0, {"p00": PortObservation(True, True, 0.0, 0.0), "p01": charging})
    assert d.binding["p00"] != "not-responding"
    assert c.next_deadline() is not None


def test_paused_vehicle_that_does_not_wake_is_given_up_and_retried() -> None:
    cfg = ControlSettings(rotation=RotationSettings(period_s=300.0))
    tree = circuit(3, breaker_a=20, max_a=16)  # 16 A: two of three at 8 A
    events = [Event(0, "plug", f"p{i:02d}", 16) for i in range(3)] + [Event(1, "nowake", "p00")]
    run = simulate(tree, events, 3300, cfg)
    # p00 is paused at the first rotation (600 s) and stays in B: at its next turn (900 s) it
    # gets three wake-up interruptions, then it is not responding.
    off = [t for t, d in run.decisions if 900 < t < 1100 and d.offers["p00"] == 0.0]
    assert len(off) >= 3
    d = at(run, 1300)
    assert d.binding["p00"] == "not-responding"
    assert d.offers["p01"] == 8.0 and d.offers["p02"] == 8.0  # its turn went to the others
    # Retried after 30 min, without pushing a charging vehicle out: it waits for its turn.
    retry = cfg.wake.retry_s
    d = at(run, 1031 + retry + 10)
    assert d.binding["p00"] == "paused"
    assert d.offers["p01"] == 8.0 and d.offers["p02"] == 8.0
    assert any(d.offers["p00"] > 0 for t, d in run.decisions if t > 1031 + retry)


# --- limits -----------------------------------------------------------------------------


def test_lowered_limit_takes_effect_through_sequencing() -> None:
    tree = jumper()
    c = Controller(tree)
    o = {"1": PortObservation(True, True, 16.0, 0.0), "2": PortObservation(True, True, 16.0, 0.0)}
    c.update(0.0, o)
    c.set_tree(tree.with_limits({"g": 20.0}))  # e.g. time of use
    d = c.update(1.0, o)
    assert d.offers == {"1": 10.0, "2": 10.0}  # at once
    assert d.limits["g"] == 32.0  # still 32 A flow until the vehicles follow
    assert d.loads["g"] == 32.0
    followed = {k: replace(v, metered_a=10.0) for k, v in o.items()}
    d = c.update(2.0, followed)
    # The meters show 10 A, which may be 0.5 A low: 10.5 A each counts for the window.
    assert d.loads["g"] == pytest.approx(21.0) and d.limits["g"] == 32.0
    d = c.update(6.0, followed)
    assert d.limits["g"] == 20.0 and d.loads["g"] == 20.0
    # A stale meter: the old limit is reported for one window, then the new one.
    c.set_tree(tree.with_limits({"g": 16.0}))
    stale = {k: replace(v, metered_a=None) for k, v in o.items()}
    d = c.update(7.0, stale)
    assert d.limits["g"] == 20.0 and d.offers == {"1": 8.0, "2": 8.0}
    assert c.next_deadline() == 12.0
    d = c.update(12.0, stale)
    assert d.limits["g"] == 16.0 and d.loads["g"] == 16.0
    # Raised limits apply at once.
    c.set_tree(tree)
    assert c.update(13.0, stale).offers == {"1": 16.0, "2": 16.0}


def test_time_never_goes_backwards() -> None:
    c = Controller(jumper())
    c.update(10.0, {})
    with pytest.raises(ValueError, match="backwards"):
        c.update(9.0, {})


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        ControlSettings(offer_window_s=-1.0)
    with pytest.raises(ValueError):
        ControlSettings(demand=DemandSettings(headroom_a=1.0, near_a=2.0))


# --- next_deadline ----------------------------------------------------------------------


def test_skipping_to_next_deadline_never_misses_a_decision() -> None:
    """A controller ticked every second and one ticked only at changes and deadlines decide
    the same: observations are fixed between changes, all timers are whole seconds."""
    cfg = ControlSettings(
        rotation=RotationSettings(period_s=120.0), demand=DemandSettings(probe_interval_s=200.0)
    )
    first = {
        "p00": PortObservation(True, True, 10.0, 0.0),  # drawing under its offer
        "p01": PortObservation(True, True, None, 0.0),  # stale meter
        "p02": PortObservation(True, True, 0.0, 0.0),  # finishing
        "p03": PortObservation(True, False, 0.0, 0.0),  # in B, never goes to C
    }
    later = {**first, "p00": replace(first["p00"], metered_a=8.0)}
    later["p04"] = PortObservation(True, True, 8.0, 300.0)
    script = {0.0: (first, True), 300.0: (later, True), 700.0: (later, False), 750.0: (later, True)}
    fine = _fine_and_coarse(circuit(5, breaker_a=40), cfg, script, 900.0)
    changes = [t for t in range(1, 901) if fine[t] != fine[t - 1]]
    assert len(changes) > 10, "the scenario should exercise the timers"


def _fine_and_coarse(
    tree: LimitTree,
    cfg: ControlSettings,
    scripted: dict[float, tuple[dict[str, PortObservation], bool]],
    until: float,
) -> dict[int, dict[str, float]]:
    """Tick one controller every second, another only at script changes and deadlines;
    assert that the coarse one never misses a change of the fine one's offers. Returns the
    fine one's offers per second."""

    def script_at(t: float) -> tuple[dict[str, PortObservation], bool]:
        return scripted[max(k for k in scripted if k <= t)]

    fine = Controller(tree, cfg)
    fine_offers: dict[int, dict[str, float]] = {}
    for second in range(int(until) + 1):
        o, link = script_at(float(second))
        fine_offers[second] = dict(fine.update(float(second), o, link_up=link).offers)
    coarse = Controller(tree, cfg)
    coarse_offers: dict[float, dict[str, float]] = {}
    t = 0.0
    while t <= until:
        o, link = script_at(t)
        coarse_offers[t] = dict(coarse.update(t, o, link_up=link).offers)
        nxt = [k for k in scripted if k > t]
        nd = coarse.next_deadline()
        if nd is not None:
            nxt.append(nd)
        t = min(nxt) if nxt else until + 1.0
    for second in range(int(until) + 1):
        last = max(k for k in coarse_offers if k <= second)
        assert coarse_offers[last] == fine_offers[second], second
    return fine_offers


@st.composite
def scripts(draw: st.DrawFn) -> dict[float, tuple[dict[str, PortObservation], bool]]:
    ports = [f"p{i:02d}" for i in range(5)]
    out = {}
    for k in range(draw(st.integers(1, 5))):
        t = 0.0 if k == 0 else float(draw(st.integers(1, 400)))
        obs = {}
        for p in ports:
            state = draw(st.sampled_from(["none", "b", "c"]))
            if state == "none":
                continue
            metered = draw(st.one_of(st.none(), st.sampled_from([0.0, 4.0, 8.0, 10.0, 16.0])))
            start = float(draw(st.integers(0, 3)))
            obs[p] = PortObservation(True, state == "c", metered, start)
        out[t] = (obs, draw(st.booleans()) or k == 0)
    return out


@settings(max_examples=25, deadline=None)
@given(scripts())
def test_next_deadline_is_exact_for_any_fixed_observations(
    script: dict[float, tuple[dict[str, PortObservation], bool]],
) -> None:
    cfg = ControlSettings(
        rotation=RotationSettings(period_s=60.0, resume_hold_s=7.0),
        demand=DemandSettings(low_window_s=11.0, probe_interval_s=43.0, finished_window_s=23.0),
        wake=WakeSettings(timeout_s=13.0, off_s=2.0, retry_s=97.0),
    )
    _fine_and_coarse(circuit(5, breaker_a=40), cfg, script, 500.0)


# --- properties -------------------------------------------------------------------------

# Timers scaled down so a few minutes exercise every rule (the invariant does not depend on
# their values); the offer window stays 5 s, as the vehicles' lag is bounded by it.
FAST = ControlSettings(
    rotation=RotationSettings(period_s=30.0, resume_hold_s=5.0),
    demand=DemandSettings(low_window_s=6.0, probe_interval_s=40.0, finished_window_s=12.0),
    wake=WakeSettings(timeout_s=5.0, off_s=1.0, retry_s=60.0),
)

TREES = {"jumper": jumper, "circuit": lambda: circuit(6, breaker_a=40), "panel": panel}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, list[Event], float]:
    name = draw(st.sampled_from(sorted(TREES)))
    tree = TREES[name]()
    ports = sorted(tree.ports)
    limit_ids = sorted(tree.limits())
    until = draw(st.floats(60.0, 240.0))
    events: list[Event] = []
    for _ in range(draw(st.integers(1, 25))):
        at_ = draw(st.floats(0.0, until))
        kind = draw(
            st.sampled_from(
                [
                    "plug",
                    "plug",
                    "plug",
                    "unplug",
                    "max",
                    "max",
                    "request",
                    "stale",
                    "link",
                    "limit",
                    "nowake",
                ]
            )
        )
        port = draw(st.sampled_from(ports))
        if kind == "plug":
            value = draw(st.sampled_from([0.0, 6.0, 10.0, 16.0, 32.0, 48.0]))
            lag = draw(st.floats(0.0, 5.0))
            events.append(Event(at_, kind, port, value, lag))
        elif kind == "max":
            events.append(Event(at_, kind, port, draw(st.floats(0.0, 40.0))))
        elif kind in ("request", "stale", "link"):
            events.append(Event(at_, kind, port, float(draw(st.booleans()))))
        elif kind == "limit":
            lid = draw(st.sampled_from(limit_ids))
            base = tree.limits()[lid]
            events.append(Event(at_, kind, lid, draw(st.floats(0.0, base))))
        else:
            events.append(Event(at_, kind, port))
    return name, events, until


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.one_of(st.none(), st.floats(0.3, 3.0)))
def test_safety_properties_hold_on_every_tick(
    scenario: tuple[str, list[Event], float], tick: float | None
) -> None:
    name, events, until = scenario
    tree = TREES[name]()
    run = simulate(tree, events, until, FAST, tick=tick)
    # Determinism: the same inputs give the same decisions.
    again = simulate(tree, events, until, FAST, tick=tick, check=False)
    assert [(t, d) for t, d in run.decisions] == [(t, d) for t, d in again.decisions]


@settings(max_examples=15, deadline=None)
@given(scenarios())
def test_safety_properties_hold_with_default_timers(
    scenario: tuple[str, list[Event], float],
) -> None:
    name, events, until = scenario
    simulate(TREES[name](), events, until)


def test_model_lag_is_bounded_by_the_window() -> None:
    ev = Ev(max_a=32.0, lag=5.0, start=0.0)
    ev.see(0.0, 30.0)
    ev.see(10.0, 16.0)
    assert ev.draw(14.9) == 30.0
    assert ev.draw(15.0) == 16.0
    assert math.isclose(ev.next_change(10.0) or 0.0, 15.0)
