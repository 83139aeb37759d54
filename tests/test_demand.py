"""Demand learning from the port meter (docs/design.md "Electrical rules": unused current)."""

from __future__ import annotations

import pytest

from controller.demand import DemandSettings, DemandTracker

CAP = 30.0
MIN = 8.0


def tracker(**kw: float) -> DemandTracker:
    # The numbers below are worked with a 2 A headroom and a 1 A probe band.
    kw.setdefault("headroom_a", 2.0)
    kw.setdefault("near_a", 1.0)
    return DemandTracker(DemandSettings(**kw))


def feed(
    d: DemandTracker,
    t0: float,
    t1: float,
    *,
    metered: float | None,
    offer: float,
    requesting: bool = True,
    step: float = 1.0,
) -> float:
    """Observe every ``step`` seconds from t0 to t1 inclusive; returns the last time."""
    t = t0
    while t <= t1 + 1e-9:
        d.observe(
            t, requesting=requesting, metered=metered, offer=offer, effective=offer, min_a=MIN
        )
        t += step
    return t - step


def test_full_draw_keeps_the_cap() -> None:
    d = tracker()
    feed(d, 0, 600, metered=16.0, offer=16.0)
    assert d.want(CAP, MIN) == CAP
    assert d.reason is None
    assert d.deadline() is None


def test_drawing_well_under_the_offer_lowers_after_the_window() -> None:
    d = tracker()
    feed(d, 0, 59, metered=10.0, offer=16.0)
    assert d.want(CAP, MIN) == CAP  # not yet: 59 s
    assert d.deadline() == 60.0
    feed(d, 60, 60, metered=10.0, offer=16.0)
    assert d.want(CAP, MIN) == 12.0  # its draw + 2 A
    assert d.reason == "demand"
    assert d.deadline() == 660.0  # the periodic probe


def test_lowered_to_the_highest_draw_in_the_window() -> None:
    d = tracker()
    feed(d, 0, 30, metered=9.0, offer=20.0)
    feed(d, 31, 60, metered=11.5, offer=20.0)
    assert d.want(CAP, MIN) == 13.5


def test_margin_is_relative_for_large_offers() -> None:
    # Under offer - max(2 A, 15 %): at 30 A the line is 25.5 A; 26 A is not "well below".
    d = tracker()
    feed(d, 0, 120, metered=26.0, offer=30.0)
    assert d.want(CAP, MIN) == CAP
    feed(d, 121, 200, metered=25.0, offer=30.0)
    assert d.want(CAP, MIN) == 27.0


def test_never_lowered_under_the_minimum() -> None:
    d = tracker()
    feed(d, 0, 60, metered=3.0, offer=16.0)
    assert d.want(CAP, MIN) == MIN


def test_window_restarts_when_the_offer_rises() -> None:
    d = tracker()
    feed(d, 0, 50, metered=10.0, offer=16.0)
    feed(d, 51, 100, metered=10.0, offer=24.0)  # a larger offer: a fresh minute to take it
    assert d.want(CAP, MIN) == CAP
    feed(d, 101, 111, metered=10.0, offer=24.0)
    assert d.want(CAP, MIN) == 12.0


def test_stale_meter_counts_as_full_draw() -> None:
    d = tracker()
    feed(d, 0, 1000, metered=None, offer=16.0)
    assert d.want(CAP, MIN) == CAP
    assert not d.finished
    # ... and a lowered vehicle whose meter goes stale is probed back up.
    feed(d, 1001, 1061, metered=10.0, offer=16.0)
    assert d.want(CAP, MIN) == 12.0
    feed(d, 1062, 1062, metered=None, offer=12.0)
    assert d.want(CAP, MIN) == CAP


def test_probe_at_once_when_drawing_near_the_lowered_offer() -> None:
    d = tracker()
    feed(d, 0, 60, metered=10.0, offer=16.0)
    assert d.want(CAP, MIN) == 12.0
    feed(d, 61, 100, metered=10.5, offer=12.0)  # noise: not near (within 1 A)
    assert d.want(CAP, MIN) == 12.0
    feed(d, 101, 101, metered=11.2, offer=12.0)
    assert d.want(CAP, MIN) == CAP
    assert d.reason is None


def test_probe_periodically() -> None:
    d = tracker(probe_interval_s=600.0)
    feed(d, 0, 60, metered=10.0, offer=16.0)
    feed(d, 61, 659, metered=10.0, offer=12.0)
    assert d.want(CAP, MIN) == 12.0
    feed(d, 660, 660, metered=10.0, offer=12.0)
    assert d.want(CAP, MIN) == CAP
    # Still drawing 10 at the larger offer: lowered again a window later.
    feed(d, 661, 721, metered=10.0, offer=16.0)
    assert d.want(CAP, MIN) == 12.0


def test_finished_after_two_minutes_near_zero() -> None:
    d = tracker()
    feed(d, 0, 119, metered=0.3, offer=16.0)
    assert not d.finished
    assert d.want(CAP, MIN) == MIN  # lowered to its minimum after the demand window already
    feed(d, 120, 120, metered=0.3, offer=8.0)
    assert d.finished
    assert d.reason == "finished"
    assert d.want(CAP, MIN) == MIN  # keeps its minimum so that it can resume
    feed(d, 121, 5000, metered=0.0, offer=8.0)
    assert d.finished  # no periodic probes for a finished vehicle
    assert d.deadline() is None


