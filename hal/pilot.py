"""J1772 / IEC 61851-1 pilot math: amps <-> duty cycle, pilot voltage -> state (pure).

This module's one job is the arithmetic of the control pilot signal: which PWM duty advertises
a current, which current an EV reads from a duty, which J1772 state a measured plateau voltage
means, and whether the EV's diode is present. It does no I/O and keeps no state.

Sources: SAE J1772 (Table 3, pilot states) and IEC 61851-1:2017 Annex A (Table A.7, duty the
EVSE sets for a current; Table A.8, how the EV interprets a duty).
"""

from __future__ import annotations

import enum
import math

__all__ = [
    "DIGITAL_DUTY_PCT",
    "DUTY_RESOLUTION_PCT",
    "DUTY_STEPS_PER_PCT",
    "EV_RESPONSE_S",
    "MAX_A",
    "MAX_DUTY_PCT",
    "MIN_A",
    "MIN_DUTY_PCT",
    "DutyClass",
    "PilotError",
    "PilotState",
    "amps_to_duty",
    "classify_duty",
    "diode_ok",
    "duty_to_amps",
    "state_from_high_voltage",
]


class PilotState(enum.Enum):
    """J1772 pilot states by the positive plateau voltage (SAE J1772 Table 3)."""

    A = "A"  # +12 V: no vehicle
    B = "B"  # +9 V: vehicle connected, not ready
    C = "C"  # +6 V: vehicle ready, charging
    D = "D"  # +3 V: vehicle ready, ventilation required
    E = "E"  # 0 V: pilot shorted / EVSE not powered
    F = "F"  # -12 V: EVSE not available


class PilotError(ValueError):
    """A pilot quantity (amps, duty, volts) outside what the standard defines."""


class DutyClass(enum.Enum):
    """What a PWM duty means to the EV (IEC 61851-1:2017 Table A.8)."""

    NONE = "none"  # charging not allowed
    DIGITAL = "digital"  # digital communication required (5 % nominal)
    CURRENT = "current"  # the duty advertises a maximum current


# --- Hardware -------------------------------------------------------------------------------

# The pilot PWM generator sets the duty in steps of 0.1 % (our pilot hardware, not a standard).
DUTY_RESOLUTION_PCT = 0.1
# 1 / DUTY_RESOLUTION_PCT, as an exact integer: a duty as a whole number of steps is
# round(duty_pct * DUTY_STEPS_PER_PCT) (the serial board's wire unit, docs/serial-protocol.md).
DUTY_STEPS_PER_PCT = 10

# --- Currents an EVSE may advertise (IEC 61851-1:2017 Table A.7; SAE J1772 §5.3) -----------

MIN_A = 6.0  # IEC 61851-1:2017 Table A.7: lowest advertisable current, 6 A = 10 % duty
MAX_A = 80.0  # IEC 61851-1:2017 Table A.7: highest advertisable current, 80 A = 96 % duty
# How long a vehicle may take to follow a changed offer (SAE J1772: within 5 s of a change of
# the duty cycle). Every rule built on it (the safe-offer window, the fallback rise delay, the
# simulator's compliance line) takes it from here.
EV_RESPONSE_S = 5.0
_LOW_RANGE_MAX_A = 51.0  # IEC 61851-1:2017 Table A.7: duty = A / 0.6 up to 51 A (85 %)
_LOW_FACTOR_A_PER_PCT = 0.6  # IEC 61851-1:2017 Tables A.7/A.8: A = duty % × 0.6
_HIGH_FACTOR_A_PER_PCT = 2.5  # IEC 61851-1:2017 Tables A.7/A.8: A = (duty % − 64) × 2.5
_HIGH_OFFSET_PCT = 64.0  # IEC 61851-1:2017 Tables A.7/A.8: A = (duty % − 64) × 2.5

# --- Duty interpretation by the EV (IEC 61851-1:2017 Table A.8) ---------------------------

