"""The session tracker (firmware/sessions/tracker.py): every transition and stop reason, the
checkpoints, the energy (register or integrated), start-up recovery, and, end to end, the real
station loop on the simulated bus in virtual time."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import port as pm
from firmware.app import build_station
from firmware.config import load_station
from firmware.port import Mode
from firmware.runner import VirtualRunner
from firmware.sessions import (
    EnergySource,
    EventKind,
    SessionEvent,
    SessionRecord,
    SessionTracker,
    StopReason,
)
from firmware.sessions.tracker import CONNECTED_MODES, RECOVERED, WITHDRAWN
from firmware.station import PortView, Snapshot
from hal.interfaces import MeterReading
from hal.pilot import PilotState
from hal.sim.bus import SimBus
from hal.sim.ev import EvSpec

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
T0 = dt.datetime(2026, 11, 23, 17, 0, tzinfo=dt.UTC)
VOLTS = 230.0
PORTS = ("1", "2")

_PILOT = {
    Mode.A: PilotState.A,
    Mode.B1: PilotState.B,
    Mode.B2: PilotState.B,
    Mode.C1: PilotState.C,
    Mode.C2: PilotState.C,
}


@dataclass(frozen=True)
class P:
    """One port on one tick, as the station would show it."""

    mode: Mode = Mode.A
    offer: float = 0.0
    amps: float | None = None  # metered (None: no fresh reading)
    wh: float = 0.0  # the meter's energy register
    fault: str | None = None
    pilot: PilotState | None = None  # default: what the mode implies
    power_w: float | None = None  # default: amps x volts
    phases: int = 1


def _view(pid: str, p: P) -> PortView:
    pilot = p.pilot if p.pilot is not None else _PILOT.get(p.mode)
    return PortView(
        id=pid,
        mode=p.mode,
        pilot=pilot,
        pilot_out=pm.PilotOut.PWM if p.offer >= 6 else pm.PilotOut.STEADY,
        duty_pct=None,
        offer_a=p.offer,
        effective_a=p.offer,
        drawn_a=p.amps,
        energy_wh=p.wh,
        contactor=p.mode is Mode.C2,
        fault=p.fault,
        binding="",
    )


def _reading(p: P, t: float) -> MeterReading:
    amps = 0.0 if p.amps is None else p.amps
    power = amps * VOLTS * p.phases if p.power_w is None else p.power_w
    return MeterReading((amps,) * p.phases, (VOLTS,) * p.phases, power, p.wh, t)


class Run:
    """Feeds a tracker tick by tick, keeping station and wall time together."""

    def __init__(self, tracker: SessionTracker) -> None:
        self.tracker = tracker
        self.t = 0.0
        self.events: list[SessionEvent] = []

    def tick(
        self,
        dt_s: float = 1.0,
        authorized: Mapping[str, str | None] | None = None,
        **ports: P,
    ) -> list[SessionEvent]:
        self.t += dt_s
        views = tuple(_view(pid, ports.get(f"p{pid}", P())) for pid in self.tracker.port_ids)
        snap = Snapshot(self.t, views, {}, {}, None)
        readings = {
            pid: _reading(ports.get(f"p{pid}", P()), self.t) for pid in self.tracker.port_ids
        }
        wall = T0 + dt.timedelta(seconds=self.t)
        events = self.tracker.step(self.t, wall, snap, readings, authorized)
        self.events += events
        return events

    def hold(self, seconds: float, step: float = 1.0, **ports: P) -> list[SessionEvent]:
        out: list[SessionEvent] = []
        for _ in range(round(seconds / step)):
            out += self.tick(step, None, **ports)
        return out


def _tracker(**kwargs: object) -> SessionTracker:
    ids = (f"s{n}" for n in itertools.count(1))
    defaults: dict[str, object] = {"voltage_v": dict.fromkeys(PORTS, VOLTS), "new_id": ids.__next__}
    return SessionTracker("st1", PORTS, **{**defaults, **kwargs})  # type: ignore[arg-type]


def _kinds(events: list[SessionEvent]) -> list[tuple[EventKind, str]]:
    return [(e.kind, e.record.port_id) for e in events]


PLUGGED = P(Mode.B1)
CHARGING = P(Mode.C2, offer=16.0, amps=16.0)


# --- what "plugged in" means ---------------------------------------------------------------


def test_connected_modes_are_the_port_machines() -> None:
    for mode in Mode:
        assert (mode in CONNECTED_MODES) == pm.is_connected(pm.PortState(mode=mode, since=0.0))


# --- free mode: plug-in to unplug ----------------------------------------------------------


def test_plug_in_starts_and_unplug_stops_with_evdisconnected() -> None:
    run = Run(_tracker())
    assert run.tick() == []  # nothing plugged in
    [start] = run.tick(p1=PLUGGED)
    assert start.kind is EventKind.START
    rec = start.record
    assert (rec.station_id, rec.port_id, rec.id_tag, rec.session_id) == ("st1", "1", None, "s1")
    assert rec.start_at == T0 + dt.timedelta(seconds=2) and rec.is_open
    assert rec.checkpoint_at == rec.start_at and rec.checkpoint_wh == rec.meter_start_wh
    # The vehicle goes on through the J1772 states: the same session.
    for p in (P(Mode.B2, offer=16.0), P(Mode.C1, offer=16.0), CHARGING, CHARGING):
        assert all(e.kind is EventKind.CHECKPOINT for e in run.tick(p1=p))
    [stop] = run.tick(p1=P(Mode.A))
    assert stop.kind is EventKind.STOP and stop.record.session_id == "s1"
    assert stop.record.stop_reason is StopReason.EVDisconnected
    assert stop.record.stop_detail is None
    assert stop.record.stop_at == T0 + dt.timedelta(seconds=7)
    assert run.tick() == [] and run.tracker.current("1") is None
    # The next plug-in is a new session.
    [again] = run.tick(p1=PLUGGED)
    assert again.kind is EventKind.START and again.record.session_id == "s2"


def test_ports_have_their_own_sessions() -> None:
    run = Run(_tracker())
    run.tick(p1=PLUGGED)
    run.tick(p1=PLUGGED, p2=PLUGGED)
    run.tick(p2=PLUGGED)
    run.tick()
    assert _kinds(run.events) == [
        (EventKind.START, "1"),
        (EventKind.START, "2"),
        (EventKind.STOP, "1"),
        (EventKind.STOP, "2"),
    ]


@pytest.mark.parametrize(
    ("mode", "fault", "pilot"),
    [
        (Mode.FAULT, "diode", PilotState.B),
        (Mode.FAULT, "overdraw", PilotState.C),
        (Mode.FAULT, "contactor", PilotState.C),
        (Mode.LOCKOUT, "weld", PilotState.F),
        (Mode.LOCKOUT, "gfci", PilotState.F),  # the trip after the last automatic re-arm
    ],
)
def test_a_fault_that_ends_charging_stops_with_other_and_its_name(
    mode: Mode, fault: str, pilot: PilotState
) -> None:
    run = Run(_tracker())
    run.tick(p1=PLUGGED)
    run.tick(p1=CHARGING)
    faulted = P(mode, fault=fault, pilot=pilot)
    [stop] = run.tick(p1=faulted)
    assert stop.kind is EventKind.STOP
    assert stop.record.stop_reason is StopReason.Other
    assert stop.record.stop_detail == fault
    # Still plugged in, still faulted: no new session by itself.
    assert run.hold(300, p1=faulted) == []


def test_after_a_fault_stop_only_an_unplug_gives_a_new_session() -> None:
    run = Run(_tracker())
    run.tick(p1=PLUGGED)
    run.tick(p1=P(Mode.FAULT, fault="diode", pilot=PilotState.B))
    # The fault has cleared but the same vehicle is there (the port machine says B1): no
    # session restarts by itself.
    assert run.tick(p1=PLUGGED) == []
    assert run.tick(p1=P(Mode.A)) == []
    [start] = run.tick(p1=PLUGGED)
    assert start.kind is EventKind.START and start.record.session_id == "s2"


def test_a_lockout_reset_with_the_vehicle_still_there_is_a_new_session() -> None:
    run = Run(_tracker())
    run.tick(p1=PLUGGED)
    run.tick(p1=P(Mode.LOCKOUT, fault="weld", pilot=PilotState.F))
    # The operator reset starts the port over from A (firmware.port), then it sees B.
    assert run.tick(p1=P(Mode.A, pilot=PilotState.F)) == []
    [start] = run.tick(p1=PLUGGED)
    assert start.kind is EventKind.START


@pytest.mark.parametrize(
    "transient",
    [
        P(Mode.GFCI_WAIT, fault="gfci", pilot=PilotState.C),  # waits to re-arm
        P(Mode.E, fault="pilot", pilot=None),  # an invalid pilot
        P(Mode.FAULT, fault="ground", pilot=PilotState.F),  # clears by itself
    ],
)
def test_a_fault_the_port_resumes_from_keeps_the_session(transient: P) -> None:
    run = Run(_tracker())
    run.tick(p1=PLUGGED)
    run.hold(120, p1=transient)
    run.hold(10, p1=CHARGING)  # resumed: the same plug-in, the same session
    run.tick(p1=P(Mode.A))
    starts = [e for e in run.events if e.kind is EventKind.START]
    stops = [e for e in run.events if e.kind is EventKind.STOP]
    assert len(starts) == 1 and len(stops) == 1
    assert stops[0].record.stop_reason is StopReason.EVDisconnected


def test_an_unplug_while_waiting_to_rearm_the_gfci_ends_the_session() -> None:
    run = Run(_tracker())
    run.tick(p1=PLUGGED)
    run.tick(p1=P(Mode.GFCI_WAIT, fault="gfci", pilot=PilotState.C))
    [stop] = run.tick(p1=P(Mode.GFCI_WAIT, fault="gfci", pilot=PilotState.A))
    assert stop.record.stop_reason is StopReason.EVDisconnected
    # The vehicle comes back while the wait goes on: a session once the port can charge it.
    assert run.tick(p1=P(Mode.GFCI_WAIT, fault="gfci", pilot=PilotState.B)) == []
    [start] = run.tick(p1=PLUGGED)
    assert start.kind is EventKind.START


# --- explicit stops --------------------------------------------------------------------------


@pytest.mark.parametrize("reason", [StopReason.Local, StopReason.Remote, StopReason.DeAuthorized])
def test_stop_ends_the_session_on_the_next_tick_with_its_reason(reason: StopReason) -> None:
    run = Run(_tracker())
    run.tick(p1=PLUGGED)
    run.tick(p1=CHARGING)
    assert run.tracker.stop("1", reason) is True
    [stop] = run.tick(p1=CHARGING)
    assert stop.kind is EventKind.STOP and stop.record.stop_reason is reason
    assert stop.record.stop_at == T0 + dt.timedelta(seconds=3)
    # The vehicle is still there: a stopped session does not restart by itself.
    assert run.hold(120, p1=PLUGGED) == []
    run.tick(p1=P(Mode.A))
    [start] = run.tick(p1=PLUGGED)
    assert start.kind is EventKind.START


def test_stop_without_a_session_does_nothing() -> None:
    tracker = _tracker()
    assert tracker.stop("1", StopReason.Remote) is False
    run = Run(tracker)
    [start] = run.tick(p1=PLUGGED)  # a stale request does not cut the next session short
    assert start.kind is EventKind.START
    assert run.hold(5, p1=PLUGGED) == []
    with pytest.raises(KeyError):
        tracker.stop("9", StopReason.Remote)


def test_an_explicit_stop_wins_over_an_unplug_on_the_same_tick() -> None:
    run = Run(_tracker())
    run.tick(p1=PLUGGED)
    run.tracker.stop("1", StopReason.Local, "tag presented again")
    [stop] = run.tick(p1=P(Mode.A))
    assert stop.record.stop_reason is StopReason.Local
    assert stop.record.stop_detail == "tag presented again"


# --- authorization mode ----------------------------------------------------------------------


def test_in_authorization_mode_a_session_waits_for_its_tag_and_carries_it() -> None:
    run = Run(_tracker())
    none: dict[str, str | None] = {}
    for _ in range(30):
        assert run.tick(authorized=none, p1=PLUGGED) == []  # plugged in, no tag: no session
    [start] = run.tick(authorized={"1": "04A2B3C4"}, p1=PLUGGED)
    assert start.kind is EventKind.START and start.record.id_tag == "04A2B3C4"
    run.tick(authorized={"1": "04A2B3C4"}, p1=CHARGING)
    # The same tag again (firmware.auth): the shell stops it Local, and the port loses its
    # authorization until the unplug.
    run.tracker.stop("1", StopReason.Local)
    [stop] = run.tick(authorized=none, p1=CHARGING)
    assert stop.record.stop_reason is StopReason.Local and stop.record.id_tag == "04A2B3C4"
    assert run.tick(authorized=none, p1=PLUGGED) == []


def test_authorization_withdrawn_without_a_reason_is_deauthorized() -> None:
    run = Run(_tracker())
    run.tick(authorized={"1": "AA"}, p1=PLUGGED)
    [stop] = run.tick(authorized={}, p1=PLUGGED)
    assert stop.record.stop_reason is StopReason.DeAuthorized
    assert stop.record.stop_detail == WITHDRAWN


def test_authorized_afresh_with_the_vehicle_still_there_is_a_new_session() -> None:
    run = Run(_tracker())
    run.tick(authorized={"1": "AA"}, p1=PLUGGED)
    run.tracker.stop("1", StopReason.Remote)
    run.tick(authorized={"1": "AA"}, p1=PLUGGED)
    # Still authorized as before: the stopped session does not restart.
    assert run.tick(authorized={"1": "AA"}, p1=PLUGGED) == []
    assert run.tick(authorized={}, p1=PLUGGED) == []
    [start] = run.tick(authorized={"1": "BB"}, p1=PLUGGED)
    assert start.kind is EventKind.START and start.record.id_tag == "BB"


# --- checkpoints -----------------------------------------------------------------------------


def test_a_checkpoint_every_60_s_of_station_time() -> None:
    run = Run(_tracker())
    run.tick(p1=PLUGGED)  # t = 1
    run.tick(p1=CHARGING)  # the offer changed: a checkpoint at t = 2
    events = run.hold(200, p1=CHARGING)  # t = 3 .. 202
    times = [(e.record.checkpoint_at - T0).total_seconds() for e in events]
    assert all(e.kind is EventKind.CHECKPOINT for e in events)
    assert times == [62.0, 122.0, 182.0]
    # The wall clock is only a label: a jump of it does not change when checkpoints come.
    tracker = _tracker(checkpoint_s=10.0)
    tracker.step(0.0, T0, Snapshot(0.0, (_view("1", PLUGGED),), {}, {}, None), {})
    jumped = T0 - dt.timedelta(hours=5)
    snap = Snapshot(5.0, (_view("1", PLUGGED),), {}, {}, None)
    assert tracker.step(5.0, jumped, snap, {}) == []
    snap = Snapshot(10.0, (_view("1", PLUGGED),), {}, {}, None)
    [cp] = tracker.step(10.0, jumped, snap, {})
    assert cp.kind is EventKind.CHECKPOINT and cp.record.checkpoint_at == jumped


def test_every_offer_change_is_a_checkpoint_with_the_largest_offer_and_draw() -> None:
    run = Run(_tracker())
    run.tick(p1=PLUGGED)
    [a] = run.tick(p1=P(Mode.C2, offer=32.0, amps=31.5))
    assert a.kind is EventKind.CHECKPOINT and a.record.max_offer_a == 32.0
    assert run.tick(p1=P(Mode.C2, offer=32.0, amps=29.0)) == []  # same offer: nothing
    [b] = run.tick(p1=P(Mode.C2, offer=16.0, amps=29.0))
    assert b.kind is EventKind.CHECKPOINT
    assert b.record.max_offer_a == 32.0 and b.record.max_drawn_a == 31.5
    [c] = run.tick(p1=P(Mode.C2, offer=20.0, amps=16.0))
    [stop] = run.tick(p1=P(Mode.A))
    assert c.record.max_offer_a == 32.0 and stop.record.max_drawn_a == 31.5


# --- energy ----------------------------------------------------------------------------------


def test_a_register_gives_the_energy_from_its_own_readings() -> None:
    run = Run(_tracker(has_register={"1": True}))
    run.tick(p1=P(Mode.A, amps=0.0, wh=5000.0))
    [start] = run.tick(p1=P(Mode.B1, amps=0.0, wh=5000.0))
    assert start.record.energy_source is EnergySource.REGISTER
    assert start.record.meter_start_wh == 5000.0
    wh = 5000.0
    for _ in range(100):
        wh += 3.0
        run.tick(p1=P(Mode.C2, offer=16.0, amps=16.0, wh=wh))
    # A reading the station found stale, and a register that went backwards, are not used.
    run.tick(p1=P(Mode.C2, offer=16.0, amps=None, wh=9e9))
    [cp] = run.tick(p1=P(Mode.C2, offer=20.0, amps=16.0, wh=10.0))  # a new offer: a checkpoint
    assert cp.record.checkpoint_wh == wh
    [stop] = run.tick(p1=P(Mode.A, amps=0.0, wh=wh + 1.0))
    rec = stop.record
    assert rec.meter_stop_wh == wh + 1.0 and rec.energy_wh == pytest.approx(301.0)


def test_a_register_port_whose_meter_never_answered_integrates_instead() -> None:
    run = Run(_tracker(has_register={"1": True}))
    [start] = run.tick(p1=P(Mode.B1, amps=None, wh=0.0))
    assert start.record.energy_source is EnergySource.INTEGRATED
    assert start.record.meter_start_wh == 0.0


def test_a_register_reading_from_before_the_plug_in_is_the_start() -> None:
    run = Run(_tracker(has_register={"1": True}))
    run.tick(p1=P(Mode.A, amps=0.0, wh=1234.0))
    [start] = run.tick(p1=P(Mode.B1, amps=None, wh=0.0))  # no fresh reading this tick
    assert start.record.energy_source is EnergySource.REGISTER
    assert start.record.meter_start_wh == 1234.0


@pytest.mark.parametrize(
    ("charging", "watts"),
    [
        (P(Mode.C2, offer=32.0, amps=32.0), 32.0 * VOLTS),  # power_w from the meter
        # A meter that reports 0 W: its three phase currents x the port's voltage.
        (P(Mode.C2, offer=16.0, amps=16.0, power_w=0.0, phases=3), 48.0 * VOLTS),
    ],
)
def test_without_a_register_the_energy_is_power_integrated_over_the_ticks(
    charging: P, watts: float
) -> None:
    run = Run(_tracker())
    run.tick(p1=PLUGGED)
    run.hold(3600, step=1.0, p1=charging)
    [stop] = run.tick(p1=P(Mode.A, amps=0.0))
    rec = stop.record
    assert rec.energy_source is EnergySource.INTEGRATED and rec.meter_start_wh == 0.0
    one_tick = watts * 1.0 / 3600.0
    assert abs(rec.energy_wh - watts) <= one_tick  # one hour at `watts`: `watts` Wh


def test_a_gap_in_the_readings_adds_no_energy() -> None:
    run = Run(_tracker())
    run.tick(p1=PLUGGED)
    run.hold(600, p1=P(Mode.C2, offer=32.0, amps=None))  # the meter is stale for 10 min
    [stop] = run.tick(p1=P(Mode.A))
    assert stop.record.energy_wh == 0.0


# --- start-up recovery -----------------------------------------------------------------------


def test_recover_closes_open_sessions_with_powerloss_at_their_last_checkpoint() -> None:
    before = Run(_tracker())
    before.tick(p1=PLUGGED)
    before.hold(200, p1=CHARGING)  # checkpoints at 2 s (offer), 62, 122, 182 s
    last = before.events[-1].record
    assert before.events[-1].kind is EventKind.CHECKPOINT
    closed = dataclasses.replace(
        last,
        session_id="old-closed",
        stop_at=last.checkpoint_at,
        meter_stop_wh=1.0,
        stop_reason=StopReason.Local,
    )
    # The power came back: a new tracker, the records the store still has open.
    after = Run(_tracker(new_id=iter(["n1", "n2"]).__next__))
    [stop] = after.tracker.recover([last, closed])
    rec = stop.record
    assert stop.kind is EventKind.STOP and rec.session_id == last.session_id
    assert rec.stop_reason is StopReason.PowerLoss and rec.stop_detail == RECOVERED
    assert rec.stop_at == last.checkpoint_at == T0 + dt.timedelta(seconds=182)
    assert rec.meter_stop_wh == last.checkpoint_wh and rec.energy_wh > 0
    # The car is still plugged in: a new session, not the old one continued.
    [start] = after.tick(p1=CHARGING)
    assert start.kind is EventKind.START and start.record.session_id == "n1"
    assert start.record.meter_start_wh == 0.0


def test_times_must_have_a_zone() -> None:
    tracker = _tracker()
    snap = Snapshot(0.0, (_view("1", PLUGGED),), {}, {}, None)
    with pytest.raises(ValueError, match="time zone"):
        tracker.step(0.0, dt.datetime(2026, 1, 1, 12, 0), snap, {})


# --- any sequence ----------------------------------------------------------------------------

_STATES = [
    P(Mode.A),
    P(Mode.B1),
    P(Mode.B2, offer=16.0),
    P(Mode.C1, offer=0.0),
    P(Mode.C2, offer=16.0, amps=15.0),
    P(Mode.C2, offer=32.0, amps=31.0),
    P(Mode.C2, offer=32.0, amps=None),
    P(Mode.FAULT, fault="diode", pilot=PilotState.B),
    P(Mode.FAULT, fault="overdraw", pilot=PilotState.C),
    P(Mode.FAULT, fault="ground", pilot=PilotState.F),
    P(Mode.E, fault="pilot", pilot=None),
    P(Mode.GFCI_WAIT, fault="gfci", pilot=PilotState.C),
    P(Mode.GFCI_WAIT, fault="gfci", pilot=PilotState.A),
    P(Mode.LOCKOUT, fault="weld", pilot=PilotState.F),
]
_REASONS = [StopReason.Local, StopReason.Remote, StopReason.DeAuthorized]
_TICK = st.tuples(
    st.floats(0.05, 120.0),  # time to this tick
    st.sampled_from(_STATES),  # port 1
    st.sampled_from(_STATES),  # port 2
    st.sampled_from([None, "AA", "BB"]),  # port 1's authorization (when in that mode)
    st.sampled_from([None, *(_REASONS)]),  # a stop asked before the tick, on port 1
)


@settings(max_examples=300, deadline=None)
@given(ticks=st.lists(_TICK, max_size=60), tags=st.booleans())
def test_any_sequence_keeps_one_open_session_per_port_and_closes_each_once(
    ticks: list[tuple[float, P, P, str | None, StopReason | None]], tags: bool
) -> None:
    run = Run(_tracker())
    open_: dict[str, SessionRecord] = {}
    seen: set[str] = set()

    def check(events: list[SessionEvent], ports: dict[str, P], tag: str | None) -> None:
        for event in events:
            rec, pid = event.record, event.record.port_id
            if event.kind is EventKind.START:
                assert pid not in open_, "two open sessions on one port"
                assert rec.session_id not in seen
                assert ports[pid].mode in CONNECTED_MODES
                if tags and pid == "1":
                    assert rec.id_tag == tag
                open_[pid] = rec
                seen.add(rec.session_id)
            else:
                assert open_[pid].session_id == rec.session_id
                assert rec.checkpoint_wh >= open_[pid].checkpoint_wh >= rec.meter_start_wh
                if event.kind is EventKind.STOP:
                    assert not rec.is_open and rec.energy_wh >= 0.0
                    del open_[pid]
                else:
                    open_[pid] = rec
        assert {pid for pid in PORTS if run.tracker.current(pid)} == set(open_)

    for dt_s, p1, p2, tag, stop in ticks:
        if stop is not None:
            run.tracker.stop("1", stop)
        authorized = None if not tags else ({"1": tag, "2": None} if tag else {"2": None})
        check(run.tick(dt_s, authorized, p1=p1, p2=p2), {"1": p1, "2": p2}, tag)
    check(run.tick(), {"1": P(), "2": P()}, None)  # both vehicles leave
    assert open_ == {}, "a session outlived its unplug"
    starts = [e.record.session_id for e in run.events if e.kind is EventKind.START]
    stops = [e.record.session_id for e in run.events if e.kind is EventKind.STOP]
    assert sorted(starts) == sorted(stops) and len(set(stops)) == len(stops)


# --- end to end: the station loop, virtual time --------------------------------------------


@pytest.mark.parametrize("register", [False, True])
def test_the_station_loop_gives_one_session_per_visit_with_the_sims_energy(
    register: bool,
) -> None:
    evs = [
        EvSpec(port="1", arrive_s=10.0, leave_s=3000.0, max_a=32, battery_kwh=80, soc=0.2),
        EvSpec(port="1", arrive_s=3600.0, leave_s=5000.0, max_a=16, battery_kwh=80, soc=0.5),
    ]
    config = load_station(CONFIGS / "ct4000-jumper.yaml")
    bus = SimBus([p.id for p in config.site.ports], evs, jumper=config.jumper, seed=3)
    station = build_station(config, bus)
    tracker = SessionTracker(
        "st1",
        station.port_ids,
        voltage_v={p.id: p.voltage_v for p in config.site.ports},
        has_register=dict.fromkeys(station.port_ids, register),
    )
    events: list[SessionEvent] = []
    delivered: list[float] = []

    def on_step(snap: Snapshot) -> None:
        readings = {pid: bus.port(pid).latest() for pid in station.port_ids}
        wall = T0 + dt.timedelta(seconds=snap.t)
        new = tracker.step(snap.t, wall, snap, readings)
        if any(e.kind is not EventKind.CHECKPOINT for e in new):
            delivered.append(bus.port("1").energy_wh)  # the simulated meter at start and stop
        events.extend(new)

    VirtualRunner(station).run(6000.0, on_step)
    kinds = [(e.kind, e.record.port_id) for e in events if e.kind is not EventKind.CHECKPOINT]
    assert kinds == [(EventKind.START, "1"), (EventKind.STOP, "1")] * 2
    stops = [e.record for e in events if e.kind is EventKind.STOP]
    assert [r.stop_reason for r in stops] == [StopReason.EVDisconnected] * 2
    assert [r.stop_at for r in stops] == [
        T0 + dt.timedelta(seconds=3000.0),
        T0 + dt.timedelta(seconds=5000.0),
    ]
    source = EnergySource.REGISTER if register else EnergySource.INTEGRATED
    for n, rec in enumerate(stops):
        sim_wh = delivered[2 * n + 1] - delivered[2 * n]
        assert sim_wh > 1000.0
        assert rec.energy_source is source
        # The simulated meter integrates the same currents exactly: within a few Wh.
        assert rec.energy_wh == pytest.approx(sim_wh, rel=1e-3)
        assert rec.max_offer_a == pytest.approx(30.0, abs=0.1)  # a CT4000 port's rating
        assert rec.max_drawn_a == pytest.approx(30.0 if n == 0 else 16.0, abs=0.3)