def test_finished_vehicle_ramps_back_up_when_it_draws() -> None:
    d = tracker()
    feed(d, 0, 120, metered=0.0, offer=16.0)
    assert d.finished
    feed(d, 121, 121, metered=4.0, offer=8.0)
    assert not d.finished
    assert d.want(CAP, MIN) == MIN
    feed(d, 122, 122, metered=7.5, offer=8.0)  # takes its minimum: probe at once
    assert d.want(CAP, MIN) == CAP


def test_paused_vehicle_is_never_finished() -> None:
    # Offer 0 (PWM off, round robin): drawing nothing says nothing.
    d = tracker()
    feed(d, 0, 1000, metered=0.0, offer=0.0)
    assert not d.finished
    assert d.want(CAP, MIN) == CAP


def test_leaving_state_c_forgets() -> None:
    d = tracker()
    feed(d, 0, 120, metered=0.0, offer=16.0)
    assert d.finished
    feed(d, 121, 121, metered=0.0, offer=8.0, requesting=False)
    assert not d.finished
    assert d.want(CAP, MIN) == CAP
    assert d.deadline() is None


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="near_a"):
        DemandSettings(headroom_a=1.0, near_a=1.0)
    with pytest.raises(ValueError, match="low_window_s"):
        DemandSettings(low_window_s=-1.0)


def test_arm_starts_windows_when_the_offer_goes_out() -> None:
    # The offer of 16 goes out at t=5 to a vehicle already drawing 10: the demand window runs
    # from 5, whenever the next reading comes (what makes next_deadline exact).
    d = tracker()
    d.observe(5.0, requesting=True, metered=10.0, offer=0.0, effective=0.0, min_a=MIN)
    assert d.deadline() is None
    d.arm(5.0, requesting=True, metered=10.0, offer=16.0, effective=16.0, min_a=MIN)
    assert d.deadline() == 65.0
    assert d.want(CAP, MIN) == CAP  # arming never acts
    feed(d, 65, 65, metered=10.0, offer=16.0)
    assert d.want(CAP, MIN) == 12.0


def test_arm_schedules_a_reaction_that_depends_on_the_new_offer() -> None:
    # A finished vehicle, paused (offer 0), whose meter goes stale, is offered its minimum:
    # a stale meter counts as drawing the whole offer, so it is probed once it has seen it.
    d = tracker(react_s=1.0)
    feed(d, 0, 120, metered=0.0, offer=16.0)
    assert d.finished
    d.observe(200.0, requesting=True, metered=None, offer=0.0, effective=0.0, min_a=MIN)
    d.arm(200.0, requesting=True, metered=None, offer=8.0, effective=8.0, min_a=MIN)
    assert d.finished  # not yet: it has not seen the offer
    assert d.deadline() == 201.0
    d.observe(201.0, requesting=True, metered=None, offer=8.0, effective=8.0, min_a=MIN)
    assert not d.finished
    assert d.want(CAP, MIN) == CAP
    assert d.deadline() is None


def test_defaults_lower_to_the_draw_plus_1_a() -> None:
    d = DemandTracker(DemandSettings())
    feed(d, 0, 60, metered=10.0, offer=16.0)
    assert d.want(CAP, MIN) == 11.0
    feed(d, 61, 100, metered=10.4, offer=11.0)  # ripple: not within 0.5 A
    assert d.want(CAP, MIN) == 11.0
    feed(d, 101, 101, metered=10.6, offer=11.0)
    assert d.want(CAP, MIN) == CAP


def test_a_probe_is_judged_quickly_and_failed_probes_back_off() -> None:
    d = tracker()
    feed(d, 0, 60, metered=10.0, offer=16.0)  # lowered to 12 A, next probe at 660 s
    assert d.want(CAP, MIN) == 12.0 and d.deadline() == 660.0
    feed(d, 61, 660, metered=10.0, offer=12.0)  # the probe is due: the full want back
    assert d.want(CAP, MIN) == CAP
    # It still takes 10 A of a 16 A offer: lowered again after the short probe window
    # (15 s, not the 60 s demand window), and the next probe waits twice as long.
    t = feed(d, 661, 661 + 15, metered=10.0, offer=16.0)
    assert d.want(CAP, MIN) == 12.0
    assert d.deadline() == t + 1200.0
    feed(d, t + 1, t + 1200, metered=10.0, offer=12.0)
    t = feed(d, t + 1201, t + 1201 + 15, metered=10.0, offer=16.0)
    assert d.deadline() == t + 2400.0
    # Capped at the longest interval.
    for _ in range(4):
        feed(d, t + 1, d.deadline() or 0.0, metered=10.0, offer=12.0)
        t = feed(d, (d.deadline() or 0.0) + 1, (d.deadline() or 0.0) + 16, metered=10.0, offer=16.0)
    assert d.deadline() == t + 3600.0


def test_a_probe_that_finds_demand_resets_the_backoff() -> None:
    d = tracker()
    feed(d, 0, 60, metered=10.0, offer=16.0)
    feed(d, 61, 660, metered=10.0, offer=12.0)
    t = feed(d, 661, 661 + 15, metered=10.0, offer=16.0)  # failed once: next in 1200 s
    feed(d, t + 1, t + 1200, metered=10.0, offer=12.0)
    # This time the car takes the larger offer (its battery warmed up): not lowered, and the
    # next lowering is followed by the base interval again.
    t = feed(d, t + 1201, t + 1300, metered=16.0, offer=16.0)
    assert d.want(CAP, MIN) == CAP and not d.probing and d.failed_probes == 0
    t = feed(d, t + 1, t + 61, metered=10.0, offer=16.0)
    assert d.want(CAP, MIN) == 12.0 and d.deadline() == t + 600.0
