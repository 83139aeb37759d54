"""J1772 / IEC 61851-1 pilot math: amps <-> duty cycle, pilot voltage -> state (pure).

(Being completed: only the state enum is final so far.)
"""

from __future__ import annotations

import enum


class PilotState(enum.Enum):
    """J1772 pilot states by the positive plateau voltage (SAE J1772 Table 3)."""

    A = "A"  # +12 V: no vehicle
    B = "B"  # +9 V: vehicle connected, not ready
    C = "C"  # +6 V: vehicle ready, charging
    D = "D"  # +3 V: vehicle ready, ventilation required
    E = "E"  # 0 V: pilot shorted / EVSE not powered
    F = "F"  # -12 V: EVSE not available
