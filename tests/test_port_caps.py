"""Per-port caps on a limit tree (remote limits): they only lower, never above a port's own."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.allocate import PortRequest, allocate
from controller.limits import LimitTree
from controller.model import GroupSpec, Policy, PortSpec, SiteSpec

SPEC = SiteSpec(
    "s",
    (GroupSpec("c1", breaker_a=100.0),),
    (
        PortSpec("a", "c1", 80.0),
        PortSpec("b", "c1", 80.0, power_select_a=32.0),
        PortSpec("c", "c1", 48.0, rated_kw=5.0),
    ),
)
TREE = LimitTree.from_spec(SPEC)


def test_caps_only_lower_and_clamp_to_the_ports_own() -> None:
    capped = TREE.with_port_caps({"a": 20.0, "b": 60.0, "c": 0.0})
    assert capped.port_caps() == {"a": 20.0, "b": 32.0, "c": 0.0}
    assert capped.ports["a"].cap_a == 20.0
    assert TREE.port_caps() == {"a": 80.0, "b": 32.0, "c": 48.0}  # the original is untouched
    assert capped.with_port_caps({}).port_caps() == TREE.port_caps()
    assert capped.limits() == TREE.limits()
    assert capped.spec is SPEC
    # Limits and caps are independent copies of each other.
    both = capped.with_limits({"c1": 30.0})
    assert both.port_caps() == capped.port_caps() and both.limits() == {"c1": 30.0}
    assert both.with_port_caps({"b": 8.0}).limits() == {"c1": 30.0}


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_bad_caps_raise(bad: float) -> None:
    with pytest.raises(ValueError, match="cap must be >= 0"):
        TREE.with_port_caps({"a": bad})
    with pytest.raises(ValueError, match="unknown port"):
        TREE.with_port_caps({"zz": 1.0})


def test_allocation_respects_caps_and_proportional_weights_stay() -> None:
    want = {p: PortRequest(want_a=80.0) for p in "abc"}
    capped = TREE.with_port_caps({"a": 10.0})
    amps = allocate(capped, want).amps
    assert amps["a"] == 10.0 and amps["b"] == 32.0
    # Proportional: a's weight is still its rated power as installed, not the remote cap.
    before = allocate(TREE, {p: PortRequest(want_a=80.0) for p in "ac"}, Policy.PROPORTIONAL)
    after = allocate(
        TREE.with_port_caps({"a": 79.0}),
        {p: PortRequest(want_a=80.0) for p in "ac"},
        Policy.PROPORTIONAL,
    )
    assert after.amps["c"] == before.amps["c"]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from("abc"), st.floats(0.0, 1e6), max_size=3))
def test_no_cap_raises_a_port(caps: dict[str, float]) -> None:
    capped = TREE.with_port_caps(caps)
    for port in SPEC.ports:
        pid = port.id
        got = capped.port_caps()[pid]
        assert math.isfinite(got)
        assert got <= port.cap_a
        assert got == min(port.cap_a, caps.get(pid, port.cap_a))