DIGITAL_DUTY_PCT = 5.0  # IEC 61851-1:2017 Table A.8 / SAE J1772: 5 % = digital comm. required
_DIGITAL_MIN_PCT = 3.0  # IEC 61851-1:2017 Table A.8: 3 % <= duty <= 7 % -> digital
_DIGITAL_MAX_PCT = 7.0  # IEC 61851-1:2017 Table A.8: 3 % <= duty <= 7 % -> digital
_MIN_6A_PCT = 8.0  # IEC 61851-1:2017 Table A.8: 8 % <= duty < 10 % -> 6 A
_LOW_MIN_PCT = 10.0  # IEC 61851-1:2017 Table A.8: 10 % <= duty <= 85 % -> duty × 0.6
_LOW_MAX_PCT = 85.0  # IEC 61851-1:2017 Table A.8: 10 % <= duty <= 85 % -> duty × 0.6
_HIGH_MAX_PCT = 96.0  # IEC 61851-1:2017 Table A.8: 85 % < duty <= 96 % -> (duty − 64) × 2.5
_MAX_80A_PCT = 97.0  # IEC 61851-1:2017 Table A.8: 96 % < duty <= 97 % -> 80 A
MIN_DUTY_PCT = 0.0  # a duty is a percentage of the period
MAX_DUTY_PCT = 100.0  # a duty is a percentage of the period (100 % = steady, no PWM)

# --- Pilot voltages (SAE J1772 Table 3, as in docs/design.md: nominal +-1 V) ---------------

_BAND_HALF_WIDTH_V = 1.0  # SAE J1772 Table 3 (docs/design.md): each state is its nominal +-1 V
_STATE_NOMINAL_V: tuple[tuple[PilotState, float], ...] = (
    (PilotState.A, 12.0),  # SAE J1772 Table 3: state A, +12 V
    (PilotState.B, 9.0),  # SAE J1772 Table 3: state B, +9 V
    (PilotState.C, 6.0),  # SAE J1772 Table 3: state C, +6 V
    (PilotState.D, 3.0),  # SAE J1772 Table 3: state D, +3 V
    (PilotState.E, 0.0),  # SAE J1772 Table 3: state E, 0 V
    (PilotState.F, -12.0),  # SAE J1772 Table 3: state F, -12 V
)
_DIODE_LOW_NOMINAL_V = -12.0  # SAE J1772 Table 3: negative plateau with the EV's diode, -12 V


def _check_duty(duty_pct: float) -> None:
    if not MIN_DUTY_PCT <= duty_pct <= MAX_DUTY_PCT:  # also rejects NaN
        raise PilotError(
            f"pilot duty {duty_pct!r} % is outside the allowed range "
            f"{MIN_DUTY_PCT:g}..{MAX_DUTY_PCT:g} %"
        )


def classify_duty(duty_pct: float) -> DutyClass:
    """What a duty means to the EV (IEC 61851-1:2017 Table A.8), boundaries included as listed.

    ====================  ==========================
    duty                  class
    ====================  ==========================
    0 <= d < 3            NONE (charging not allowed)
    3 <= d <= 7           DIGITAL (5 % nominal)
    7 < d < 8             NONE
    8 <= d <= 97          CURRENT (see :func:`duty_to_amps`)
    97 < d <= 100         NONE (100 % = steady +12 V / +9 V / +6 V)
    ====================  ==========================

    Raises :class:`PilotError` for a duty outside 0..100 % or NaN.
    """
    _check_duty(duty_pct)
    if duty_pct < _DIGITAL_MIN_PCT:
        return DutyClass.NONE
    if duty_pct <= _DIGITAL_MAX_PCT:
        return DutyClass.DIGITAL
    if duty_pct < _MIN_6A_PCT:
        return DutyClass.NONE
    if duty_pct <= _MAX_80A_PCT:
        return DutyClass.CURRENT
    return DutyClass.NONE


def duty_to_amps(duty_pct: float) -> float:
    """The maximum current an EV reads from a duty (IEC 61851-1:2017 Table A.8).

    ====================  ==========================
    duty                  amps
    ====================  ==========================
    8 <= d < 10           6.0
    10 <= d <= 85         d × 0.6           (6..51 A)
    85 < d <= 96          (d − 64) × 2.5    (52.5..80 A, exclusive at 52.5)
    96 < d <= 97          80.0
    otherwise             0.0 (NONE or DIGITAL, see :func:`classify_duty`)
    ====================  ==========================

    Note the jump at 85 %: exactly 85 % reads 51 A, anything above reads more than 52.5 A.
    Raises :class:`PilotError` for a duty outside 0..100 % or NaN.
    """
    if classify_duty(duty_pct) is not DutyClass.CURRENT:
        return 0.0
    if duty_pct < _LOW_MIN_PCT:
        return MIN_A
    if duty_pct <= _LOW_MAX_PCT:
        return duty_pct * _LOW_FACTOR_A_PER_PCT
    if duty_pct <= _HIGH_MAX_PCT:
        return (duty_pct - _HIGH_OFFSET_PCT) * _HIGH_FACTOR_A_PER_PCT
    return MAX_A


