"""Sequencing: the safe-offer invariant (docs/design.md) on every step."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.allocate import PortRequest, allocate
from controller.limits import LimitTree
from controller.model import GroupSpec, Phases, PortSpec, SiteSpec
from controller.sequence import Sequencer, floor_dA

MINS = {"a": 8.0, "b": 8.0}


def jumper() -> LimitTree:
    # CT4000 with the jumper: one 40 A breaker -> 32 A for both ports (the guide).
    spec = SiteSpec(
        "st", (GroupSpec("g", breaker_a=40),), (PortSpec("a", "g", 30), PortSpec("b", "g", 30))
    )
    return LimitTree.from_spec(spec)


def fits(tree: LimitTree, effective: dict[str, float]) -> bool:
    limits = tree.limits()
    return all(load <= limits[k] + 1e-9 for k, load in tree.loads(effective).items())


def test_floor_dA_never_rounds_up() -> None:
    assert floor_dA(16.09) == 16.0
    assert floor_dA(16.1) == 16.1
    assert floor_dA(8.0) == 8.0
    assert floor_dA(-1.0) == 0.0


def test_first_offers_go_out_when_they_fit() -> None:
    tree = jumper()
    seq = Sequencer()
    r = seq.step(0.0, tree, {"a": 16.0, "b": 16.0}, {}, MINS)
    assert r.offers == {"a": 16.0, "b": 16.0}
    assert r.held == frozenset()


def test_decrease_goes_out_at_once_and_counts_for_the_window() -> None:
    tree = jumper()
    seq = Sequencer(window_s=5.0)
    seq.step(0.0, tree, {"a": 30.0}, {}, MINS)
    r = seq.step(10.0, tree, {"a": 16.0}, {"a": None}, MINS)
    assert r.offers["a"] == 16.0
    assert r.effective["a"] == 30.0  # the vehicle may still follow 30 for 5 s
    assert seq.deadline(10.0) == 15.0
    r = seq.step(14.9, tree, {"a": 16.0}, {"a": None}, MINS)
    assert r.effective["a"] == 30.0  # a stale meter never shows it came down
    r = seq.step(15.0, tree, {"a": 16.0}, {"a": None}, MINS)
    assert r.effective["a"] == 16.0
    assert seq.deadline(15.0) is None


def test_increase_waits_for_the_decrease_it_depends_on() -> None:
    tree = jumper()
    seq = Sequencer(window_s=5.0)
    seq.step(0.0, tree, {"a": 30.0}, {}, MINS)
    # b plugs in: a must come down to 16 before b may start.
    r = seq.step(10.0, tree, {"a": 16.0, "b": 16.0}, {"a": 30.0, "b": 0.0}, MINS)
    assert r.offers == {"a": 16.0, "b": 0.0}  # 2 A of room: under b's minimum, nothing
    assert r.held == frozenset({"b"})
    assert fits(tree, r.effective)
    # The meter shows a at 16: the old offer stops counting, b starts.
    r = seq.step(12.0, tree, {"a": 16.0, "b": 16.0}, {"a": 16.0, "b": 0.0}, MINS)
    assert r.offers == {"a": 16.0, "b": 16.0}
    assert r.held == frozenset()


def test_increase_gets_only_the_headroom_that_exists() -> None:
    tree = jumper()
    seq = Sequencer(window_s=5.0)
    seq.step(0.0, tree, {"a": 20.0, "b": 12.0}, {}, MINS)
    r = seq.step(1.0, tree, {"a": 16.0, "b": 16.0}, {"a": 20.0, "b": 12.0}, MINS)
    # a still counts 20 until it follows: b may rise to 12 only (32 - 20).
    assert r.offers == {"a": 16.0, "b": 12.0}
    r = seq.step(6.0, tree, {"a": 16.0, "b": 16.0}, {"a": 20.0, "b": 12.0}, MINS)
    assert r.offers == {"a": 16.0, "b": 16.0}  # the window passed


def test_tolerance_confirms_but_what_may_be_drawn_still_counts() -> None:
    """A confirming reading may be low by the meter's tolerance: the reading plus the
    tolerance keeps counting (never less than the new offer) until the window passes."""
    tree = jumper()
    seq = Sequencer(window_s=5.0, tolerance_a=0.5)
    seq.step(0.0, tree, {"a": 30.0}, {}, MINS)
    r = seq.step(1.0, tree, {"a": 16.0}, {"a": 16.3}, MINS)
    assert r.effective["a"] == pytest.approx(16.8)
    r = seq.step(2.0, tree, {"a": 16.0}, {"a": 16.6}, MINS)  # outside the tolerance
    assert r.effective["a"] == pytest.approx(16.8)
    r = seq.step(3.0, tree, {"a": 16.0}, {"a": 15.0}, MINS)
    assert r.effective["a"] == 16.0
    r = seq.step(6.1, tree, {"a": 16.0}, {"a": 16.3}, MINS)  # the window has passed
    assert r.effective["a"] == 16.0


def test_a_zero_reading_confirms_completely() -> None:
    tree = jumper()
    seq = Sequencer(window_s=5.0, tolerance_a=0.5)
    seq.step(0.0, tree, {"a": 16.0}, {}, MINS)
    r = seq.step(1.0, tree, {"a": 0.0}, {"a": 0.0}, MINS)
    assert r.effective["a"] == 0.0


def test_meter_above_the_new_offer_does_not_confirm() -> None:
    tree = jumper()
    seq = Sequencer(window_s=5.0)
    seq.step(0.0, tree, {"a": 30.0}, {}, MINS)
    r = seq.step(1.0, tree, {"a": 16.0}, {"a": 25.0}, MINS)
    assert r.effective["a"] == 30.0


def test_resume_needs_its_minimum_or_nothing() -> None:
    tree = jumper()
    seq = Sequencer(window_s=5.0)
    seq.step(0.0, tree, {"a": 25.0}, {}, MINS)
    r = seq.step(1.0, tree, {"a": 25.0, "b": 7.0}, {"a": 25.0}, {"a": 8.0, "b": 6.0})
    assert r.offers["b"] == 7.0  # 7 A fits and b's minimum is 6
    seq2 = Sequencer(window_s=5.0)
    seq2.step(0.0, tree, {"a": 30.0}, {}, MINS)
    r = seq2.step(1.0, tree, {"a": 24.0, "b": 8.0}, {"a": 30.0}, MINS)
    assert r.offers["b"] == 0.0  # 2 A of room is not 8
    assert r.held == frozenset({"b"})


def test_lowest_offers_rise_first() -> None:
    tree = jumper()
    seq = Sequencer(window_s=5.0)
    seq.step(0.0, tree, {"a": 20.0, "b": 10.0}, {}, MINS)
    seq.step(1.0, tree, {"a": 14.0, "b": 10.0}, {"a": 20.0}, MINS)  # a counts 20 until 6.0
    r = seq.step(2.0, tree, {"a": 16.0, "b": 16.0}, {"a": 20.0, "b": 10.0}, MINS)
    # b (lower) rises first into the 12 A a's old 20 leaves; a may go back up within its
    # own effective 20 at no cost.
    assert r.offers == {"a": 16.0, "b": 12.0}
    assert fits(tree, r.effective)


def test_phasor_limits_on_a_three_phase_panel() -> None:
    # Two 208 V ports on L1-L2 and L2-L3 of a 3-phase panel: line 2 carries the phasor sum.
    spec = SiteSpec(
        "site",
        (GroupSpec("panel", breaker_a=50, phases=3),),
        (
            PortSpec("a", "panel", 40, phases=Phases.L1_L2),
            PortSpec("b", "panel", 40, phases=Phases.L2_L3),
        ),
    )
    tree = LimitTree.from_spec(spec)
    seq = Sequencer(window_s=5.0)
    r = seq.step(0.0, tree, {"a": 40.0, "b": 40.0}, {}, MINS)
    assert fits(tree, r.effective)
    assert r.held  # 40 A each would be 69 A on L2; the 40 A limit holds one back


@st.composite
def _schedules(draw: st.DrawFn) -> list[tuple[float, dict[str, float], dict[str, float | None]]]:
    steps = []
    t = 0.0
    for _ in range(draw(st.integers(1, 30))):
        t += draw(st.floats(0.1, 4.0))
        wants = {p: draw(st.sampled_from([0.0, 4.0, 10.0, 16.0, 30.0])) for p in ("a", "b", "c")}
        meters: dict[str, float | None] = {
            p: draw(st.one_of(st.none(), st.floats(0.0, 32.0))) for p in ("a", "b", "c")
        }
        steps.append((t, wants, meters))
    return steps


@settings(max_examples=60, deadline=None)
@given(_schedules())
def test_effective_offers_never_exceed_any_limit(
    steps: list[tuple[float, dict[str, float], dict[str, float | None]]],
) -> None:
    spec = SiteSpec(
        "st",
        (GroupSpec("site", breaker_a=50), GroupSpec("c1", parent="site", breaker_a=40)),
        (PortSpec("a", "c1", 30), PortSpec("b", "c1", 30), PortSpec("c", "site", 32)),
    )
    tree = LimitTree.from_spec(spec)
    mins = {"a": 8.0, "b": 8.0, "c": 8.0}
    seq = Sequencer(window_s=5.0, tolerance_a=0.5)
    for t, wants, meters in steps:
        reqs = {p: PortRequest(w, 8.0) for p, w in wants.items() if w > 0}
        targets = allocate(tree, reqs).amps
        r = seq.step(t, tree, targets, meters, mins)
        assert fits(tree, r.effective)
        for p, offer in r.offers.items():
            assert offer == 0.0 or offer >= 8.0
            assert offer <= targets.get(p, 0.0)
            assert r.effective[p] >= offer


def test_a_reading_taken_before_a_decrease_does_not_confirm_it() -> None:
    # A meter that stopped answering on a low reading (still within its stale time) must not
    # let the sequencer believe the vehicle followed a decrease it never saw.
    tree = jumper()
    seq = Sequencer(window_s=5.0, tolerance_a=0.5)
    seq.step(0.0, tree, {"a": 30.0}, {"a": None, "b": None}, MINS)
    # t=10: a is lowered to 16 A; its meter's last reading (3 A) was taken at t=9.
    r = seq.step(10.0, tree, {"a": 16.0, "b": 16.0}, {"a": 3.0, "b": None}, MINS, {"a": 9.0})
    assert r.effective["a"] == 30.0  # still counts the 30 A it may be drawing
    assert r.offers["b"] == 0.0  # 2 A of room: below b's 8 A minimum
    # The same low value read after the decrease confirms it.
    r = seq.step(10.5, tree, {"a": 16.0, "b": 16.0}, {"a": 3.0, "b": None}, MINS, {"a": 10.5})
    assert r.effective["a"] == 16.0
    assert r.offers["b"] == 16.0
