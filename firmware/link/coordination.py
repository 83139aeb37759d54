"""The coordinator's settings and its record of each station (firmware.link.coordinator).

One job: the data the coordinator keeps, with the rules that bound it: its timing
(`CoordinatorSettings`, checked against the stations' own timing, firmware.link.station_link),
what it sent each station and heard from it (`StationRecord`), and the flood allowance of each
station's telemetry. The decisions made on these are the coordinator core's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from controller.allocate import PortRequest, allocate
from controller.core import ControlSettings
from controller.limits import LimitTree
from firmware.link.messages import PortTelemetry
from firmware.link.station_link import DEFAULT_MAX_VALID_S, DEFAULT_RISE_DELAY_S, EV_RESPONSE_S

__all__ = [
    "FLOOD_BURST",
    "FLOOD_RATE",
    "SENT_MEMORY_MAX",
    "SENT_MEMORY_S",
    "CoordinatorSettings",
    "Sent",
    "StationRecord",
    "local_max",
]

# A station sends telemetry every period and on changes, at most every 0.1 s
# (firmware.link.station_link): 20 a second sustained, bursts of 50, is a flood beyond that.
FLOOD_RATE = 20.0
FLOOD_BURST = 50.0
# How long the ts of each message sent to a station is remembered, to recognize its
# acknowledgement: beyond the longest validity a station accepts, no honest station can still
# have it in force (station_link.DEFAULT_MAX_VALID_S), plus as much again for slow telemetry.
SENT_MEMORY_S = 2.0 * DEFAULT_MAX_VALID_S
SENT_MEMORY_MAX = 4096


@dataclass(frozen=True, slots=True)
class CoordinatorSettings:
    """The coordinator's timing. Stations must use the same ``rise_delay_s`` (or longer)."""

    valid_s: float = 30.0
    publish_period_s: float = 5.0
    # Three telemetry periods (5 s) without a word: the station is treated as possibly in
    # fallback (long before it could rise; this only reacts earlier than the ack rule).
    station_silent_s: float = 15.0
    # The longest a message to a connected station takes, broker included (loopback MQTT is
    # a few ms; the simulator's default link is 200 ms).
    latency_margin_s: float = 1.0
    rise_delay_s: float = DEFAULT_RISE_DELAY_S
    # How long a fresh coordinator counts a station it has never heard from at its port
    # maximum (a predecessor's limits may still be in force); None: valid_s + rise_delay_s +
    # latency margin, after which every station has surely fallen back or heard from us.
    startup_hold_s: float | None = None
    control: ControlSettings = field(default_factory=ControlSettings)

    def __post_init__(self) -> None:
        for name in ("valid_s", "publish_period_s", "station_silent_s", "rise_delay_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be > 0 and finite, not {value}")
        if not (math.isfinite(self.latency_margin_s) and self.latency_margin_s >= 0.0):
            raise ValueError("latency_margin_s must be >= 0 and finite")
        if self.valid_s > DEFAULT_MAX_VALID_S:
            raise ValueError(
                f"valid_s {self.valid_s:g} s is above the {DEFAULT_MAX_VALID_S:g} s a station "
                "accepts (firmware.link.station_link)"
            )
        if self.valid_s < 2.0 * self.publish_period_s + self.latency_margin_s:
            raise ValueError(
                "valid_s must cover two publish periods and the latency margin, or stations "
                "fall back between two regular messages"
            )
        # firmware.link.station_link: the stations' expiries spread over one period, one more
        # for a lost last message, plus latency each side; the EV response comes on top.
        need = EV_RESPONSE_S + 2.0 * self.publish_period_s + 2.0 * self.latency_margin_s
        if self.rise_delay_s < need - 1e-9:
            raise ValueError(
                f"rise_delay_s {self.rise_delay_s:g} s is too short for a "
                f"{self.publish_period_s:g} s publish period (at least {need:g} s: EV response, "
                "two periods, latency)"
            )

    @property
    def hold_s(self) -> float:
        if self.startup_hold_s is not None:
            return self.startup_hold_s
        return self.valid_s + self.rise_delay_s + self.latency_margin_s

    @property
    def window_s(self) -> float:
        """How long a dropped bound keeps counting after the coordinator hears of it."""
        return EV_RESPONSE_S + self.latency_margin_s


@dataclass(frozen=True, slots=True)
class Sent:
    """One limits message sent to a station."""

    ts: float
    at: float  # coordinator time it was sent
    values: dict[str, float]


@dataclass(slots=True)
class StationRecord:
    """What the coordinator knows of one station: what it sent it, what it heard from it,
    the flood allowance of its telemetry, and whether it trusts it."""

    id: str
    ports: tuple[str, ...]
    sent: list[Sent] = field(default_factory=list)  # since the acknowledged one (included)
    acked: Sent | None = None
    heard_at: float | None = None
    tel_ts: float | None = None
    status: str | None = None
    offline: bool = False
    telemetry: dict[str, PortTelemetry] = field(default_factory=dict)
    published: dict[str, float] | None = None
    seq: int = 0
    last_ts: float = -math.inf
    tokens: float = FLOOD_BURST
    tokens_at: float | None = None
    # ts -> when, of every message sent within SENT_MEMORY_S (oldest first): what an
    # acknowledgement may name. first_ts: our first message to it (older ts: a predecessor's).
    history: dict[float, float] = field(default_factory=dict)
    first_ts: float | None = None
    untrusted: str | None = None  # why, while it is untrusted
    behaved_since: float | None = None  # untrusted, but consistent since then
    force: bool = False  # send its limits at the next step (it has just (re)connected)

    def take_token(self, now: float) -> bool:
        if self.tokens_at is not None and now > self.tokens_at:
            self.tokens = min(FLOOD_BURST, self.tokens + (now - self.tokens_at) * FLOOD_RATE)
        if self.tokens_at is None or now > self.tokens_at:
            self.tokens_at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def local_max(tree: LimitTree, ports: tuple[str, ...]) -> list[tuple[str, float]]:
    """The most each of a station's ports can be offered by its own limits (port ratings, Power
    Select, its feed and every breaker above it), whatever any message says: what an untrusted
    station is reserved at.

    Its ports alone at full demand, shared max-min fair: under a shared single-phase feed every
    split of the feed loads each limit above it the same, so this is the most the station can
    put on any of them. Ports on different phases could load one phase more with an uneven
    split: then each port is counted at the most it could take alone.
    """
    specs = [tree.ports[pid] for pid in ports]
    if len({p.phases for p in specs}) == 1:
        result = allocate(tree, {p.id: PortRequest(want_a=p.cap_a) for p in specs})
        return [(pid, result.amps[pid]) for pid in ports]
    alone: list[tuple[str, float]] = []
    for p in specs:
        result = allocate(tree, {p.id: PortRequest(want_a=p.cap_a)})
        alone.append((p.id, result.amps[p.id]))
    return alone