def _step_amps(step: int) -> float:
    """What the EV reads from a duty of ``step`` hardware steps."""
    return duty_to_amps(step / DUTY_STEPS_PER_PCT)


def amps_to_duty(amps: float) -> float:
    """The PWM duty percent to advertise ``amps`` (IEC 61851-1:2017 Table A.7).

    6..51 A: duty = A / 0.6 (10..85 %); 51..80 A: duty = A / 2.5 + 64 (85..96 %).

    The result is on the hardware's 0.1 % grid and is the **highest** grid duty from which an
    EV (reading it per Table A.8, :func:`duty_to_amps`) reads **no more** than ``amps``: it is
    rounded down, never to the nearest step. So ``duty_to_amps(amps_to_duty(a)) <= a`` always,
    and it is within one step's worth of current (0.06 A below 51 A, 0.25 A above) of ``a``
    except in the gap below.

    The 51..52.75 A gap: Table A.8 reads 85 % as 51 A and any duty above 85 % as more than
    52.5 A (85.1 %, the next grid step, as 52.75 A). ``A / 2.5 + 64`` for 51 < A < 52.5 gives
    a duty below 85 % that the EV would read with the low formula (duty × 0.6) as *less*
    than 51 A, and no duty advertises anything between 51 and 52.75 A. The rule here is
    therefore: for 51 <= A < 52.75 advertise 85 % (the EV reads 51 A, the most it can be
    offered without exceeding A). The EV may read up to 1.75 A less than asked there.

    Raises :class:`PilotError` for ``amps`` outside 6..80 A, NaN or infinite.
    """
    if not MIN_A <= amps <= MAX_A:  # also rejects NaN
        raise PilotError(
            f"pilot current {amps!r} A is outside the allowed range {MIN_A:g}..{MAX_A:g} A "
            "(IEC 61851-1 Table A.7); to offer nothing, turn the PWM off instead"
        )
    if amps <= _LOW_RANGE_MAX_A:
        duty = amps / _LOW_FACTOR_A_PER_PCT
    else:
        duty = amps / _HIGH_FACTOR_A_PER_PCT + _HIGH_OFFSET_PCT
    lowest = round(_LOW_MIN_PCT * DUTY_STEPS_PER_PCT)
    highest = round(_HIGH_MAX_PCT * DUTY_STEPS_PER_PCT)
    step = min(max(math.floor(duty * DUTY_STEPS_PER_PCT), lowest), highest)
    # The formula is only an estimate on the grid (float rounding, the 51..52.75 A gap): settle
    # on the highest step the EV reads as no more than `amps`. duty_to_amps is non-decreasing
    # over 10..96 %, so this search is exact and the result is monotonic in `amps`.
    while step < highest and _step_amps(step + 1) <= amps:
        step += 1
    while step > lowest and _step_amps(step) > amps:
        step -= 1
    return step / DUTY_STEPS_PER_PCT


def state_from_high_voltage(volts: float) -> PilotState:
    """The J1772 state from the pilot's positive plateau (SAE J1772 Table 3, +-1 V bands).

    Bands are closed: A 11..13 V, B 8..10 V, C 5..7 V, D 2..4 V, E -1..1 V, F -13..-11 V
    (so 10.0 V is B, 11.0 V is A). A voltage between or beyond the bands, NaN or infinite
    raises :class:`PilotError`; the caller must treat it as an error, never guess a state.
    """
    for state, nominal in _STATE_NOMINAL_V:
        if abs(volts - nominal) <= _BAND_HALF_WIDTH_V:  # NaN compares False: falls through
            return state
    bands = ", ".join(
        f"{s.value} {n - _BAND_HALF_WIDTH_V:g}..{n + _BAND_HALF_WIDTH_V:g} V"
        for s, n in _STATE_NOMINAL_V
    )
    raise PilotError(
        f"pilot high voltage {volts!r} V is outside every state band (SAE J1772 Table 3): {bands}"
    )


def diode_ok(low_volts: float) -> bool:
    """Whether the pilot's negative plateau shows the EV's diode (SAE J1772 Table 3).

    While PWM runs, the EV's diode blocks the negative half, so the low plateau must read
    -12 V +-1 V (closed: -13..-11 V). Anything else (-9 V or -6 V with the diode missing or
    shorted, 0 V), NaN or infinite is False: a failed measurement is a failed check.
    """
    return abs(low_volts - _DIODE_LOW_NOMINAL_V) <= _BAND_HALF_WIDTH_V
