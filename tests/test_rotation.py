"""Round robin, leftover minimums and wake-up (docs/design.md "Electrical rules")."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from controller.allocate import Allocation, PortRequest, allocate
from controller.limits import LimitTree
from controller.model import GroupSpec, Policy, PortSpec, SiteSpec
from controller.rotation import Leftover, Rotation, RotationSettings, WakeSettings, WakeUp


def circuit(n: int, breaker_a: float = 100.0) -> LimitTree:
    # The guide's circuit sharing: ports on one 100 A circuit -> 80 A continuous.
    ports = tuple(PortSpec(f"p{i:02d}", "c", 32) for i in range(n))
    return LimitTree.from_spec(SiteSpec("s", (GroupSpec("c", breaker_a=breaker_a),), ports))


def requests(n: int, want: float = 32.0) -> dict[str, PortRequest]:
    return {f"p{i:02d}": PortRequest(want, 8.0, since=float(i)) for i in range(n)}


def runner(tree: LimitTree, policy: Policy = Policy.EQUAL):  # type: ignore[no-untyped-def]
    def run(r: Mapping[str, PortRequest]) -> Allocation:
        return allocate(tree, r, policy)

    return run


def admitted(a: Allocation) -> set[str]:
    return {p for p, x in a.amps.items() if x > 0}


def test_all_fit_no_rotation() -> None:
    tree = circuit(4)
    rot = Rotation()
    a = rot.admit(0.0, requests(4), runner(tree))
    assert admitted(a) == set(requests(4))
    assert not rot.active
    assert rot.deadline(0.0) is None


def test_twelve_on_80_a_ten_charge_two_wait_then_rotate() -> None:
    tree = circuit(12)
    rot = Rotation(RotationSettings(period_s=900.0))
    reqs = requests(12)
    a = rot.admit(0.0, reqs, runner(tree))
    assert len(admitted(a)) == 10
    assert all(x == 8.0 for x in a.amps.values() if x > 0)
    first_waiting = set(reqs) - admitted(a)
    assert first_waiting == {"p10", "p11"}  # the latest sessions wait first (no one served)
    assert rot.deadline(0.0) == 900.0
    rot.record(0.0, dict.fromkeys(admitted(a), 8.0))
    # Nothing changes between re-ranks.
    a = rot.admit(450.0, reqs, runner(tree))
    assert set(reqs) - admitted(a) == first_waiting
    a = rot.admit(900.0, reqs, runner(tree))
    assert first_waiting <= admitted(a)  # the least served come in
    assert len(admitted(a)) == 10
    assert set(reqs) - admitted(a) == {"p08", "p09"}  # equal service: latest sessions wait
    assert rot.deadline(900.0) == 1800.0


def test_served_accrues_only_while_someone_waits() -> None:
    tree = circuit(2)
    rot = Rotation()
    rot.admit(0.0, requests(2), runner(tree))
    rot.record(0.0, {"p00": 16.0, "p01": 16.0})
    rot.admit(100.0, requests(2), runner(tree))
    assert rot.served == {"p00": 0.0, "p01": 0.0}


def test_newcomer_starts_at_least_served_and_waits_its_turn() -> None:
    tree = circuit(12)
    rot = Rotation(RotationSettings(period_s=900.0))
    reqs = requests(11)
    a = rot.admit(0.0, reqs, runner(tree))
    rot.record(0.0, {p: x for p, x in a.amps.items()})
    assert len(admitted(a)) == 10
    more = dict(reqs)
    more["p11"] = PortRequest(32.0, 8.0, since=500.0)
    a = rot.admit(500.0, more, runner(tree))
    assert a.amps.get("p11", 0.0) == 0.0  # mid-period it goes last
    assert rot.served["p11"] == 0.0  # the least served (the waiting p10)
    assert rot.served["p00"] == 8.0 * 500.0


def test_resume_between_rerank_needs_margin_and_hold() -> None:
    # 3 ports on a limit that moves: 24 A fits three at 8; 23 A only two.
    spec = SiteSpec(
        "s",
        (GroupSpec("c", breaker_a=40),),
        tuple(PortSpec(f"p{i:02d}", "c", 32) for i in range(3)),
    )
    tree = LimitTree.from_spec(spec)
    rot = Rotation(RotationSettings(period_s=900.0, resume_margin_a=1.0, resume_hold_s=60.0))
    reqs = requests(3)
    a = rot.admit(0.0, reqs, runner(tree.with_limits({"c": 23.0})))
    assert admitted(a) == {"p00", "p01"}
    # Room for exactly 8 A again: not enough (margin), however long.
    for t in (10.0, 100.0, 200.0):
        a = rot.admit(t, reqs, runner(tree.with_limits({"c": 24.0})))
        assert "p02" not in admitted(a)
    # Room for 8 + 1 A: it resumes after holding for 60 s.
    a = rot.admit(300.0, reqs, runner(tree.with_limits({"c": 25.0})))
    assert "p02" not in admitted(a)
    assert rot.deadline(300.0) == 360.0
    a = rot.admit(359.0, reqs, runner(tree.with_limits({"c": 25.0})))
    assert "p02" not in admitted(a)
    a = rot.admit(360.0, reqs, runner(tree.with_limits({"c": 25.0})))
    assert admitted(a) == set(reqs)
    assert not rot.active


def test_hold_restarts_when_room_disappears() -> None:
    spec = SiteSpec(
        "s",
        (GroupSpec("c", breaker_a=40),),
        tuple(PortSpec(f"p{i:02d}", "c", 32) for i in range(3)),
    )
    tree = LimitTree.from_spec(spec)
    rot = Rotation(RotationSettings(resume_margin_a=1.0, resume_hold_s=60.0))
    reqs = requests(3)
    rot.admit(0.0, reqs, runner(tree.with_limits({"c": 23.0})))
    rot.admit(10.0, reqs, runner(tree.with_limits({"c": 25.0})))
    rot.admit(40.0, reqs, runner(tree.with_limits({"c": 23.0})))  # flap
    a = rot.admit(71.0, reqs, runner(tree.with_limits({"c": 25.0})))
    assert "p02" not in admitted(a)
    a = rot.admit(131.0, reqs, runner(tree.with_limits({"c": 25.0})))
    assert "p02" in admitted(a)


def test_pause_is_immediate() -> None:
    tree = circuit(3, breaker_a=40)
    rot = Rotation()
    a = rot.admit(0.0, requests(3), runner(tree))
    assert len(admitted(a)) == 3
    a = rot.admit(1.0, requests(3), runner(tree.with_limits({"c": 20.0})))
    assert len(admitted(a)) == 2


def test_fcfs_keeps_session_order() -> None:
    tree = circuit(12)
    rot = Rotation(RotationSettings(period_s=900.0))
    reqs = requests(12)
    run = runner(tree, Policy.FCFS)
    a = rot.admit(0.0, reqs, run, fcfs=True)
    waiting = set(reqs) - admitted(a)
    rot.record(0.0, {p: x for p, x in a.amps.items()})
    a = rot.admit(900.0, reqs, run, fcfs=True)
    assert set(reqs) - admitted(a) == waiting  # no rotation: latecomers keep waiting


def test_margin_never_above_the_cap() -> None:
    spec = SiteSpec(
        "s",
        (GroupSpec("c", breaker_a=20),),
        (PortSpec("p00", "c", 16), PortSpec("p01", "c", 8)),
    )
    tree = LimitTree.from_spec(spec)
    rot = Rotation(RotationSettings(resume_hold_s=0.0))
    reqs = {"p00": PortRequest(16, 8.0, since=0), "p01": PortRequest(8, 8.0, since=1)}
    a = rot.admit(0.0, reqs, runner(tree.with_limits({"c": 10.0})))
    assert admitted(a) == {"p00"}
    # p01's cap is 8: its resume floor stays 8 (allocate would refuse a floor above the cap).
    a = rot.admit(1.0, reqs, runner(tree), caps={"p00": 16.0, "p01": 8.0})
    assert admitted(a) == {"p00", "p01"}


# --- leftover ---------------------------------------------------------------------------


def test_leftover_gets_its_minimum_only_from_what_is_left() -> None:
    tree = circuit(2, breaker_a=40)
    left = Leftover(RotationSettings(resume_margin_a=1.0, resume_hold_s=60.0))
    # The charging port takes 30: 2 A left, not enough for 8.
    out = left.admit(0.0, [("p01", 8.0)], {"p00": 30.0}, tree.fits, offered={"p01": True}, caps={})
    assert out == {"p01": 0.0}
    # The charging port takes 20: the finished one keeps its 8 (it has an offer: no hold).
    out = left.admit(1.0, [("p01", 8.0)], {"p00": 20.0}, tree.fits, offered={"p01": True}, caps={})
    assert out == {"p01": 8.0}


def test_leftover_resumes_with_margin_and_hold() -> None:
    tree = circuit(2, breaker_a=40)
    left = Leftover(RotationSettings(resume_margin_a=1.0, resume_hold_s=60.0))

    def admit(t: float, charging: float) -> dict[str, float]:
        return left.admit(
            t, [("p01", 8.0)], {"p00": charging}, tree.fits, offered={}, caps={"p01": 32.0}
        )

    assert admit(0.0, 24.0) == {"p01": 0.0}  # 8 fits, 8 + 1 (margin) does not
    assert admit(1.0, 23.0) == {"p01": 0.0}  # 9 fits: the hold starts
    assert left.deadline(1.0) == 61.0
    assert admit(60.0, 23.0) == {"p01": 0.0}
    assert admit(61.0, 23.0) == {"p01": 8.0}


# --- wake-up ----------------------------------------------------------------------------


def _tick(w: WakeUp, t: float, *, requesting: bool = False) -> None:
    w.observe(t, requesting=requesting)


def test_wake_up_interrupts_then_gives_up() -> None:
    s = WakeSettings(timeout_s=30.0, off_s=3.0, attempts=3, retry_s=1800.0)
    w = WakeUp(s)
    w.record_offer(0.0, 0.0, 8.0, requesting=False)  # PWM comes back on
    assert w.watching
    assert w.deadline() == 30.0
    t = 0.0
    for attempt in range(1, 4):
        t += 30.0
        _tick(w, t)
        assert w.attempts == attempt
        assert w.interrupting(t)
        assert w.deadline() == t + 3.0
        w.record_offer(t, 8.0, 0.0, requesting=False)
        t += 3.0
        _tick(w, t)
        assert not w.interrupting(t)
        w.record_offer(t, 0.0, 8.0, requesting=False)  # on again
    t += 30.0
    _tick(w, t)
    assert w.not_responding
    assert w.deadline() == t + 1800.0
    # After the retry interval: one plain offer, no more interruptions.
    _tick(w, t + 1800.0)
    assert not w.not_responding
    w.record_offer(t + 1800.0, 0.0, 8.0, requesting=False)
    _tick(w, t + 1830.0)
    assert w.not_responding
    assert not w.interrupting(t + 1830.0)


def test_wake_up_resumed_vehicle_is_not_watched() -> None:
    w = WakeUp(WakeSettings(timeout_s=30.0))
    w.record_offer(0.0, 0.0, 8.0, requesting=False)
    _tick(w, 5.0, requesting=True)
    assert not w.watching
    _tick(w, 100.0, requesting=True)
    assert w.attempts == 0
    assert w.deadline() is None


def test_wake_up_going_to_c_on_its_own_ends_not_responding() -> None:
    w = WakeUp(WakeSettings(timeout_s=30.0, attempts=0))
    w.record_offer(0.0, 0.0, 8.0, requesting=False)
    _tick(w, 30.0)
    assert w.not_responding
    _tick(w, 100.0, requesting=True)
    assert not w.not_responding
    assert w.attempts == 0


def test_wake_up_pwm_off_stops_watching() -> None:
    w = WakeUp(WakeSettings(timeout_s=30.0))
    w.record_offer(0.0, 0.0, 8.0, requesting=False)
    w.record_offer(10.0, 8.0, 0.0, requesting=False)  # paused again before the timeout
    _tick(w, 40.0)
    assert w.attempts == 0


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        RotationSettings(period_s=0.0)
    with pytest.raises(ValueError):
        WakeSettings(attempts=-1)
