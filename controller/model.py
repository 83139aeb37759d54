"""The controller's vocabulary: the specification of groups and ports, what it observes of
each port on a tick, and the decision it returns.

These types are the contract between the pure core (`controller.limits`, `controller.allocate`,
`controller.demand`, `controller.sequence`, `controller.core`) and its users (the station loop,
the config loader, the `allocate` command, the coordinator). All currents are in amperes, all
times in seconds on the station clock (virtual in the simulator), all powers in kW.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

# J1772 / SAE J1772-2017 §5.3 and IEC 61851-1 Table A.7: the lowest current a pilot can offer.
J1772_MIN_A = 6.0
# The guide ("Power Sharing", IMPORTANT note, v1 Oct 2025): at least 8 A per port is recommended.
DEFAULT_MIN_A = 8.0
# The guide, "Power Sharing at the Circuit Level" (a 40 A breaker carries 32 A), and NEC
# 210.20(A) / 625.41 (EV charging is a continuous load, sized at 125 %): <= 80 % of the rating.
CONTINUOUS_FRACTION = 0.8


class Policy(enum.Enum):
    """How a limit is shared (the guide, "Sharing Policy")."""

    EQUAL = "equal"
    FCFS = "fcfs"
    PROPORTIONAL = "proportional"


class Phases(enum.Enum):
    """Which conductors a port is wired across.

    Two-phase 208 V ports sit line-to-line; L-N ports between a line and neutral; a
    three-phase port draws its current on all three lines.
    """

    L1_L2 = "L1-L2"
    L2_L3 = "L2-L3"
    L3_L1 = "L3-L1"
    L1_N = "L1-N"
    L2_N = "L2-N"
    L3_N = "L3-N"
    L1_L2_L3 = "L1-L2-L3"


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """A node of the limit tree: a breaker, a panel, a site or transformer.

    ``breaker_a`` is a rating: the continuous limit is 80 % of it on every line conductor
    (the limit applies per line using phasor sums, so a 3-phase panel is limited per phase
    and a 2-pole breaker per conductor). ``limit_kw`` bounds the summed power of the ports
    beneath. A group may have both, or neither (a pure grouping node).
    """

    id: str
    parent: str | None = None
    breaker_a: float | None = None
    phases: int = 1
    limit_kw: float | None = None

    @property
    def limit_a(self) -> float | None:
        """The continuous per-line current limit: 80 % of the breaker rating."""
        return None if self.breaker_a is None else self.breaker_a * CONTINUOUS_FRACTION


@dataclass(frozen=True, slots=True)
class PortSpec:
    """A charging port as installed."""

    id: str
    group: str
    max_a: float
    phases: Phases = Phases.L1_L2
    voltage_v: float = 208.0
    power_select_a: float | None = None
    min_a: float = DEFAULT_MIN_A
    fallback_a: float | None = None
    rated_kw: float | None = None  # for the proportional policy; default: cap_a x voltage

    @property
    def cap_a(self) -> float:
        """The most this port may ever offer: its rating lowered by Power Select."""
        if self.power_select_a is None:
            return self.max_a
        return min(self.max_a, self.power_select_a)

    @property
    def fallback_level_a(self) -> float:
        """What this port offers while its coordinator is away: ``fallback_a`` under its cap.

        0 without ``fallback_a``. The cap counts because a port never offers more than it
        (`controller.validate` checks the site against these levels; the guide, "Handling
        Offline Stations").
        """
        if self.fallback_a is None:
            return 0.0
        return max(0.0, min(self.fallback_a, self.cap_a))


@dataclass(frozen=True, slots=True)
class SiteSpec:
    """A whole limit tree: a station (jumper: one group; no jumper: a group per port) or a site."""

    id: str
    groups: tuple[GroupSpec, ...]
    ports: tuple[PortSpec, ...]
    policy: Policy = Policy.EQUAL


@dataclass(frozen=True, slots=True)
class PortObservation:
    """What the station knows of one port on a tick.

    ``connected``: a vehicle is plugged in (pilot B or C) and the port can charge (not faulted,
    not locked out). ``requesting``: the vehicle is in state C (it asks for energy).
    ``metered_a``: the largest phase current from the port's meter, or None when the meter is
    stale or absent (the core then assumes the port draws its full effective offer, never 0).
    ``session_start``: when this vehicle plugged in (orders FCFS and breaks ties).
    ``metered_at``: when that reading was taken (None: this tick); a reading older than an
    offer decrease never confirms that the vehicle followed it.
    """

    connected: bool
    requesting: bool = False
    metered_a: float | None = None
    session_start: float | None = None
    metered_at: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The controller's answer for one tick.

    ``offers``: the current to advertise on each port's pilot now; 0.0 means PWM off (paused,
    idle or nothing to offer). Every non-zero offer is >= the port's minimum (>= 6 A).
    ``effective``: each port's effective offer under the safe-offer invariant (docs/design.md).
    ``binding``: per port, what limits it (a group id, ``"<group>:L2"`` for one phase,
    ``"<group>:kW"``, ``"port"`` for its own cap, ``"demand"`` for what the vehicle takes,
    ``"paused"`` for round robin, ``"fallback"``, ``"sequencing"`` while an increase waits).
    ``loads``: per limit id (same ids as in ``binding``), the sum of effective offers.
    ``limits``: per limit id, the limit value.
    """

    offers: Mapping[str, float]
    effective: Mapping[str, float] = field(default_factory=dict)
    binding: Mapping[str, str] = field(default_factory=dict)
    loads: Mapping[str, float] = field(default_factory=dict)
    limits: Mapping[str, float] = field(default_factory=dict)
