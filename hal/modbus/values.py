"""Decoded meter quantities -> a ``MeterReading``, refusing what no real meter can show.

One job: judge a poll's quantities (NaN, a phase current the meter marks invalid, negative
current beyond noise, current beyond the model's rating, impossible voltage or energy) and, if
they make sense, assemble the reading the station loop uses. A refused poll is reported as an
``AbsurdReading`` and the meter publishes nothing from it: a stale meter is safe (the port
counts at its full effective offer), a wrong one is not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from hal.interfaces import MeterReading
from hal.modbus.maps import MeterMap

__all__ = ["NOISE_A", "AbsurdReading", "summary", "to_reading"]

# A class 1 meter reads within about 1 % (IEC 62053-21 class 1): a few tenths of an amp either
# side of zero is noise (the controller's confirm tolerance is the same 0.5 A); below that, a
# "negative current" is a wiring or decoding fault.
NOISE_A = 0.5
# Low voltage ends at 1000 V AC (IEC 60038); an LV meter showing more is misread.
MAX_VOLTS = 1000.0


class AbsurdReading(ValueError):
    """Quantities that decode but cannot be true."""


def _check(name: str, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise AbsurdReading(f"{name} is {value} (not a number)")
    return value


def to_reading(
    meter_map: MeterMap, values: Mapping[str, float | None], timestamp: float
) -> MeterReading:
    """The reading for ``values`` (quantity -> value, None: "not measured"), or AbsurdReading."""
    checked = {name: _check(name, v) for name, v in values.items()}
    amps: list[float] = []
    for n in range(1, meter_map.phases + 1):
        a = checked.get(f"amps_l{n}")
        if a is None:
            # The meter's "invalid" marker (or no value): that phase's current is unknown, not
            # 0 A. A reading that counted it as 0 A would free current that may be flowing.
            raise AbsurdReading(f"amps_l{n} is not available (the meter's invalid marker)")
        if a < -NOISE_A:
            raise AbsurdReading(f"amps_l{n} is {a:g} A (negative beyond {NOISE_A} A of noise)")
        if a > meter_map.plausible_max_a:
            raise AbsurdReading(
                f"amps_l{n} is {a:g} A (above {meter_map.plausible_max_a:g} A, "
                f"the most a {meter_map.model} can measure)"
            )
        amps.append(max(a, 0.0))
    volts: list[float] = []
    for n in range(1, meter_map.phases + 1):
        v = checked.get(f"volts_l{n}")
        if v is None:
            continue
        if not 0.0 <= v <= MAX_VOLTS:
            raise AbsurdReading(f"volts_l{n} is {v:g} V (allowed 0..{MAX_VOLTS:g} V)")
        volts.append(v)
    kwh = checked.get("kwh_import")
    if kwh is None:
        raise AbsurdReading("kwh_import is not available")
    if kwh < 0.0:
        raise AbsurdReading(f"kwh_import is {kwh:g} kWh (an energy register never goes negative)")
    watts = checked.get("watts")
    if watts is None:
        per_phase = [checked.get(f"watts_l{n}") for n in range(1, meter_map.phases + 1)]
        known = [w for w in per_phase if w is not None]
        watts = sum(known) if known else sum(a * v for a, v in zip(amps, volts, strict=False))
    return MeterReading(
        amps=tuple(amps),
        volts=tuple(volts),
        power_w=watts,
        energy_wh=kwh * 1000.0,
        timestamp=timestamp,
    )


def summary(meter_map: MeterMap, values: Mapping[str, float | None]) -> dict[str, object]:
    """What ``ampshare meter probe --json`` prints: the usual figures and every quantity."""
    reading = to_reading(meter_map, values, 0.0)
    return {
        "model": meter_map.model,
        "amps": list(reading.amps),
        "volts": list(reading.volts),
        "kw": reading.power_w / 1000.0,
        "kwh_import": reading.energy_wh / 1000.0,
        "kwh_export": values.get("kwh_export"),
        "hz": values.get("hz"),
        "quantities": {q.name: values.get(q.name) for q in meter_map.quantities},
    }
