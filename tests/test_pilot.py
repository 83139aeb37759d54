"""Tests of hal.pilot against the numbers of IEC 61851-1 Tables A.7/A.8 and SAE J1772 Table 3."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal.pilot import (
    DIGITAL_DUTY_PCT,
    DUTY_RESOLUTION_PCT,
    MAX_A,
    MIN_A,
    DutyClass,
    PilotError,
    PilotState,
    amps_to_duty,
    classify_duty,
    diode_ok,
    duty_to_amps,
    state_from_high_voltage,
)

EPS = 1e-9
NAN = float("nan")
INF = float("inf")
GAP_TOP_A = 52.75  # what 85.1 %, the first grid duty above 85 %, reads (IEC 61851-1 Table A.8)


def below(x: float) -> float:
    """The largest float below x (for open ends of the tables)."""
    return math.nextafter(x, -INF)


def above(x: float) -> float:
    """The smallest float above x."""
    return math.nextafter(x, INF)


# --- Constants and enums --------------------------------------------------------------------


def test_constants() -> None:
    assert DUTY_RESOLUTION_PCT == 0.1
    assert MIN_A == 6.0
    assert MAX_A == 80.0
    assert DIGITAL_DUTY_PCT == 5.0
    assert classify_duty(DIGITAL_DUTY_PCT) is DutyClass.DIGITAL


def test_pilot_state_enum_is_unchanged() -> None:
    assert [(s.name, s.value) for s in PilotState] == [(c, c) for c in "ABCDEF"]


def test_pilot_error_is_a_value_error() -> None:
    assert issubclass(PilotError, ValueError)


# --- amps_to_duty (IEC 61851-1 Table A.7) ---------------------------------------------------


@pytest.mark.parametrize(
    ("amps", "duty"),
    [
        (6, 10.0),  # Table A.7 lowest
        (18, 30.0),
        (30, 50.0),
        (48, 80.0),
        (51, 85.0),  # top of the low formula
        (60, 88.0),
        (65, 90.0),
        (80, 96.0),  # Table A.7 highest
        # quantised down to 0.1 %, never to the nearest step
        (6.05, 10.0),  # 10.083 %
        (6.07, 10.1),  # 10.117 %
        (16, 26.6),  # 26.667 %, nearest would be 26.7 = 16.02 A
        (32, 53.3),  # 53.333 %
        (40, 66.6),  # 66.667 %, nearest would be 66.7 = 40.02 A
        (50.99, 84.9),  # 84.983 %
        (79.9, 95.9),  # 95.96 %, 96.0 would read 80 A
        (79.99, 95.9),
        # the gap: no duty reads anything in (51, 52.75) A, so 85 % (51 A) it is
        (51.01, 85.0),
        (51.5, 85.0),
        (52, 85.0),
        (52.5, 85.0),
        (52.74, 85.0),
        (GAP_TOP_A, 85.1),  # 85.1 % reads exactly 52.75 A
        (52.76, 85.1),
        (55, 86.0),
    ],
)
def test_amps_to_duty(amps: float, duty: float) -> None:
    assert amps_to_duty(amps) == pytest.approx(duty, abs=EPS)


@pytest.mark.parametrize("amps", [5.99, below(6.0), 0.0, -6.0, 80.01, above(80.0), 1000.0])
def test_amps_to_duty_rejects_out_of_range(amps: float) -> None:
    with pytest.raises(PilotError) as info:
        amps_to_duty(amps)
    message = str(info.value)
    assert repr(amps) in message
    assert "6..80 A" in message


@pytest.mark.parametrize("amps", [NAN, INF, -INF])
def test_amps_to_duty_rejects_non_finite(amps: float) -> None:
    with pytest.raises(PilotError, match=r"(nan|inf) A is outside the allowed range 6\.\.80 A"):
        amps_to_duty(amps)


def test_amps_to_duty_every_centiamp() -> None:
    """Exhaustive over 6.00..80.00 A in 0.01 A: safe, highest, on the grid."""
    for centiamps in range(600, 8001):
        amps = centiamps / 100
        duty = amps_to_duty(amps)
        steps = duty / DUTY_RESOLUTION_PCT
        assert abs(steps - round(steps)) < EPS, (amps, duty)
        assert 10.0 <= duty <= 96.0
        assert duty_to_amps(duty) <= amps, (amps, duty)
        if duty < 96.0:  # highest: one more step would read more than asked
            next_duty = (round(steps) + 1) / 10  # the next grid step, as the module computes it
            assert duty_to_amps(next_duty) > amps, (amps, duty)


def test_grid_duties_round_trip_exactly() -> None:
    """Every advertisable grid duty 10.0..96.0 % comes back from the current it reads."""
    for step in range(100, 961):
        duty = step / 10
        assert amps_to_duty(duty_to_amps(duty)) == duty


# --- classify_duty / duty_to_amps (IEC 61851-1 Table A.8) -----------------------------------


@pytest.mark.parametrize(
    ("duty", "cls"),
    [
        (0.0, DutyClass.NONE),
        (2.99, DutyClass.NONE),
        (below(3.0), DutyClass.NONE),  # d < 3: none
        (3.0, DutyClass.DIGITAL),  # 3 <= d <= 7: digital
        (5.0, DutyClass.DIGITAL),
        (7.0, DutyClass.DIGITAL),
        (above(7.0), DutyClass.NONE),  # 7 < d < 8: none
        (7.5, DutyClass.NONE),
        (below(8.0), DutyClass.NONE),
        (8.0, DutyClass.CURRENT),  # 8 <= d <= 97: a current
        (10.0, DutyClass.CURRENT),
        (50.0, DutyClass.CURRENT),
        (85.0, DutyClass.CURRENT),
        (96.0, DutyClass.CURRENT),
        (97.0, DutyClass.CURRENT),
        (above(97.0), DutyClass.NONE),  # d > 97: none
        (98.0, DutyClass.NONE),
        (100.0, DutyClass.NONE),
    ],
)
def test_classify_duty(duty: float, cls: DutyClass) -> None:
    assert classify_duty(duty) is cls


@pytest.mark.parametrize(
    ("duty", "amps"),
    [
        (0.0, 0.0),
        (below(3.0), 0.0),
        (3.0, 0.0),  # digital: no current from the duty
        (5.0, 0.0),
        (7.0, 0.0),
        (7.5, 0.0),
        (below(8.0), 0.0),
        (8.0, 6.0),  # 8 <= d < 10: 6 A
        (9.9, 6.0),
        (below(10.0), 6.0),
        (10.0, 6.0),  # 10 <= d <= 85: d × 0.6
        (30.0, 18.0),
        (50.0, 30.0),
        (80.0, 48.0),
        (85.0, 51.0),
        (above(85.0), 52.5),  # 85 < d <= 96: (d − 64) × 2.5, jumps to just over 52.5 A
        (85.1, 52.75),
        (86.0, 55.0),
        (88.0, 60.0),
        (96.0, 80.0),
        (above(96.0), 80.0),  # 96 < d <= 97: 80 A
        (96.5, 80.0),
        (97.0, 80.0),
        (above(97.0), 0.0),  # d > 97: none
        (100.0, 0.0),
    ],
)
def test_duty_to_amps(duty: float, amps: float) -> None:
    assert duty_to_amps(duty) == pytest.approx(amps, abs=EPS)


def test_duty_just_above_85_reads_more_than_52_5() -> None:
    assert duty_to_amps(above(85.0)) > 52.5
    assert duty_to_amps(85.0) == pytest.approx(51.0)


@pytest.mark.parametrize("func", [classify_duty, duty_to_amps])
@pytest.mark.parametrize("duty", [below(0.0), -0.1, -5.0, above(100.0), 100.1, 150.0, INF, -INF])
def test_duty_rejects_out_of_range(func: object, duty: float) -> None:
    assert callable(func)
    with pytest.raises(PilotError) as info:
        func(duty)
    message = str(info.value)
    assert repr(duty) in message
    assert "0..100 %" in message


@pytest.mark.parametrize("func", [classify_duty, duty_to_amps])
def test_duty_rejects_nan(func: object) -> None:
    assert callable(func)
    with pytest.raises(PilotError, match=r"nan % is outside the allowed range 0\.\.100 %"):
        func(NAN)


# --- state_from_high_voltage (SAE J1772 Table 3) --------------------------------------------

NOMINAL_V = [
    (PilotState.A, 12.0),
    (PilotState.B, 9.0),
    (PilotState.C, 6.0),
    (PilotState.D, 3.0),
    (PilotState.E, 0.0),
    (PilotState.F, -12.0),
]


@pytest.mark.parametrize(
    ("volts", "state"),
    [
        (v, s)
        for s, n in NOMINAL_V
        for v in (n - 1.0, n - 0.5, n, n + 0.5, n + 1.0)  # closed +-1 V bands
    ],
)
def test_state_from_high_voltage(volts: float, state: PilotState) -> None:
    assert state_from_high_voltage(volts) is state


@pytest.mark.parametrize(
    "volts",
    [below(n - 1.0) for _, n in NOMINAL_V]  # just outside each band edge
    + [above(n + 1.0) for _, n in NOMINAL_V]
    + [10.5, 7.5, 4.5, 1.5, 15.0, -5.0, -10.9, -13.1, 100.0, NAN, INF, -INF],
)
def test_state_from_high_voltage_rejects(volts: float) -> None:
    with pytest.raises(PilotError) as info:
        state_from_high_voltage(volts)
    message = str(info.value)
    assert repr(volts) in message
    assert "outside every state band" in message
    assert "A 11..13 V" in message
    assert "F -13..-11 V" in message


# --- diode_ok -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("volts", "ok"),
    [
        (-12.0, True),
        (-11.0, True),
        (-13.0, True),
        (-11.5, True),
        (above(-11.0), False),
        (below(-13.0), False),
        (-10.9, False),
        (-13.1, False),
        (-9.0, False),  # diode missing, EV in B
        (-6.0, False),  # diode missing, EV in C
        (0.0, False),
        (12.0, False),
        (NAN, False),  # a failed measurement is a failed check
        (INF, False),
        (-INF, False),
    ],
)
def test_diode_ok(volts: float, ok: bool) -> None:
    assert diode_ok(volts) is ok


# --- Properties -----------------------------------------------------------------------------

amps_st = st.floats(min_value=MIN_A, max_value=MAX_A, allow_nan=False)
duty_st = st.floats(min_value=10.0, max_value=96.0, allow_nan=False)


@given(amps_st)
def test_ev_never_reads_more_than_asked(amps: float) -> None:
    read = duty_to_amps(amps_to_duty(amps))
    assert read <= amps
    # the worst shortfall is just under the gap's top: 52.75 A asked, 51 A read
    assert read > amps - (GAP_TOP_A - 51.0) - EPS
    if amps <= 51.0:
        assert amps - read < 0.6 * DUTY_RESOLUTION_PCT + EPS  # one step: 0.06 A
    elif amps >= GAP_TOP_A:
        assert amps - read < 2.5 * DUTY_RESOLUTION_PCT + EPS  # one step: 0.25 A
    else:
        assert read == pytest.approx(51.0)


@given(amps_st, amps_st)
def test_amps_to_duty_monotonic(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert amps_to_duty(lo) <= amps_to_duty(hi)


@given(duty_st)
def test_duty_round_trip_within_one_step(duty: float) -> None:
    back = amps_to_duty(duty_to_amps(duty))
    # rounded down to the grid: at most the duty read, less than one step below it;
    # in the gap (85, 85.1) the current reads 52.5..52.75 A and comes back as 85.0 %
    assert duty - DUTY_RESOLUTION_PCT - EPS < back <= duty + EPS


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_voltage_classification_total(volts: float) -> None:
    """Any float either lands in exactly one band or raises PilotError: never anything else."""
    try:
        state = state_from_high_voltage(volts)
    except PilotError:
        assert not any(abs(volts - n) <= 1.0 for _, n in NOMINAL_V)
    else:
        assert abs(volts - dict(NOMINAL_V)[state]) <= 1.0
