"""A simulated electric vehicle behind a J1772 plug (being completed: EvSpec is final)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EvSpec:
    """One plug-in of a simulated vehicle: who it is and when it comes and goes.

    ``port`` is the station port id (``"1"``) or a site's port id. Times are seconds from the
    start of the run. ``response_s`` is how long the vehicle takes to follow a PWM change
    (<= 5 s complies with J1772; more is a non-compliant vehicle). ``min_a``: offered less
    than this, the vehicle draws nothing. ``wakes``: False for a vehicle that does not resume
    after a pause. ``overdraw_a``: draws this much more than offered (a faulty vehicle).
    """

    port: str
    arrive_s: float = 0.0
    leave_s: float | None = None
    max_a: float = 32.0
    phases: int = 1
    battery_kwh: float = 60.0
    soc: float = 0.2
    target_soc: float = 0.9
    response_s: float = 2.0
    min_a: float = 6.0
    wakes: bool = True
    overdraw_a: float = 0.0
