"""The simulator's own safe-offer checker (tools.checker) follows the spec's rule, clause by clause
(docs/design.md, "The safe-offer invariant"), and checks every limit twice."""

from __future__ import annotations

import pytest

from tools.checker import Breach, EffectiveOffers, find_breaches


def _lowered(metered_at_decrease: float | None = None) -> EffectiveOffers:
    """Port "1" offered 32 A from t=0, lowered to 16 A at t=10."""
    offers = EffectiveOffers(["1", "2"])
    assert offers.update(0.0, "1", 32.0, None) == 32.0
    assert offers.update(10.0, "1", 16.0, metered_at_decrease) == (
        32.0 if metered_at_decrease is None else pytest.approx(16.0 + 0.5)
    )
    return offers


def test_the_highest_offer_of_the_last_5_s_counts() -> None:
    offers = _lowered()
    assert offers.update(14.99, "1", 16.0, None) == 32.0
    assert offers.update(15.0, "1", 16.0, None) == 16.0


def test_a_meter_above_the_new_offer_plus_its_accuracy_confirms_nothing() -> None:
    offers = _lowered()
    assert offers.update(12.0, "1", 16.0, 16.6) == 32.0


def test_a_confirming_reading_plus_its_accuracy_counts_until_the_5_s_have_passed() -> None:
    offers = _lowered()
    assert offers.update(12.0, "1", 16.0, 16.3) == pytest.approx(16.8)
    assert offers.update(14.0, "1", 16.0, 16.3) == pytest.approx(16.8)
    assert offers.update(15.0, "1", 16.0, 16.3) == 16.0


def test_a_reading_at_the_decrease_confirms() -> None:
    # The station loop reads the meters at the tick it writes the offer: the same instant.
    _lowered(metered_at_decrease=16.0)


def test_zero_amps_confirms_fully() -> None:
    offers = EffectiveOffers(["1"])
    offers.update(0.0, "1", 32.0, None)
    assert offers.update(10.0, "1", 8.0, None) == 32.0
    assert offers.update(11.0, "1", 8.0, 0.0) == 8.0


def test_every_limit_is_checked_twice() -> None:
    ids = ["feed", "feed:kW", "c1"]
    limits = {"feed": 32.0, "feed:kW": 7.0}  # c1 has no value: not in force
    loads = {"feed": 33.0, "feed:kW": 6.0, "c1": 1e9}
    effective = {"feed": 40.0, "feed:kW": 7.5, "c1": 1e9}
    assert find_breaches(3.0, ids, limits, loads, effective) == [
        Breach(3.0, "feed", "invariant", 40.0, 32.0),
        Breach(3.0, "feed", "load", 33.0, 32.0),
        Breach(3.0, "feed:kW", "invariant", 7.5, 7.0),
    ]
    # Float sums a hair over the limit are no breach.
    assert find_breaches(3.0, ["feed"], limits, {"feed": 32.0 + 1e-9}, {"feed": 32.0}) == []
