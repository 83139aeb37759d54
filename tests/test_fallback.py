"""Offline fallback (the guide, "Handling Offline Stations")."""

from __future__ import annotations

from controller.core import Controller
from controller.fallback import fallback_level, fallback_requests, fallback_violations
from controller.limits import LimitTree
from controller.model import GroupSpec, PortObservation, PortSpec, SiteSpec


def site(fb1: float | None = 16.0, fb2: float | None = 16.0, ps2: float | None = None) -> LimitTree:
    # Two ports on one 40 A breaker (32 A), the site above at 50 A (40 A).
    spec = SiteSpec(
        "s",
        (GroupSpec("site", breaker_a=50), GroupSpec("c1", parent="site", breaker_a=40)),
        (
            PortSpec("1", "c1", 30, fallback_a=fb1),
            PortSpec("2", "c1", 30, fallback_a=fb2, power_select_a=ps2),
            PortSpec("3", "site", 32),
        ),
    )
    return LimitTree.from_spec(spec)


def obs(metered: float | None = None, start: float = 0.0) -> PortObservation:
    return PortObservation(True, True, metered, start)


def test_level_is_capped_by_power_select() -> None:
    # (LimitTree refuses a fallback above the cap; the level is capped all the same.)
    assert fallback_level(PortSpec("x", "c1", 30, fallback_a=16.0, power_select_a=12.0)) == 12.0
    assert fallback_level(site().ports["3"]) == 0.0  # no fallback configured: 0


def test_no_violations_for_a_sound_config() -> None:
    assert fallback_violations(site()) == []


def test_violations_name_every_overloaded_limit() -> None:
    # LimitTree.from_spec refuses such a config itself; a lowered tree shows the same check.
    tree = site().with_limits({"c1": 20.0, "site": 30.0})
    assert fallback_violations(tree) == ["c1", "site"]
    tree = site().with_limits({"c1": 32.0, "site": 30.0})
    assert fallback_violations(tree) == ["site"]


def test_power_select_in_the_check() -> None:
    # 16 + 12 (at its Power Select cap) = 28 fits a limit of 28; 16 + 16 would not.
    assert fallback_violations(site(fb2=12.0, ps2=12.0).with_limits({"c1": 28.0})) == []
    assert fallback_violations(site(fb2=16.0).with_limits({"c1": 28.0})) == ["c1"]


def test_requests_leave_out_ports_without_a_usable_level() -> None:
    tree = site(fb1=16.0, fb2=None)
    reqs = fallback_requests(tree, {"1": 0.0, "2": 1.0, "3": 2.0})
    assert set(reqs) == {"1"}
    assert reqs["1"].want_a == 16.0 and reqs["1"].min_a == 8.0


def test_link_down_offers_the_fallback_and_resumes_sharing() -> None:
    tree = site()
    c = Controller(tree)
    o = {"1": obs(0.0, 0.0), "2": obs(0.0, 1.0)}
    d = c.update(0.0, o)
    assert d.offers["1"] == 16.0 and d.offers["2"] == 16.0
    # Port 2 unplugged (its meter shows 0): port 1 alone gets 30 (its cap).
    o = {"1": obs(16.0, 0.0), "2": PortObservation(False, False, 0.0)}
    d = c.update(1.0, o)
    assert d.offers["1"] == 30.0
    # Link lost: back to the fallback level, binding "fallback", at once (a decrease).
    d = c.update(2.0, {"1": obs(30.0, 0.0)}, link_up=False)
    assert d.offers["1"] == 16.0
    assert d.binding["1"] == "fallback"
    assert d.effective["1"] == 30.0  # until the vehicle follows
    # A port without a fallback level is offered nothing offline.
    d = c.update(3.0, {"1": obs(16.0, 0.0), "3": obs(0.0, 3.0)}, link_up=False)
    assert d.offers["3"] == 0.0
    assert d.binding["3"] == "fallback"
    # Link back: sharing resumes on its own.
    d = c.update(4.0, {"1": obs(16.0, 0.0), "3": obs(0.0, 3.0)}, link_up=True)
    assert d.offers["3"] >= 8.0
    assert d.offers["1"] >= 16.0


def test_fallback_goes_through_sequencing() -> None:
    tree = site()
    c = Controller(tree)
    d = c.update(0.0, {"1": obs(0.0, 0.0)})
    assert d.offers["1"] == 30.0
    # Offline, port 2 plugs in: it waits until port 1's 30 A has come down to 16.
    o = {"1": obs(30.0, 0.0), "2": obs(0.0, 1.0)}
    d = c.update(1.0, o, link_up=False)
    assert d.offers == {"1": 16.0, "2": 0.0, "3": 0.0}
    assert d.binding["2"] == "sequencing"
    d = c.update(2.0, {"1": obs(16.0, 0.0), "2": obs(0.0, 1.0)}, link_up=False)
    # Port 1's meter reads 16 A, which may be 0.5 A low: 16.5 A counts for the window.
    assert d.offers["2"] == 15.5
    d = c.update(6.0, {"1": obs(16.0, 0.0), "2": obs(15.5, 1.0)}, link_up=False)
    assert d.offers["2"] == 16.0
    assert d.binding["2"] == "fallback"


def test_fallback_stays_within_lowered_local_limits() -> None:
    # A remote limit lowered c1 to 24 A before the link dropped: 16 + 16 would not fit.
    tree = site().with_limits({"c1": 24.0})
    c = Controller(tree)
    o = {"1": obs(None, 0.0), "2": obs(None, 1.0)}
    d = c.update(0.0, o, link_up=False)
    assert sum(d.effective.values()) <= 24.0
    assert d.offers["1"] == 12.0 and d.offers["2"] == 12.0  # shared equally under c1
    assert d.binding["2"] == "c1"
