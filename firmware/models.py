"""The station model table: what each supported station hardware is rated for.

One job: give the config loader the ratings it checks a station file against (port count,
amps per port, the breaker the model may be installed on, whether it takes the Power Sharing
jumper). Every number cites where it comes from; "the guide" is the "ChargePoint Power
Sharing Reference Guide".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class StationModel:
    """Ratings of one station model.

    ``port_max_a``: the most one port may offer (its continuous rating).
    ``breaker_a``: the largest breaker a port's dedicated feed may have (standard install).
    ``jumper_breaker_a``: the largest single feed when the Power Sharing jumper is installed,
    or None when the model has no jumper option.
    """

    name: str
    ports: int
    port_max_a: float
    breaker_a: float
    jumper_breaker_a: float | None
    source: str

    @property
    def has_jumper(self) -> bool:
        return self.jumper_breaker_a is not None

    @property
    def port_ids(self) -> tuple[str, ...]:
        """Station port ids are their numbers: "1", "2"."""
        return tuple(str(n) for n in range(1, self.ports + 1))


_MODELS = (
    StationModel(
        name="ct4000",
        ports=2,
        # The guide, "Power Select" example: "CT4000 is rated for 30A service via a 40A breaker".
        port_max_a=30.0,
        breaker_a=40.0,
        # The guide, "Power Sharing Jumper": the jumper kit is "available on CT4000 and CP6000
        # station types"; "Cable Sharing" example diagram: a dual-port CT4000 on a single 40A
        # circuit. (Also seeds/000: one 7.2 kW circuit for both ports.)
        jumper_breaker_a=40.0,
        source="guide: Power Select (30 A via 40 A breaker); Power Sharing Jumper; Cable Sharing",
    ),
    StationModel(
        name="cp6000",
        ports=2,
        # The guide, "Standard Installation": "Each port will receive a dedicated 100 A feed";
        # panel example: 100 A 2-pole breakers, "the full 80 A of charge available at the
        # station" (80 % of 100 A).
        port_max_a=80.0,
        breaker_a=100.0,
        # The guide, "Power Sharing Jumper": the CP6000 "can be installed up to a 100 A feed"
        # with the jumper.
        jumper_breaker_a=100.0,
        source="guide: Standard Installation (100 A per port); Power Sharing Jumper (100 A feed)",
    ),
    StationModel(
        name="cpf50",
        # The guide, "Which Features are Supported on Hardware Models?": Cable Sharing ("a single
        # circuit ... to a dual-port AC station") is "Not applicable" on CPH50/CPF50, hence no
        # jumper and, we infer, a single port. The guide does not state the port count itself.
        ports=1,
        # The guide, "Oversubscription Ratio Recommendations": "CPF50 (80 A Circuit)". The guide
        # gives no port rating: we take 80 % of that circuit (64 A) by its own 80 % rule. UNSURE:
        # the name suggests a 50 A rating, which the guide does not confirm; an installer
        # should set power_select_a to the nameplate rating.
        port_max_a=64.0,
        breaker_a=80.0,
        jumper_breaker_a=None,
        source="guide: Oversubscription table (80 A circuit); Hardware Models (no Cable Sharing)",
    ),
)

MODELS: Mapping[str, StationModel] = MappingProxyType({model.name: model for model in _MODELS})
