"""The per-port J1772 / IEC 61851-1 state machine, as a pure function.

``step(state, inputs, now, config) -> (state, commands)``: no clock, no I/O. The station loop
calls it on every tick with what it read from the HAL and the controller's offer, and writes the
returned commands to the pilot driver and the contactor. ``next_deadline(state)`` tells a
virtual-time runner when a step would next act by itself (a timer running out), so idle time
can be skipped.

Rules (docs/design.md "J1772 / IEC 61851 essentials"; SAE J1772; IEC 61851-1:2017 Annex A). Every
number below is a :class:`PortConfig` field or a ``hal.pilot`` constant, cited there.

* Offer: ``offer_a`` >= 6 A (IEC 61851-1 Table A.7 minimum) turns the PWM on at
  ``amps_to_duty(offer)``; less turns it off (steady +12 V, SAE J1772 Table 3). B with PWM is
  B2, without B1; C with PWM is C2, without C1.
* The contactor closes only in C with PWM on: on the first tick whose pilot sample was taken
  with the PWM running (so the diode check has been made on it, ``diode_ok`` True) and the
  PWM stays on. When PWM and C are first seen on the same tick (PWM just switched on), the
  port is C2 with the contactor still open for that one tick; a tick is far below the 3 s
  allowed (``close_within_s``). It opens on the very tick the pilot reads anything but C
  (B, A, D, E, F, invalid): the 100 ms opening requirement (SAE J1772, docs/design.md) is then
  met by the station loop's tick period.
* PWM off while the EV stays in C with the contactor closed (a pause): the EV must stop
  drawing and go to B; the contactor is opened under load after ``open_pwm_off_in_c_s``.
* State D (ventilation required): this station cannot provide or verify ventilation, so D is
  handled like C1: the contactor is never closed (and opened at once if it was), the PWM
  follows the offer as in B. ``is_requesting`` is False in D, since no current can flow.
* Overdraw: metered current above ``offer * 1.10 + 0.5 A`` for ``overdraw_s`` continuously
  while the contactor is closed: FAULT "overdraw", cleared by unplug. The offer compared is
  the one the pilot advertised up to this tick (a lowered offer gives the EV 5 s to follow,
  inside the 7 s window). A missing reading (``metered_a`` None: the station passes None
  once its meter is stale) is no evidence of overdraw: the window needs continuous evidence
  and restarts after a gap, so the fault is only ever declared on a tick whose reading is
  over the limit (and ``next_deadline`` stays a time at which a step really acts).
* Contactor feedback: commanded open but sensed closed for ``weld_detect_s`` (also when it was
  never commanded closed, e.g. at power-up): LOCKOUT "weld". While such a mismatch is pending,
  the contactor is never commanded closed, so a weld cannot hide behind a close command.
  Commanded closed but sensed open for ``close_fail_s``: FAULT "contactor", cleared by unplug.
* Diode: PWM on (when sampled) and a vehicle in B/C/D with ``diode_ok`` False: FAULT "diode",
  PWM off (steady +12 V, so that the unplug shows as A), contactor open; cleared by unplug.
* GFCI trip: contactor open at once, PWM off, GFCI_WAIT. After ``gfci_retry_delay_s`` the
  machine asks the HAL to re-arm (``reset_gfci``) for one tick; on the next tick it resumes
  ordinary handling if the GFCI reads clear, and counts a new trip if it is still tripped.
  The trip that would need more than ``gfci_max_retries`` automatic re-arms in one session
  locks out ("gfci") until reset.
  Unplug during GFCI_WAIT ends the session (and its trip count) but does not shorten the
  wait: the delay protects whoever plugs in next as much as the vehicle that left, so the
  contactor stays open and the GFCI is re-armed only when the delay has run.
* Ground loss (``ground_ok`` False): contactor open, pilot state F, FAULT "ground". The EV
  cannot be seen while the pilot is at -12 V, so unplug cannot clear it: it clears by itself
  on the first tick the ground monitor reads continuity again, and the port resumes ordinary
  pilot handling from that tick (a stale F reading passes through E until the pilot reads
  A/B/C). The session is kept, as no unplug was seen.
* Pilot E, F or invalid (None) while we drive +12 V or PWM: contactor open at once, PWM off,
  Mode.E ("pilot"); the port recovers on the first valid A/B/C/D reading. The session is
  kept (a pilot glitch is not an unplug); an A reading ends it as usual.
* LOCKOUT (weld, GFCI retries exhausted): pilot state F, contactor open; everything but
  ``inputs.reset`` is ignored. Reset starts over from A with PWM off and fresh counters. It
  acts on a rising edge (reset True, False on the tick before): a reset input stuck at True
  must not turn a lockout into an unbounded automatic retry (UL 2231-2 bounds the automatic
  reclosings; a weld must be looked at). The station's one-tick operator reset is an edge.
* Unplug (pilot A) from any non-lockout state (except a ground fault, where the pilot cannot
  be read) ends the session, resets the per-session GFCI count and clears the faults that
  unplug clears (diode, overdraw, contactor, pilot). In GFCI_WAIT the wait itself goes on.
* Restart: ``restored_state`` is power-up with what a previous run left (``firmware.portstate``
  keeps it on disk; this module does no I/O). A lockout comes back as it was, with the reset
  input taken as already high, so only a reset asserted after start-up clears it (a reset
  stuck high across a crash loop would otherwise be an automatic reclose per restart). The
  session's GFCI trip count comes back with its session, so it is cleared only by an unplug
  seen after the restart. A port that was waiting to re-arm waits the full
  ``gfci_retry_delay_s`` again from start-up: never sooner than it would have without the
  restart, whatever the wall clock did meanwhile.

Timers are "since" timestamps in the state. A timer of length T set at t acts on the first
step at ``now >= t + T``; ``next_deadline`` returns exactly that instant. The boundary itself
has measure zero in continuous time; using ``>=`` makes the deadline a time at which a step
really acts, so a runner that jumps to it always makes progress.

Size: one state machine; its transitions read best side by side.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any

from hal.pilot import MAX_A, MIN_A, PilotState, amps_to_duty, duty_to_amps

__all__ = [
    "Mode",
    "PilotOut",
    "PortCommands",
    "PortConfig",
    "PortInputs",
    "PortState",
    "fault",
    "initial_state",
    "is_connected",
    "is_requesting",
    "next_deadline",
    "restored_state",
    "session_start",
    "step",
]


class Mode(enum.Enum):
    """Where a port is. B1/C1: PWM off (no offer, or paused); B2/C2: PWM on."""

    A = "A"  # no vehicle
    B1 = "B1"  # vehicle connected, no current offered (steady +12 V)
    B2 = "B2"  # vehicle connected, current offered, vehicle not (yet) asking
    C1 = "C1"  # vehicle asks (state C, or D) but no current can flow: contactor open / opening
    C2 = "C2"  # charging: state C, PWM on, contactor closed (or closing on the next tick)
    E = "E"  # pilot shorted or out of every band: contactor open until the pilot is valid
    FAULT = "FAULT"  # diode, overdraw, ground, contactor-did-not-close...: cleared by unplug
    GFCI_WAIT = "GFCI_WAIT"  # ground fault trip: open, waiting to retry
    LOCKOUT = "LOCKOUT"  # welded contactor or GFCI retries exhausted: state F until reset


class PilotOut(enum.Enum):
    """What the pilot driver is told to do."""

    STEADY = "steady"  # +12 V, PWM off
    PWM = "pwm"
    STATE_F = "F"  # -12 V


@dataclass(frozen=True, slots=True)
class PortConfig:
    """Timing and retry settings of the port machine.

    Numbers without a standard behind them are design margins and say so.
    """

    # SAE J1772 / IEC 61851-1:2017 Annex A (docs/design.md "J1772 essentials"): close within 3 s of
    # C with PWM. The machine closes on the first tick that qualifies, so this is a bound the
    # tests check, not a timer.
    close_within_s: float = 3.0
    # SAE J1772 / IEC 61851-1:2017 Annex A (docs/design.md "J1772 essentials"): PWM off with the EV
    # still in C: the EV must stop and leave C within 3 s; the EVSE opens under load at 6 s.
    open_pwm_off_in_c_s: float = 6.0
    # docs/design.md "J1772 essentials" (SAE J1772 overcurrent): drawing > offer x 1.10 + 0.5 A for
    # more than 7 s stops the EV. 7 s > the 5 s an EV has to follow a lowered offer (IEC
    # 61851-1:2017 Annex A, docs/design.md "safe-offer invariant").
    overdraw_s: float = 7.0
    overdraw_ratio: float = 1.10  # docs/design.md "J1772 essentials": +10 %
    overdraw_margin_a: float = 0.5  # docs/design.md "J1772 essentials": + 0.5 A
    # Design margin, no standard number: a contactor releases in tens of ms; 0.5 s covers the
    # feedback's own filtering (auxiliary contact or voltage sense) before declaring a weld.
    # (OpenEVSE checks a stuck relay 1 s after opening, STUCK_RELAY_DELAY.)
    weld_detect_s: float = 0.5
    # Design margin, no standard number: feedback still open this long after a close command
    # means the contactor (coil, driver or feedback) failed. Well within the 3 s close budget.
    close_fail_s: float = 1.0
    # GFCI (CCID) automatic reclosing. UL 2231-2 permits a charging-circuit interrupting
    # device to reclose automatically after a trip, after a delay and a bounded number of
    # times, then requires a manual reset. Field practice, all on UL 2231 listed equipment:
    # ChargePoint stations (Leviton EVR-Green manual, "Ground fault errors": wait 15 min,
    # after three attempts HALTED), OpenEVSE firmware (GFI_TIMEOUT 15 min, GFI_RETRY_COUNT 3
    # in its earlier open_evse.h; later builds 5 min x 6), Tesla Wall Connector Gen 3 (15 min,
    # up to four attempts). Defaults: 15 min, 3 automatic re-arms per session, the 4th trip
    # locks out. The UL 2231-2 clause text itself was not available to check the figures.
    gfci_retry_delay_s: float = 900.0
    gfci_max_retries: int = 3  # automatic re-arms per session; trip number 4 -> LOCKOUT
    meter_stale_s: float = 10.0  # station side: older readings are passed as metered_a None


@dataclass(frozen=True, slots=True)
class PortInputs:
    """What the station read for this port on this tick, plus the controller's offer.

    ``pilot`` is None when the high voltage is outside every band. ``diode_ok`` is None when
    PWM is off (nothing to check). ``offer_a`` 0.0 means offer nothing (PWM off, a pause).
    """

    pilot: PilotState | None
    diode_ok: bool | None
    contactor_closed: bool
    gfci_tripped: bool = False
    ground_ok: bool = True
    metered_a: float | None = None
    offer_a: float = 0.0
    reset: bool = False


@dataclass(frozen=True, slots=True)
class PortCommands:
    """What the station writes to the HAL for this port."""

    pilot: PilotOut
    duty_pct: float | None
    contactor_closed: bool
    reset_gfci: bool = False


@dataclass(frozen=True, slots=True)
class PortState:
    """Everything the machine remembers between ticks (immutable).

    ``pilot_out``/``duty_pct``/``offer_a``/``contactor_closed`` are what was last commanded:
    the pilot the EV saw up to this tick (``offer_a`` is the current that duty advertises, as
    the EV reads it, 0.0 with PWM off) and the contactor command the feedback is checked
    against. Timers are the time they started, None when not running.
    """

    mode: Mode
    since: float  # when ``mode`` was entered
    session_start: float | None = None  # first tick a vehicle was seen, None without session
    fault: str | None = None  # "weld", "diode", "overdraw", "gfci", "ground", "pilot", ...
    pilot_in: PilotState | None = None  # the pilot read on the last tick
    pilot_out: PilotOut = PilotOut.STEADY
    duty_pct: float | None = None
    offer_a: float = 0.0
    contactor_closed: bool = False
    mismatch_since: float | None = None  # contactor feedback != command since
    pwm_off_in_c_since: float | None = None  # PWM off, EV in C, contactor still closed, since
    overdraw_since: float | None = None  # metered above the overdraw limit since
    gfci_trips: int = 0  # GFCI trips in this session
    gfci_rearm_at: float | None = None  # when re-arm was requested (GFCI_WAIT), None before
    reset_in: bool = False  # inputs.reset on the last tick (a lockout reset is an edge)


# A vehicle is plugged in and the port can charge it (B1, B2, C1, C2): the one list of them.
CONNECTED_MODES = frozenset({Mode.B1, Mode.B2, Mode.C1, Mode.C2})
_INVALID_PILOT: frozenset[PilotState | None] = frozenset({None, PilotState.E, PilotState.F})


_STATE_FIELDS = tuple(f.name for f in fields(PortState))


def replace(state: PortState, **changes: Any) -> PortState:
    """``dataclasses.replace`` for the hot path: every port steps on every tick, and most
    changes a step asks for are already so, so an unchanged state is returned as it is."""
    if all(getattr(state, name) == value for name, value in changes.items()):
        return state
    values = {name: getattr(state, name) for name in _STATE_FIELDS}
    values.update(changes)
    return PortState(**values)


def initial_state(now: float) -> PortState:
    """Power-up: no vehicle seen yet, PWM off, contactor commanded open."""
    return PortState(mode=Mode.A, since=now)


def restored_state(
    now: float,
    *,
    lockout: str | None = None,
    gfci_trips: int = 0,
    in_session: bool = False,
    gfci_wait: bool = False,
) -> PortState:
    """Power-up after a restart, with what the previous run left (module docstring, Restart).

    ``lockout``: the reason the port was locked out ("weld", "gfci", ...), None if it was not.
    ``gfci_trips``: GFCI trips counted in the session; ``in_session``: that session was still
    open (so the next unplug ends it and clears the count). ``gfci_wait``: it was waiting to
    re-arm; the full delay starts again at ``now``. A lockout takes precedence over the rest.
    """
    s = replace(
        initial_state(now),
        gfci_trips=gfci_trips,
        session_start=now if in_session else None,
    )
    if lockout is not None:
        # reset_in True: a reset input already high at start-up is not an edge.
        return replace(_lockout(s, lockout, now), reset_in=True)
    if gfci_wait:
        return replace(_open(s, now), mode=Mode.GFCI_WAIT, since=now, fault="gfci")
    return s


def is_connected(state: PortState) -> bool:
    """A vehicle is plugged in and the port can charge it (B1, B2, C1, C2)."""
    return state.mode in CONNECTED_MODES


def is_requesting(state: PortState) -> bool:
    """The vehicle asks for current (pilot C), whether or not it is offered any."""
    return state.mode in (Mode.C1, Mode.C2) and state.pilot_in is PilotState.C


def session_start(state: PortState) -> float | None:
    """When the current session (vehicle plugged in) began, None without a vehicle."""
    return state.session_start


def fault(state: PortState) -> str | None:
    """Why the port cannot charge ("weld", "gfci", "diode", ...), None when it can."""
    return state.fault


def next_deadline(state: PortState, config: PortConfig = PortConfig()) -> float | None:
    """The earliest time a step would act with unchanged inputs, or None when nothing is pending.

    A deadline at or before the time of the last step means "act on the next tick": the
    machine is waiting for the hardware to take its last command (the tick after a GFCI
    re-arm request; C2 waiting for its first pilot sample under PWM to close). A runner must
    still advance by at least one tick; it never needs to step twice at the same instant.
    """
    if state.mode is Mode.LOCKOUT:
        return None
    deadlines: list[float] = []
    if state.mismatch_since is not None:
        limit = config.close_fail_s if state.contactor_closed else config.weld_detect_s
        deadlines.append(state.mismatch_since + limit)
    if state.pwm_off_in_c_since is not None:
        deadlines.append(state.pwm_off_in_c_since + config.open_pwm_off_in_c_s)
    if state.overdraw_since is not None:
        deadlines.append(state.overdraw_since + config.overdraw_s)
    if state.mode is Mode.C2 and not state.contactor_closed:
        deadlines.append(state.since)  # closes on the next sample taken under PWM
    if state.mode is Mode.GFCI_WAIT:
        if state.gfci_rearm_at is not None:
            deadlines.append(state.gfci_rearm_at)
        else:
            deadlines.append(state.since + config.gfci_retry_delay_s)
    return min(deadlines, default=None)


def step(
    state: PortState, inputs: PortInputs, now: float, config: PortConfig = PortConfig()
) -> tuple[PortState, PortCommands]:
    """Advance the port by one tick: what was read at ``now`` -> new state and HAL commands."""
    new, reset_gfci = _step(state, inputs, now, config)
    commands = PortCommands(
        pilot=new.pilot_out,
        duty_pct=new.duty_pct,
        contactor_closed=new.contactor_closed,
        reset_gfci=reset_gfci,
    )
    return new, commands


# --- internals ------------------------------------------------------------------------------


def _step(
    state: PortState, inputs: PortInputs, now: float, config: PortConfig
) -> tuple[PortState, bool]:
    """The machine proper; the bool is the one-tick ``reset_gfci`` command."""
    if state.mode is Mode.LOCKOUT:
        if inputs.reset and not state.reset_in:
            return replace(_fresh(now), reset_in=True), False
        return replace(state, reset_in=inputs.reset), False

    s = replace(
        state,
        pilot_in=inputs.pilot,
        mismatch_since=_mismatch_since(state, inputs, now),
        reset_in=inputs.reset,
    )

    # Contactor feedback first: a weld makes everything else moot.
    if s.mismatch_since is not None:
        if not s.contactor_closed and now - s.mismatch_since >= config.weld_detect_s:
            return _lockout(s, "weld", now), False
        if s.contactor_closed and now - s.mismatch_since >= config.close_fail_s:
            return _fault(s, "contactor", now), False

    if not inputs.ground_ok:
        return _fault(s, "ground", now), False
    if s.mode is Mode.FAULT and s.fault == "ground":
        # Ground is back: resume ordinary handling from this tick (session kept).
        s = replace(s, fault=None)
        if inputs.gfci_tripped:
            return _gfci_trip(s, config, now), False
        return _operate(s, inputs, now, config), False

    if s.mode is Mode.GFCI_WAIT:
        return _gfci_wait(s, inputs, now, config)
    if inputs.gfci_tripped:
        return _gfci_trip(s, config, now), False

    if s.mode is Mode.FAULT:
        if inputs.pilot is PilotState.A:
            return _operate(s, inputs, now, config), False  # unplug clears it
        return s, False

    return _operate(s, inputs, now, config), False


def _fresh(now: float) -> PortState:
    """After a lockout reset: as at power-up."""
    return initial_state(now)


def _mismatch_since(state: PortState, inputs: PortInputs, now: float) -> float | None:
    """When the feedback started disagreeing with the command in force, None if it agrees."""
    if inputs.contactor_closed == state.contactor_closed:
        return None
    return state.mismatch_since if state.mismatch_since is not None else now


def _enter(s: PortState, mode: Mode, now: float) -> PortState:
    """``s`` in ``mode``; the "since" timestamp only moves when the mode changes."""
    return s if s.mode is mode else replace(s, mode=mode, since=now)


def _open(s: PortState, now: float, pilot_out: PilotOut = PilotOut.STEADY) -> PortState:
    """Contactor commanded open and PWM off (steady +12 V or state F); timers of a charge end."""
    return replace(
        s,
        pilot_out=pilot_out,
        duty_pct=None,
        offer_a=0.0,
        mismatch_since=_after_command(s, closed=False, now=now),
        contactor_closed=False,
        pwm_off_in_c_since=None,
        overdraw_since=None,
    )


def _after_command(s: PortState, *, closed: bool, now: float) -> float | None:
    """The mismatch timer once the contactor command becomes ``closed``.

    A changed command restarts it: the feedback is judged against the new command, and a
    mismatch starting now is the contactor's normal travel time.
    """
    if closed == s.contactor_closed:
        return s.mismatch_since
    feedback_closed = s.contactor_closed != (s.mismatch_since is not None)
    return None if feedback_closed == closed else now


def _lockout(s: PortState, reason: str, now: float) -> PortState:
    s = _open(s, now, PilotOut.STATE_F)
    return replace(_enter(s, Mode.LOCKOUT, now), fault=reason, gfci_rearm_at=None)


def _fault(s: PortState, reason: str, now: float) -> PortState:
    # Ground loss drives state F (SAE J1772 Table 3: EVSE not available); the others keep a
    # steady +12 V so that the unplug that clears them can be seen as A.
    pilot_out = PilotOut.STATE_F if reason == "ground" else PilotOut.STEADY
    s = _open(s, now, pilot_out)
    if s.mode is Mode.FAULT and s.fault != reason:
        s = replace(s, since=now)
    return replace(_enter(s, Mode.FAULT, now), fault=reason, gfci_rearm_at=None)


def _gfci_trip(s: PortState, config: PortConfig, now: float) -> PortState:
    trips = s.gfci_trips + 1
    s = replace(s, gfci_trips=trips)
    if trips > config.gfci_max_retries:
        return _lockout(s, "gfci", now)
    s = _open(s, now)
    # A new trip restarts the wait, even when already waiting (a re-arm that did not hold).
    return replace(s, mode=Mode.GFCI_WAIT, since=now, fault="gfci", gfci_rearm_at=None)


def _gfci_wait(
    s: PortState, inputs: PortInputs, now: float, config: PortConfig
) -> tuple[PortState, bool]:
    if inputs.pilot is PilotState.A and s.session_start is not None:
        s = _end_session(s)  # the wait goes on (module docstring)
    if s.gfci_rearm_at is not None:
        # The HAL re-armed after the last tick: resume if it holds, else count a new trip.
        if inputs.gfci_tripped:
            return _gfci_trip(s, config, now), False
        s = replace(s, fault=None, gfci_rearm_at=None)
        return _operate(s, inputs, now, config), False
    if now - s.since >= config.gfci_retry_delay_s:
        return replace(s, gfci_rearm_at=now), True
    return s, False


def _end_session(s: PortState) -> PortState:
    return replace(s, session_start=None, gfci_trips=0)


def _offer(offer_a: float) -> tuple[float | None, float]:
    """(duty %, amps the EV reads from it) for an offer; (None, 0.0) means PWM off.

    Below 6 A (IEC 61851-1:2017 Table A.7, SAE J1772: the lowest advertisable current) or NaN
    nothing can be offered. Above 80 A (Table A.7: 96 %, the highest) the pilot cannot
    advertise more than 80 A; the controller is what keeps offers within the breaker.
    """
    if not offer_a >= MIN_A:  # also NaN
        return None, 0.0
    duty = amps_to_duty(min(offer_a, MAX_A))
    return duty, duty_to_amps(duty)


def _operate(s: PortState, inputs: PortInputs, now: float, config: PortConfig) -> PortState:
    """Ordinary J1772 handling of the pilot reading and the offer (no fault pending)."""
    pilot = inputs.pilot

    if pilot is PilotState.A:
        # Unplug: the session ends, unplug-cleared faults with it.
        # Callers only get here without a fault that unplug must not clear (lockout, ground
        # and GFCI are handled before), so whatever is left is cleared.
        if s.session_start is not None:
            s = _end_session(s)
        return replace(_enter(_open(s, now), Mode.A, now), fault=None)

    if pilot in _INVALID_PILOT:
        s = _open(s, now)
        return replace(_enter(s, Mode.E, now), fault="pilot")

    # A vehicle is connected: B, C or D.
    if s.session_start is None:
        s = replace(s, session_start=now)
    s = replace(s, fault=None)

    # Diode check (SAE J1772 Table 3): the sample was taken while our PWM ran.
    pwm_when_sampled = s.pilot_out is PilotOut.PWM
    if pwm_when_sampled and inputs.diode_ok is False:
        return _fault(s, "diode", now)

    # Overdraw, judged against the offer the pilot advertised up to this tick.
    overdraw_since = _overdraw_since(s, inputs, now, config)
    if overdraw_since is not None and now - overdraw_since >= config.overdraw_s:
        return _fault(s, "overdraw", now)

    duty, advertised = _offer(inputs.offer_a)
    pwm_on = duty is not None
    pilot_out = PilotOut.PWM if pwm_on else PilotOut.STEADY

    if pilot is PilotState.C and pwm_on:
        close = s.contactor_closed or (
            pwm_when_sampled and inputs.diode_ok is True and s.mismatch_since is None
        )
        mode = Mode.C2
        pwm_off_since = None
    elif pilot is PilotState.C and s.contactor_closed:
        # Paused under load: give the EV its time to stop and leave C, then open anyway.
        pwm_off_since = s.pwm_off_in_c_since if s.pwm_off_in_c_since is not None else now
        close = now - pwm_off_since < config.open_pwm_off_in_c_s
        if not close:
            pwm_off_since = None
        mode = Mode.C1
    else:
        # B, D (no ventilation: never close), or C without offer and nothing closed.
        close = False
        pwm_off_since = None
        in_b = Mode.B2 if pwm_on else Mode.B1
        mode = in_b if pilot is PilotState.B else Mode.C1

    return replace(
        _enter(s, mode, now),
        pilot_out=pilot_out,
        duty_pct=duty,
        offer_a=advertised,
        mismatch_since=_after_command(s, closed=close, now=now),
        contactor_closed=close,
        pwm_off_in_c_since=pwm_off_since,
        overdraw_since=overdraw_since if close else None,
    )


def _overdraw_since(
    s: PortState, inputs: PortInputs, now: float, config: PortConfig
) -> float | None:
    """The overdraw window's start after this tick's reading, None when not running."""
    if not s.contactor_closed or inputs.pilot is not PilotState.C:
        return None  # no current can flow through an open contactor
    metered = inputs.metered_a
    limit = s.offer_a * config.overdraw_ratio + config.overdraw_margin_a
    if metered is not None and metered > limit:  # NaN compares False: no evidence
        return s.overdraw_since if s.overdraw_since is not None else now
    return None  # within the limit, or no reading: the continuous window ends
