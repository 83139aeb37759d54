"""Tests of firmware.port, the pure per-port J1772 / IEC 61851-1 state machine.

Most tests drive a :class:`Bench`: an ideal port whose contactor feedback follows the last
command and whose diode check reads True while our PWM runs (None otherwise), unless a test
says otherwise. Times are seconds; ``TICK`` is a station tick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.port import (
    Mode,
    PilotOut,
    PortCommands,
    PortConfig,
    PortInputs,
    PortState,
    fault,
    initial_state,
    is_connected,
    is_requesting,
    next_deadline,
    session_start,
    step,
)
from hal.pilot import PilotState, amps_to_duty

A, B, C, D, E, F = (
    PilotState.A,
    PilotState.B,
    PilotState.C,
    PilotState.D,
    PilotState.E,
    PilotState.F,
)
TICK = 0.1
CFG = PortConfig()
_AUTO = object()


@dataclass
class Bench:
    """One port on ideal hardware; ``tick`` steps the machine and remembers the commands."""

    now: float = 0.0
    config: PortConfig = field(default_factory=PortConfig)
    state: PortState = field(init=False)
    cmd: PortCommands = field(init=False)

    def __post_init__(self) -> None:
        self.state = initial_state(self.now)
        self.cmd = PortCommands(PilotOut.STEADY, None, False)

    def tick(
        self,
        pilot: PilotState | None,
        *,
        at: float | None = None,
        offer: float = 0.0,
        metered: float | None = None,
        feedback: bool | None = None,
        diode: object = _AUTO,
        gfci: bool = False,
        ground: bool = True,
        reset: bool = False,
    ) -> PortCommands:
        self.now = self.now + TICK if at is None else at
        if diode is _AUTO:
            diode = True if self.cmd.pilot is PilotOut.PWM else None
        assert diode is None or isinstance(diode, bool)
        inputs = PortInputs(
            pilot=pilot,
            diode_ok=diode,
            contactor_closed=self.cmd.contactor_closed if feedback is None else feedback,
            gfci_tripped=gfci,
            ground_ok=ground,
            metered_a=metered,
            offer_a=offer,
            reset=reset,
        )
        self.state, self.cmd = step(self.state, inputs, self.now, self.config)
        return self.cmd

    def run(self, pilot: PilotState | None, until: float, **kw: object) -> PortCommands:
        """Tick every TICK up to and including ``until`` with the same inputs."""
        while self.now + TICK <= until + 1e-9:
            self.tick(pilot, **kw)  # type: ignore[arg-type]
        return self.cmd

    def mode(self) -> Mode:  # a call, not a property: each read is a new observation
        return self.state.mode


def charging(offer: float = 16.0) -> Bench:
    """A bench with a vehicle charging (C2, contactor closed) at ``offer``."""
    b = Bench()
    b.tick(B, offer=offer)
    b.tick(C, offer=offer)
    assert b.mode() is Mode.C2 and b.cmd.contactor_closed
    return b


# --- initial state and helpers ----------------------------------------------------------------


def test_initial_state_is_idle_and_safe() -> None:
    s = initial_state(5.0)
    assert s.mode is Mode.A and s.since == 5.0
    assert not s.contactor_closed and s.pilot_out is PilotOut.STEADY and s.duty_pct is None
    assert not is_connected(s) and not is_requesting(s)
    assert session_start(s) is None and fault(s) is None
    assert next_deadline(s) is None


def test_a_stays_a_with_steady_pilot_whatever_the_offer() -> None:
    b = Bench()
    cmd = b.tick(A, offer=32.0)
    assert b.mode() is Mode.A and cmd == PortCommands(PilotOut.STEADY, None, False)


# --- the offer: B1 / B2 ------------------------------------------------------------------------


def test_a_to_b1_without_offer() -> None:
    b = Bench()
    cmd = b.tick(B, offer=0.0)
    assert b.mode() is Mode.B1 and cmd.pilot is PilotOut.STEADY and cmd.duty_pct is None
    assert not cmd.contactor_closed
    assert is_connected(b.state) and not is_requesting(b.state)
    assert session_start(b.state) == pytest.approx(b.now)


def test_a_to_b2_with_offer_sets_duty_from_hal_pilot() -> None:
    b = Bench()
    cmd = b.tick(B, offer=16.0)
    assert b.mode() is Mode.B2 and cmd.pilot is PilotOut.PWM
    assert cmd.duty_pct == amps_to_duty(16.0)
    assert not cmd.contactor_closed
    assert b.state.offer_a == pytest.approx(16.0, abs=0.06)


@pytest.mark.parametrize(("offer", "mode"), [(5.9, Mode.B1), (6.0, Mode.B2), (0.0, Mode.B1)])
def test_six_amp_floor(offer: float, mode: Mode) -> None:
    # SAE J1772 / IEC 61851-1 Table A.7: 6 A (10 %) is the lowest current a pilot can offer.
    b = Bench()
    cmd = b.tick(B, offer=offer)
    assert b.mode() is mode
    assert (cmd.duty_pct == 10.0) if mode is Mode.B2 else (cmd.duty_pct is None)


def test_b1_to_b2_and_back_follow_the_offer() -> None:
    b = Bench()
    b.tick(B)
    assert b.mode() is Mode.B1
    b.tick(B, offer=20.0)
    assert b.mode() is Mode.B2 and b.cmd.duty_pct == amps_to_duty(20.0)
    b.tick(B, offer=0.0)
    assert b.mode() is Mode.B1 and b.cmd.pilot is PilotOut.STEADY


def test_offer_change_changes_duty() -> None:
    b = Bench()
    b.tick(B, offer=32.0)
    b.tick(B, offer=12.0)
    assert b.cmd.duty_pct == amps_to_duty(12.0)


def test_offer_above_80_a_is_capped_at_96_percent_and_nan_is_no_offer() -> None:
    # IEC 61851-1 Table A.7: 80 A (96 %) is the most a pilot can advertise.
    b = Bench()
    assert b.tick(B, offer=200.0).duty_pct == 96.0
    assert b.tick(B, offer=math.inf).duty_pct == 96.0
    cmd = b.tick(B, offer=math.nan)
    assert b.mode() is Mode.B1 and cmd.duty_pct is None


# --- closing: C2 ---------------------------------------------------------------------------


def test_b2_to_c2_closes_on_the_tick_c_is_seen_with_pwm_on() -> None:
    b = Bench()
    b.tick(B, offer=16.0)
    cmd = b.tick(C, offer=16.0)
    assert b.mode() is Mode.C2 and cmd.contactor_closed and cmd.pilot is PilotOut.PWM
    assert is_requesting(b.state) and is_connected(b.state)


def test_a_straight_to_c_closes_one_tick_after_pwm_starts_within_3_s() -> None:
    # The first sample was taken with the PWM off: no diode check yet, so wait one tick.
    b = Bench()
    t0 = b.now + TICK
    cmd = b.tick(C, offer=16.0)
    assert b.mode() is Mode.C2 and not cmd.contactor_closed and cmd.pilot is PilotOut.PWM
    assert next_deadline(b.state) == pytest.approx(t0)  # "on the next tick"
    cmd = b.tick(C, offer=16.0)
    assert cmd.contactor_closed
    assert b.now - t0 <= CFG.close_within_s  # SAE J1772 / IEC 61851-1: within 3 s


def test_b1_to_c1_without_offer_does_not_close() -> None:
    b = Bench()
    b.tick(B)
    cmd = b.tick(C)
    assert b.mode() is Mode.C1 and not cmd.contactor_closed and cmd.pilot is PilotOut.STEADY
    assert is_requesting(b.state)


def test_c1_to_c2_when_an_offer_arrives() -> None:
    b = Bench()
    b.tick(C)
    assert b.mode() is Mode.C1
    b.tick(C, offer=10.0)
    assert b.mode() is Mode.C2 and not b.cmd.contactor_closed  # PWM just started
    b.tick(C, offer=10.0)
    assert b.cmd.contactor_closed


def test_no_close_without_a_diode_reading() -> None:
    b = Bench()
    b.tick(B, offer=16.0)
    cmd = b.tick(C, offer=16.0, diode=None)
    assert b.mode() is Mode.C2 and not cmd.contactor_closed


# --- opening on the tick the pilot leaves C -----------------------------------------------


def test_c2_to_b2_opens_on_the_same_tick() -> None:
    b = charging()
    cmd = b.tick(B, offer=16.0)
    assert b.mode() is Mode.B2 and not cmd.contactor_closed and cmd.pilot is PilotOut.PWM


def test_c2_to_a_opens_and_ends_the_session() -> None:
    b = charging()
    assert session_start(b.state) is not None
    cmd = b.tick(A, offer=16.0)
    assert b.mode() is Mode.A and not cmd.contactor_closed and cmd.pilot is PilotOut.STEADY
    assert session_start(b.state) is None


@pytest.mark.parametrize("pilot", [E, F, None])
def test_c2_to_e_opens_at_once_and_recovers_on_a_valid_pilot(pilot: PilotState | None) -> None:
    b = charging()
    started = session_start(b.state)
    cmd = b.tick(pilot, offer=16.0)
    assert b.mode() is Mode.E and fault(b.state) == "pilot"
    assert not cmd.contactor_closed and cmd.pilot is PilotOut.STEADY
    assert not is_connected(b.state)
    b.tick(pilot, offer=16.0)
    assert b.mode() is Mode.E
    b.tick(B, offer=16.0)
    assert b.mode() is Mode.B2 and fault(b.state) is None
    assert session_start(b.state) == started  # a pilot glitch is not an unplug


def test_e_to_c_recovers_to_charging() -> None:
    b = charging()
    b.tick(E, offer=16.0)
    b.tick(C, offer=16.0)
    assert b.mode() is Mode.C2 and not b.cmd.contactor_closed  # first sample was not under PWM
    b.tick(C, offer=16.0)
    assert b.cmd.contactor_closed


def test_e_to_a_ends_the_session() -> None:
    b = charging()
    b.tick(None)
    b.tick(A)
    assert b.mode() is Mode.A and fault(b.state) is None and session_start(b.state) is None


def test_d_never_closes_and_opens_at_once_from_c2() -> None:
    # No ventilation here: D is handled like C1 (PWM may stay on), never closed.
    b = charging()
    cmd = b.tick(D, offer=16.0)
    assert b.mode() is Mode.C1 and not cmd.contactor_closed and cmd.pilot is PilotOut.PWM
    b.run(D, b.now + 5.0, offer=16.0)
    assert not b.cmd.contactor_closed
    assert is_connected(b.state) and not is_requesting(b.state)
    b.tick(C, offer=16.0)
    assert b.mode() is Mode.C2 and b.cmd.contactor_closed


def test_d_from_a() -> None:
    b = Bench()
    b.tick(D, offer=16.0)
    cmd = b.tick(D, offer=16.0)
    assert b.mode() is Mode.C1 and not cmd.contactor_closed


# --- PWM off while in C: the 6 s rule ------------------------------------------------------


def _paused(at_off: float) -> Bench:
    b = charging()
    b.run(C, at_off - TICK, offer=16.0)
    b.tick(C, at=at_off, offer=0.0)
    return b


def test_pause_keeps_contactor_closed_for_up_to_6_s() -> None:
    b = _paused(10.0)
    assert b.mode() is Mode.C1 and b.cmd.contactor_closed and b.cmd.pilot is PilotOut.STEADY
    assert next_deadline(b.state) == pytest.approx(16.0)
    assert b.tick(C, at=15.9, offer=0.0).contactor_closed
    assert not b.tick(C, at=16.1, offer=0.0).contactor_closed
    assert b.mode() is Mode.C1
    # Only the weld check is left: the feedback must follow the open command.
    assert next_deadline(b.state) == pytest.approx(16.1 + CFG.weld_detect_s)
    b.tick(C, at=16.2, offer=0.0)
    assert next_deadline(b.state) is None


def test_pause_acts_exactly_at_the_deadline() -> None:
    b = _paused(10.0)
    deadline = next_deadline(b.state)
    assert deadline is not None
    b.tick(C, at=deadline, offer=0.0)
    assert not b.cmd.contactor_closed


def test_pause_then_ev_goes_to_b_opens_at_once() -> None:
    b = _paused(10.0)
    cmd = b.tick(B, at=12.0, offer=0.0)
    assert b.mode() is Mode.B1 and not cmd.contactor_closed


def test_pause_then_offer_returns_keeps_charging() -> None:
    b = _paused(10.0)
    b.tick(C, at=13.0, offer=16.0)
    assert b.mode() is Mode.C2 and b.cmd.contactor_closed
    assert next_deadline(b.state) is None
    b.tick(C, at=30.0, offer=16.0)
    assert b.cmd.contactor_closed


def test_offer_below_6_a_is_a_pause() -> None:
    b = charging()
    b.tick(C, offer=4.0)
    assert b.mode() is Mode.C1 and b.state.pwm_off_in_c_since is not None


# --- overdraw -------------------------------------------------------------------------------

# Offer 16 A: the EV may draw up to 16 x 1.10 + 0.5 = 18.1 A (docs/design.md "J1772 essentials").


def _overdrawing(t: float, metered: float = 20.0) -> Bench:
    b = charging(16.0)
    b.run(C, 1.0, offer=16.0, metered=15.0)
    b.run(C, 1.0 + t, offer=16.0, metered=metered)
    return b


def test_overdraw_for_6_9_s_is_tolerated() -> None:
    b = _overdrawing(6.9 + TICK)  # first over-reading at 1.1 s, last at 8.0 s: 6.9 s
    assert b.mode() is Mode.C2 and b.cmd.contactor_closed and fault(b.state) is None
    assert next_deadline(b.state) == pytest.approx(1.0 + TICK + CFG.overdraw_s)


def test_overdraw_for_7_1_s_faults() -> None:
    b = _overdrawing(7.1 + TICK)
    assert b.mode() is Mode.FAULT and fault(b.state) == "overdraw"
    assert not b.cmd.contactor_closed and b.cmd.pilot is PilotOut.STEADY


def test_draw_at_the_limit_is_not_overdraw() -> None:
    b = charging(16.0)
    b.run(C, 20.0, offer=16.0, metered=b.state.offer_a * 1.10 + 0.5)
    assert b.mode() is Mode.C2 and b.state.overdraw_since is None


def test_overdraw_window_restarts_when_draw_comes_down() -> None:
    b = charging(16.0)
    b.run(C, 5.0, offer=16.0, metered=25.0)
    b.tick(C, offer=16.0, metered=16.0)
    b.run(C, 11.0, offer=16.0, metered=25.0)  # 5.9 s over again
    assert b.mode() is Mode.C2


def test_stale_meter_is_not_overdraw_and_breaks_the_window() -> None:
    b = charging(16.0)
    b.run(C, 30.0, offer=16.0, metered=None)
    assert b.mode() is Mode.C2 and next_deadline(b.state) is None
    b.run(C, 35.0, offer=16.0, metered=25.0)
    b.tick(C, offer=16.0, metered=None)
    b.run(C, 40.0, offer=16.0, metered=25.0)
    assert b.mode() is Mode.C2  # 5 s, gap, 5 s: never 7 s continuously
    b.tick(C, offer=16.0, metered=math.nan)  # a NaN reading is no evidence either
    assert b.state.overdraw_since is None


def test_lowered_offer_gives_the_ev_5_s_to_follow() -> None:
    b = charging(32.0)
    b.run(C, 10.0, offer=32.0, metered=31.0)
    b.run(C, 15.0, offer=16.0, metered=31.0)  # EV takes its 5 s (IEC 61851-1 Annex A)
    b.run(C, 30.0, offer=16.0, metered=15.5)
    assert b.mode() is Mode.C2 and fault(b.state) is None


def test_lowered_offer_not_followed_faults() -> None:
    b = charging(32.0)
    b.run(C, 10.0, offer=32.0, metered=31.0)
    b.run(C, 17.1, offer=16.0, metered=31.0)  # 16 A offered from 10.1 s, over from 10.2 s
    assert fault(b.state) is None
    b.run(C, 17.3, offer=16.0, metered=31.0)
    assert fault(b.state) == "overdraw"


def test_overdraw_fault_cleared_by_unplug_only() -> None:
    b = _overdrawing(7.1 + TICK)
    b.run(B, b.now + 1.0, offer=16.0)
    b.run(C, b.now + 1.0, offer=16.0)
    assert b.mode() is Mode.FAULT and not b.cmd.contactor_closed
    assert not is_connected(b.state)
    b.tick(A)
    assert b.mode() is Mode.A and fault(b.state) is None and session_start(b.state) is None
    b.tick(B, offer=16.0)
    assert b.mode() is Mode.B2


# --- contactor feedback: weld, failure to close -------------------------------------------


def test_weld_detected_after_weld_detect_s() -> None:
    b = charging()
    b.tick(B, at=10.0, offer=16.0, feedback=True)  # opened, still sensed closed
    b.tick(B, at=10.0 + CFG.weld_detect_s - 0.1, offer=16.0, feedback=True)
    assert b.mode() is Mode.B2
    assert next_deadline(b.state) == pytest.approx(10.0 + CFG.weld_detect_s)
    b.tick(B, at=10.0 + CFG.weld_detect_s + 0.1, offer=16.0, feedback=True)
    assert b.mode() is Mode.LOCKOUT and fault(b.state) == "weld"
    assert b.cmd == PortCommands(PilotOut.STATE_F, None, False)
    assert next_deadline(b.state) is None


def test_contactor_that_opens_in_time_is_no_weld() -> None:
    b = charging()
    b.tick(B, at=10.0, offer=16.0, feedback=True)
    b.tick(B, at=10.3, offer=16.0, feedback=False)
    b.tick(B, at=20.0, offer=16.0, feedback=False)
    assert b.mode() is Mode.B2 and b.state.mismatch_since is None


def test_weld_at_power_up_locks_out_and_is_never_closed_over() -> None:
    # Feedback closed while we never commanded it closed; a C + PWM request must not close.
    b = Bench()
    b.tick(B, at=0.1, offer=16.0, feedback=True)
    cmd = b.tick(C, at=0.2, offer=16.0, feedback=True)
    assert not cmd.contactor_closed and b.mode() is Mode.C2
    b.tick(C, at=0.65, offer=16.0, feedback=True)
    assert b.mode() is Mode.LOCKOUT and fault(b.state) == "weld"


def test_weld_detected_in_a_fault_state_too() -> None:
    b = charging()
    b.tick(C, at=5.0, offer=16.0, diode=False, feedback=True)
    assert fault(b.state) == "diode"
    b.tick(C, at=5.6, offer=16.0, feedback=True)
    assert fault(b.state) == "weld" and b.mode() is Mode.LOCKOUT


def test_close_failure_faults_after_close_fail_s() -> None:
    b = Bench()
    b.tick(B, at=0.1, offer=16.0)
    b.tick(C, at=0.2, offer=16.0)
    assert b.cmd.contactor_closed
    b.tick(C, at=0.2 + CFG.close_fail_s - 0.1, offer=16.0, feedback=False)
    assert b.mode() is Mode.C2
    assert next_deadline(b.state) == pytest.approx(0.2 + CFG.close_fail_s)
    b.tick(C, at=0.2 + CFG.close_fail_s + 0.1, offer=16.0, feedback=False)
    assert b.mode() is Mode.FAULT and fault(b.state) == "contactor"
    assert b.cmd == PortCommands(PilotOut.STEADY, None, False)
    b.tick(C, offer=16.0)
    assert b.mode() is Mode.FAULT
    b.tick(A)
    assert b.mode() is Mode.A and fault(b.state) is None


# --- diode check ------------------------------------------------------------------------------


def test_missing_diode_in_b2_faults() -> None:
    b = Bench()
    b.tick(B, offer=16.0)
    cmd = b.tick(B, offer=16.0, diode=False)
    assert b.mode() is Mode.FAULT and fault(b.state) == "diode"
    assert cmd == PortCommands(PilotOut.STEADY, None, False)


def test_missing_diode_while_charging_opens() -> None:
    b = charging()
    cmd = b.tick(C, offer=16.0, diode=False)
    assert fault(b.state) == "diode" and not cmd.contactor_closed


def test_diode_not_checked_with_pwm_off() -> None:
    b = Bench()
    b.tick(B)
    b.tick(B, diode=False)
    assert b.mode() is Mode.B1


def test_diode_fault_cleared_by_unplug() -> None:
    b = Bench()
    b.tick(B, offer=16.0)
    b.tick(B, offer=16.0, diode=False)
    b.run(B, b.now + 2.0, offer=16.0)
    assert b.mode() is Mode.FAULT
    b.tick(A, offer=16.0)
    assert b.mode() is Mode.A and fault(b.state) is None


# --- GFCI -------------------------------------------------------------------------------------


def _tripped(at: float = 10.0) -> Bench:
    b = charging()
    b.run(C, at - TICK, offer=16.0)
    b.tick(C, at=at, offer=16.0, gfci=True)
    return b


def test_gfci_trip_opens_at_once_and_waits() -> None:
    b = _tripped(10.0)
    assert b.mode() is Mode.GFCI_WAIT and fault(b.state) == "gfci"
    assert b.cmd == PortCommands(PilotOut.STEADY, None, False)
    assert b.state.gfci_trips == 1
    assert next_deadline(b.state) == pytest.approx(10.0 + CFG.weld_detect_s)  # opening
    b.tick(C, offer=16.0, gfci=True)  # the contactor has opened
    assert next_deadline(b.state) == pytest.approx(10.0 + CFG.gfci_retry_delay_s)


def test_gfci_rearms_after_the_delay_and_resumes() -> None:
    b = _tripped(10.0)
    b.tick(C, at=10.0 + CFG.gfci_retry_delay_s - 1.0, offer=16.0, gfci=True)
    assert b.mode() is Mode.GFCI_WAIT and not b.cmd.reset_gfci
    cmd = b.tick(C, at=10.0 + CFG.gfci_retry_delay_s, offer=16.0, gfci=True)
    assert cmd.reset_gfci and not cmd.contactor_closed and b.mode() is Mode.GFCI_WAIT
    b.tick(C, offer=16.0, gfci=False)  # the HAL re-armed it
    assert b.mode() is Mode.C2 and fault(b.state) is None and not b.cmd.reset_gfci
    b.tick(C, offer=16.0)
    assert b.cmd.contactor_closed
    assert b.state.gfci_trips == 1  # still this session's count


def test_gfci_still_tripped_after_rearm_counts_a_new_trip() -> None:
    b = _tripped(10.0)
    b.tick(C, at=10.0 + CFG.gfci_retry_delay_s, offer=16.0, gfci=True)
    b.tick(C, offer=16.0, gfci=True)
    assert b.mode() is Mode.GFCI_WAIT and b.state.gfci_trips == 2
    assert next_deadline(b.state) == pytest.approx(b.now + CFG.gfci_retry_delay_s)


def test_gfci_lockout_after_max_retries_and_reset() -> None:
    b = _tripped(10.0)
    for trips in range(2, CFG.gfci_max_retries + 2):
        b.tick(C, at=b.now + CFG.gfci_retry_delay_s, offer=16.0, gfci=True)
        assert b.cmd.reset_gfci
        b.tick(C, offer=16.0)
        b.tick(C, offer=16.0)
        assert b.cmd.contactor_closed
        b.tick(C, offer=16.0, gfci=True)
        if trips <= CFG.gfci_max_retries:
            assert b.mode() is Mode.GFCI_WAIT and b.state.gfci_trips == trips
    assert b.mode() is Mode.LOCKOUT and fault(b.state) == "gfci"
    assert b.cmd == PortCommands(PilotOut.STATE_F, None, False)
    b.tick(C, offer=16.0, reset=True)
    assert b.mode() is Mode.A and fault(b.state) is None and b.state.gfci_trips == 0
    assert b.cmd == PortCommands(PilotOut.STEADY, None, False)


def test_unplug_during_gfci_wait_ends_session_but_not_the_wait() -> None:
    b = _tripped(10.0)
    b.tick(A, at=20.0)
    assert b.mode() is Mode.GFCI_WAIT and session_start(b.state) is None
    assert b.state.gfci_trips == 0
    b.tick(B, at=30.0, offer=16.0)  # a new vehicle: still waiting, contactor open
    assert b.mode() is Mode.GFCI_WAIT and b.cmd.pilot is PilotOut.STEADY
    b.tick(B, at=10.0 + CFG.gfci_retry_delay_s, offer=16.0)
    assert b.cmd.reset_gfci
    b.tick(B, offer=16.0)
    assert b.mode() is Mode.B2 and session_start(b.state) == pytest.approx(b.now)


def test_gfci_trip_without_vehicle() -> None:
    b = Bench()
    b.tick(A, gfci=True)
    assert b.mode() is Mode.GFCI_WAIT
    b.tick(A, at=b.now + CFG.gfci_retry_delay_s)
    b.tick(A)
    assert b.mode() is Mode.A and fault(b.state) is None


# --- ground -----------------------------------------------------------------------------------


def test_ground_loss_opens_drives_f_and_clears_when_ground_returns() -> None:
    b = charging()
    started = session_start(b.state)
    cmd = b.tick(C, offer=16.0, ground=False)
    assert b.mode() is Mode.FAULT and fault(b.state) == "ground"
    assert cmd == PortCommands(PilotOut.STATE_F, None, False)
    b.tick(F, offer=16.0, ground=False)  # our own -12 V is what the pilot reads now
    b.tick(A, offer=16.0, ground=False)  # not even an unplug clears it while ground is lost
    assert fault(b.state) == "ground"
    b.tick(F, offer=16.0)  # ground back; the pilot still shows our F: through E
    assert b.mode() is Mode.E and b.cmd.pilot is PilotOut.STEADY
    b.tick(C, offer=16.0)
    assert b.mode() is Mode.C2 and session_start(b.state) == started
    b.tick(C, offer=16.0)
    assert b.cmd.contactor_closed


def test_ground_return_with_gfci_still_tripped_waits() -> None:
    b = charging()
    b.tick(C, offer=16.0, ground=False)
    b.tick(C, offer=16.0, gfci=True)
    assert b.mode() is Mode.GFCI_WAIT


# --- lockout ----------------------------------------------------------------------------------


def _locked() -> Bench:
    b = Bench()
    b.tick(A, at=0.1, feedback=True)
    b.tick(A, at=1.0, feedback=True)
    assert b.mode() is Mode.LOCKOUT
    return b


@pytest.mark.parametrize(
    "kw",
    [
        {"pilot": A},
        {"pilot": C, "offer": 32.0},
        {"pilot": B, "offer": 16.0, "gfci": True},
        {"pilot": None, "ground": False},
        {"pilot": C, "offer": 32.0, "feedback": False},
    ],
)
def test_lockout_ignores_everything_but_reset(kw: dict[str, object]) -> None:
    b = _locked()
    pilot = kw.pop("pilot")
    b.tick(pilot, at=1000.0, **kw)  # type: ignore[arg-type]
    assert b.mode() is Mode.LOCKOUT and b.cmd == PortCommands(PilotOut.STATE_F, None, False)


def test_lockout_reset_goes_back_to_a() -> None:
    b = _locked()
    b.tick(C, offer=16.0, reset=True, feedback=False)
    assert b.mode() is Mode.A and fault(b.state) is None
    assert b.cmd == PortCommands(PilotOut.STEADY, None, False)
    b.tick(C, offer=16.0)
    b.tick(C, offer=16.0)
    assert b.cmd.contactor_closed


def test_lockout_reset_is_an_edge_a_held_reset_resets_once() -> None:
    b = _locked()
    b.tick(A, reset=True)
    assert b.mode() is Mode.A
    b.run(A, b.now + 1.0, reset=True, feedback=True)  # weld again, reset held: stays locked
    assert b.mode() is Mode.LOCKOUT
    b.tick(A, reset=False, feedback=True)
    b.tick(A, reset=True, feedback=True)
    assert b.mode() is Mode.A


def test_reset_held_while_locking_out_must_be_released_first() -> None:
    b = Bench()
    b.tick(A, at=0.1, feedback=True, reset=True)
    b.tick(A, at=1.0, feedback=True, reset=True)
    assert b.mode() is Mode.LOCKOUT
    b.tick(A, at=2.0, reset=True)
    assert b.mode() is Mode.LOCKOUT
    b.tick(A, at=3.0)
    b.tick(A, at=4.0, reset=True)
    assert b.mode() is Mode.A


def test_weld_persisting_after_reset_locks_out_again() -> None:
    b = _locked()
    b.tick(A, at=2.0, reset=True, feedback=True)
    b.tick(A, at=2.1, feedback=True)
    b.tick(A, at=2.7, feedback=True)
    assert b.mode() is Mode.LOCKOUT


# --- sessions -------------------------------------------------------------------------------


def test_session_spans_b_c_pause_and_ends_on_a() -> None:
    b = Bench()
    b.tick(B, at=3.0)
    b.tick(C, at=4.0, offer=16.0)
    b.tick(C, at=5.0, offer=0.0)
    assert session_start(b.state) == 3.0
    b.tick(A, at=6.0)
    assert session_start(b.state) is None
    b.tick(B, at=7.0)
    assert session_start(b.state) == 7.0


def test_unplug_resets_the_gfci_count() -> None:
    b = _tripped(10.0)
    b.tick(C, at=10.0 + CFG.gfci_retry_delay_s, offer=16.0, gfci=True)
    b.tick(C, offer=16.0)
    assert b.state.gfci_trips == 1
    b.tick(A)
    assert b.state.gfci_trips == 0


# --- properties -----------------------------------------------------------------------------

_pilots = st.sampled_from([A, B, B, C, C, C, C, C, C, D, E, F, None])
_offers = st.one_of(
    st.sampled_from([0.0, 0.0, 5.9, 6.0, 16.0, 16.0, 32.0, 80.0, 100.0, math.nan]),
    st.floats(0.0, 90.0),
)


def _rare(p: int) -> st.SearchStrategy[bool]:
    """True about once in ``p`` draws."""
    return st.integers(1, p).map(lambda n: n == 1)


_inputs = st.builds(
    PortInputs,
    pilot=_pilots,
    diode_ok=st.sampled_from([None, False] + [True] * 18),
    contactor_closed=st.booleans(),
    gfci_tripped=_rare(30),
    ground_ok=_rare(30).map(lambda lost: not lost),
    metered_a=st.one_of(st.none(), st.floats(0.0, 100.0)),
    offer_a=_offers,
    reset=_rare(10),
)
# Mostly ticks with the feedback an ideal contactor gives (so charging really happens), some
# with random feedback (welds, failures to close); each input is held for ``repeat`` ticks,
# as a real pilot holds its state, with steps from a tick to a long idle jump.
_dts = st.one_of(st.sampled_from([0.1, 0.1, 0.5, 1.0, 2.0, 5.0]), st.floats(0.001, 1000.0))
_ticks = st.lists(
    st.tuples(_inputs, _rare(8).map(lambda odd: not odd), _dts, st.integers(1, 4)),
    min_size=1,
    max_size=30,
)
_SMALL = PortConfig(gfci_retry_delay_s=5.0, gfci_max_retries=2)


def _expand(
    ticks: list[tuple[PortInputs, bool, float, int]],
) -> list[tuple[PortInputs, bool, float]]:
    return [(inputs, ideal, dt) for inputs, ideal, dt, n in ticks for _ in range(n)]


def _follow(inputs: PortInputs, state: PortState, ideal: bool) -> PortInputs:
    if not ideal:
        return inputs
    diode = inputs.diode_ok if state.pilot_out is PilotOut.PWM else None
    return PortInputs(
        pilot=inputs.pilot,
        diode_ok=diode,
        contactor_closed=state.contactor_closed,
        gfci_tripped=inputs.gfci_tripped,
        ground_ok=inputs.ground_ok,
        metered_a=inputs.metered_a,
        offer_a=inputs.offer_a,
        reset=inputs.reset,
    )


@settings(max_examples=300, deadline=None)
@given(ticks=_ticks, config=st.sampled_from([CFG, _SMALL]))
def test_contactor_only_ever_closed_in_c_without_fault(
    ticks: list[tuple[PortInputs, bool, float, int]], config: PortConfig
) -> None:
    state = initial_state(0.0)
    now = 0.0
    for raw, ideal, dt in _expand(ticks):
        now += dt
        inputs = _follow(raw, state, ideal)
        prev = state
        state, cmd = step(state, inputs, now, config)
        next_deadline(state, config)
        assert (cmd.pilot is PilotOut.PWM) == (cmd.duty_pct is not None)
        if cmd.duty_pct is not None:
            assert 10.0 <= cmd.duty_pct <= 96.0
        if state.mode is Mode.LOCKOUT:
            assert cmd.pilot is PilotOut.STATE_F and not cmd.contactor_closed
        if not cmd.contactor_closed:
            continue
        # Closed at all: only with the EV in C, no fault, no lockout.
        assert inputs.pilot is PilotState.C
        assert state.mode in (Mode.C1, Mode.C2) and fault(state) is None
        assert inputs.ground_ok and not inputs.gfci_tripped
        if not prev.contactor_closed:
            # Newly closed: the PWM is on, was on when the pilot was sampled, diode checked.
            assert cmd.pilot is PilotOut.PWM and prev.pilot_out is PilotOut.PWM
            assert inputs.diode_ok is True
        if cmd.pilot is not PilotOut.PWM:
            # Kept closed with PWM off: only the pause grace, shorter than 6 s.
            assert prev.contactor_closed and state.pwm_off_in_c_since is not None
            assert now - state.pwm_off_in_c_since < config.open_pwm_off_in_c_s


@settings(max_examples=300, deadline=None)
@given(ticks=_ticks, frac=st.floats(0.0, 0.999), config=st.sampled_from([CFG, _SMALL]))
def test_nothing_happens_before_next_deadline_with_unchanged_inputs(
    ticks: list[tuple[PortInputs, bool, float, int]], frac: float, config: PortConfig
) -> None:
    state = initial_state(0.0)
    now = 0.0
    for raw, ideal, dt in _expand(ticks):
        now += dt
        state, _ = step(state, _follow(raw, state, ideal), now, config)
    # The last inputs persist: ideal hardware settles on the last commands (feedback, diode),
    # a faulty one keeps reading what it read. Tick until the commands hold still.
    raw, ideal, _, _ = ticks[-1]
    cmd = None
    for _ in range(5):
        now += TICK
        state, new_cmd = step(state, _follow(raw, state, ideal), now, config)
        if new_cmd == cmd:
            break
        cmd = new_cmd
    inputs = _follow(raw, state, ideal)
    deadline = next_deadline(state, config)
    if deadline is not None and deadline <= now:
        return  # "on the next tick"
    later = now + 3600.0 if deadline is None else now + frac * (deadline - now)
    if later <= now or (deadline is not None and later >= deadline):
        return  # float rounding left no instant strictly between
    again, cmd2 = step(state, inputs, later, config)
    assert cmd2 == cmd
    assert again.mode is state.mode and fault(again) == fault(state)
