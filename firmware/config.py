"""Station, site and state files -> validated, typed objects; every refusal names file:line:field.

One job: read what an installer or operator wrote and either return the objects the firmware
and the allocation core run on (``StationConfig``, ``SiteSpec``, ``State``) or raise one
``ConfigError`` whose ``str()`` is ``FILE:LINE: FIELD: message`` and says what is allowed. A
config value can never make a station offer more than its breaker's continuous rating allows
(DESIGN.md, "Safety is local"): what would, is refused here, before anything runs.

Shapes (DESIGN.md, "Command line"): the site file and the state file exactly as documented
there; the station file as documented at the top of configs/ct4000-jumper.yaml. "The guide" is
shared/seeds/001_ff8fa30b3ade3f41.txt.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import os
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import yaml

from controller.limits import RESERVED_IDS, port_kw_per_a, port_line_currents
from controller.model import (
    DEFAULT_MIN_A,
    J1772_MIN_A,
    GroupSpec,
    Phases,
    Policy,
    PortSpec,
    SiteSpec,
)
from controller.schedule import (
    MINUTES_PER_DAY,
    ScheduleEntry,
    ScheduleError,
    WeeklySchedule,
    parse_clock,
    parse_days,
)
from controller.site import DEFAULT_METER_STALE_S, SiteConfig, SiteMeterSpec, default_station
from firmware.link.auth import KeyFileError, Keyring, load_keyring
from firmware.models import MODELS, StationModel
from firmware.port import PortConfig
from firmware.yamlnodes import ConfigError, Fields, Value, load_document, parse_duration
from hal.sim.ev import EvSpec

__all__ = [
    "ConfigError",
    "LinkConfig",
    "PortDemand",
    "SiteConfig",
    "State",
    "StationConfig",
    "load_document",
    "load_site",
    "load_site_config",
    "load_state",
    "load_station",
    "parse_broker_url",
    "parse_duration",
    "parse_evs",
    "site_config_from_value",
    "site_from_value",
    "station_from_value",
]

# DESIGN.md "J1772 essentials": the contactor must open within 100 ms of C -> B, and the loop
# is what notices C -> B, so one loop period must fit in that budget with margin.
MAX_LOOP_PERIOD_S = 0.1
DEFAULT_LOOP_PERIOD_S = 0.05
# DESIGN.md duty table (SAE J1772 / IEC 61851-1 Table A.8): PWM encodes at most 80 A (96 %).
J1772_MAX_A = 80.0
DEFAULT_VOLTAGE_V = 208.0  # the guide's examples are 208 V (the 400 A / 208 V panel)
DEFAULT_URL = "sim://"
DEFAULT_TELEMETRY_PERIOD_S = 5.0  # docs/mqtt.md: telemetry at least this often, and on change
MQTT_PORT = 1883  # IANA registered port for MQTT
MQTTS_PORT = 8883  # IANA registered port for MQTT over TLS
# MQTT 3.1.1, 3.1.3.5: a password is at most 65535 bytes; a longer file is not a password file.
MAX_PASSWORD_CHARS = 65535

_GUIDE_POWER_SELECT = "the guide, Power Select: 'CT4000 installed for 16A service (20A breaker)'"
_GUIDE_FALLBACK = "the guide, Handling Offline Stations"


# ---- result types --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """A station's ``link:`` block: its MQTT broker and site (docs/mqtt.md).

    ``password`` is read from ``password_file`` when the file is loaded (a missing file is a
    config error, not a run-time surprise). ``ca``/``cert``/``key`` are absolute paths.
    """

    broker: str  # as written: mqtt://host:port or mqtts://host:port
    site: str
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    telemetry_period_s: float = DEFAULT_TELEMETRY_PERIOD_S
    # The site key (firmware.link.auth) read from ``key_file``; None only with ``insecure:
    # true`` (a lab link whose limits anyone on the broker can forge).
    keyring: Keyring | None = field(default=None, repr=False)
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class SimMeterServer:
    """``sim: meter_server:``: the simulated ports' meters served as Modbus TCP units 1..N."""

    model: str  # a meter map (configs/meters/ name or .yaml path)
    host: str = "127.0.0.1"
    port: int = 5020


@dataclass(frozen=True, slots=True)
class StationConfig:
    """A validated station file.

    ``site`` is the station's sharing part in the site vocabulary: its ports ("1", "2", in
    order) and its breaker groups (jumper: one group for both ports, the root; no jumper: one
    per port, under a limitless grouping root named after the station, because a limit tree
    has exactly one root).
    ``meter_urls`` is parallel to ``site.ports``. ``control`` is passed to the controller's
    settings as keyword arguments.
    """

    id: str
    model: str
    jumper: bool
    voltage_v: float
    site: SiteSpec
    hardware_url: str = DEFAULT_URL
    meter_urls: tuple[str, ...] = ()
    port_config: PortConfig = field(default_factory=PortConfig)
    control: Mapping[str, float] = field(default_factory=dict)
    sim_evs: tuple[EvSpec, ...] = ()
    loop_period_s: float = DEFAULT_LOOP_PERIOD_S
    path: str = ""
    link: LinkConfig | None = None  # site sharing over MQTT (docs/mqtt.md); None: standalone
    # ``sim: meter_server:``: serve the simulated ports' meters over Modbus TCP (docs/meters.md)
    sim_meter_server: SimMeterServer | None = None

    @property
    def station_model(self) -> StationModel:
        return MODELS[self.model]

    @property
    def port_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.site.ports)

    def meter_url(self, port_id: str) -> str:
        return dict(zip(self.port_ids, self.meter_urls, strict=True))[port_id]


@dataclass(frozen=True, slots=True)
class PortDemand:
    """A charging port in a state file: what the car takes at most, and its session order."""

    demand_a: float | None = None  # None: the port's cap
    since: float | None = None


@dataclass(frozen=True, slots=True)
class State:
    """A validated state file: the instant one allocation is computed for."""

    ports: Mapping[str, PortDemand]
    time: datetime | None = None
    site_load_kw: float | None = None


# ---- small checks ----------------------------------------------------------------------------


def _fmt(amps: float) -> str:
    return f"{amps:g}"


def _positive(value: Value, what: str = "") -> float:
    number = value.number()
    if number <= 0:
        value.fail(f"{_fmt(number)} is not allowed (must be > 0{what})")
    return number


def _in_range(value: Value, low: float, high: float) -> float:
    number = value.number()
    if not low <= number <= high:
        value.fail(f"{_fmt(number)} is out of range (allowed: {_fmt(low)}..{_fmt(high)})")
    return number


def _policy(value: Value) -> Policy:
    text = value.string()
    try:
        return Policy(text)
    except ValueError:
        allowed = ", ".join(p.value for p in Policy)
        value.fail(f"unknown policy {text!r} (allowed: {allowed})")


def _phases(value: Value) -> Phases:
    text = value.string()
    try:
        return Phases(text)
    except ValueError:
        allowed = "|".join(p.value for p in Phases)
        value.fail(f"unknown wiring {text!r} (allowed: {allowed})")


def _min_a(value: Value, top: str = "port max") -> float:
    number = value.number()
    if number < J1772_MIN_A:
        value.fail(
            f"{_fmt(number)} is below the J1772 minimum of {_fmt(J1772_MIN_A)} A "
            f"(allowed: {_fmt(J1772_MIN_A)}..{top})"
        )
    return number


# ---- groups and ports (shared by station and site files) -------------------------------------

_SITE_GROUP_KEYS = ("id", "parent", "breaker_a", "phases", "limit_kw", "schedule", "meter")
_STATION_GROUP_KEYS = ("id", "breaker_a", "phases", "limit_kw")
_PORT_KEYS = (
    "id",
    "group",
    "max_a",
    "phases",
    "voltage_v",
    "power_select_a",
    "min_a",
    "fallback_a",
    "rated_kw",
)
_STATION_PORT_KEYS = (*_PORT_KEYS, "meter")
_SITE_PORT_KEYS = (*_PORT_KEYS, "station")


@dataclass(frozen=True, slots=True)
class _Group:
    spec: GroupSpec
    where: Value
    fields: Fields


@dataclass(frozen=True, slots=True)
class _Port:
    spec: PortSpec
    where: Value
    fields: Fields


def _group_id(value: Value) -> str:
    """A group id: also a limit id in allocations, so not a binding word and without ':'."""
    gid = value.ident()
    if ":" in gid:
        value.fail(f"{gid!r}: ':' is reserved for limit ids like 'panel:L1'")
    if gid in RESERVED_IDS:
        value.fail(f"{gid!r} is a reserved word (not allowed: {', '.join(sorted(RESERVED_IDS))})")
    return gid


def _parse_group(item: Value, keys: tuple[str, ...], required: tuple[str, ...]) -> _Group:
    id_value = item.mapping(None, ("id",)).require("id")
    gid = _group_id(id_value)
    item = item.renamed(f"groups[{gid}]")
    fields = item.mapping(keys, required)  # re-read so nested fields carry the id in their name
    # A site group's schedule: and meter: are read by _site_extras (SiteConfig).
    parent = fields.get("parent")
    breaker = fields.get("breaker_a")
    limit_kw = fields.get("limit_kw")
    phases_value = fields.get("phases")
    phases = 1
    if phases_value is not None:
        phases = phases_value.integer()
        if phases not in (1, 3):
            phases_value.fail(f"{phases} is not allowed (allowed: 1 or 3)")
    spec = GroupSpec(
        id=gid,
        parent=None if parent is None else parent.ident(),
        breaker_a=None if breaker is None else _positive(breaker, " A: a breaker rating"),
        phases=phases,
        limit_kw=None if limit_kw is None else _positive(limit_kw, " kW"),
    )
    return _Group(spec, item, fields)


@dataclass(frozen=True, slots=True)
class _PortDefaults:
    voltage_v: float
    min_a: float
    max_a: float | None  # None: max_a is required
    rating_a: float  # the most max_a / power_select_a may be
    rating_why: str
    phases: Phases = Phases.L1_L2
    min_where: Value | None = None  # the top-level min_a, to point at when it is the culprit


def _parse_port(item: Value, keys: tuple[str, ...], defaults: _PortDefaults) -> _Port:
    required = ("id", "group") if defaults.max_a is not None else ("id", "group", "max_a")
    pid = item.mapping(None, ("id",)).require("id").ident()
    item = item.renamed(f"ports[{pid}]")
    fields = item.mapping(keys, required)
    group = fields.require("group").ident()

    rating = defaults.rating_a
    max_value = fields.get("max_a")
    if max_value is not None:
        max_a = max_value.number()
        if not J1772_MIN_A <= max_a <= rating:
            max_value.fail(
                f"{_fmt(max_a)} is out of range (allowed: {_fmt(J1772_MIN_A)}..{_fmt(rating)}"
                f"; {defaults.rating_why})"
            )
    else:
        assert defaults.max_a is not None
        max_a = defaults.max_a

    ps_value = fields.get("power_select_a")
    power_select = None
    if ps_value is not None:
        power_select = ps_value.number()
        if power_select > max_a:
            why = defaults.rating_why if max_value is None else f"the port's max_a is {_fmt(max_a)}"
            ps_value.fail(
                f"{_fmt(power_select)} is above the port's rating "
                f"(allowed: {_fmt(J1772_MIN_A)}..{_fmt(max_a)}; {why}; Power Select only lowers)"
            )
        if power_select < J1772_MIN_A:
            ps_value.fail(
                f"{_fmt(power_select)} is below the J1772 minimum of {_fmt(J1772_MIN_A)} A "
                f"(allowed: {_fmt(J1772_MIN_A)}..{_fmt(max_a)})"
            )
    cap = max_a if power_select is None else min(max_a, power_select)

    min_value = fields.get("min_a")
    min_a = defaults.min_a
    if min_value is not None:
        min_a = _min_a(min_value, f"port cap {_fmt(cap)}")
    if min_a > cap:
        message = (
            f"the port's minimum {_fmt(min_a)} A is above its cap of {_fmt(cap)} A: it could "
            f"never charge (allowed: min_a {_fmt(J1772_MIN_A)}..{_fmt(cap)})"
        )
        if min_value is None and defaults.min_where is not None:
            defaults.min_where.fail(f"port {pid}: {message}")
        (min_value or ps_value or max_value or item).fail(message)

    fb_value = fields.get("fallback_a")
    fallback = None
    if fb_value is not None:
        fallback = fb_value.number()
        if fallback > cap:
            fb_value.fail(
                f"{_fmt(fallback)} is above the port's cap of {_fmt(cap)} A "
                f"(allowed: 0 or {_fmt(J1772_MIN_A)}..{_fmt(cap)}; {_GUIDE_FALLBACK})"
            )
        if fallback != 0 and fallback < J1772_MIN_A:
            fb_value.fail(
                f"{_fmt(fallback)} cannot be offered: J1772's minimum is {_fmt(J1772_MIN_A)} A "
                f"(allowed: 0 = pause, or {_fmt(J1772_MIN_A)}..{_fmt(cap)})"
            )

    phases_value = fields.get("phases")
    volts_value = fields.get("voltage_v")
    kw_value = fields.get("rated_kw")
    spec = PortSpec(
        id=pid,
        group=group,
        max_a=max_a,
        phases=defaults.phases if phases_value is None else _phases(phases_value),
        voltage_v=defaults.voltage_v if volts_value is None else _in_range(volts_value, 1, 1000),
        power_select_a=power_select,
        min_a=min_a,
        fallback_a=fallback,
        rated_kw=None if kw_value is None else _positive(kw_value, " kW"),
    )
    return _Port(spec, item, fields)


def _unique(items: Sequence[_Group] | Sequence[_Port], kind: str) -> None:
    seen: dict[str, int] = {}
    for entry in items:
        sid = entry.spec.id
        if sid in seen:
            entry.fields.require("id").fail(
                f"duplicate {kind} id {sid!r} (first used on line {seen[sid]})"
            )
        seen[sid] = entry.where.line


def _ancestors(group_id: str, groups: Mapping[str, GroupSpec]) -> list[GroupSpec]:
    """The group and every group above it (the tree is already checked acyclic)."""
    chain: list[GroupSpec] = []
    current: str | None = group_id
    while current is not None:
        spec = groups[current]
        chain.append(spec)
        current = spec.parent
    return chain


def _check_tree(groups: Sequence[_Group], single_root: bool) -> None:
    by_id = {g.spec.id: g for g in groups}
    roots = [g for g in groups if g.spec.parent is None]
    for g in groups:
        parent = g.spec.parent
        if parent is not None and parent not in by_id:
            g.fields.require("parent").fail(
                f"parent {parent!r} is not a group: an orphan (groups: {', '.join(by_id)})"
            )
        if parent == g.spec.id:
            g.fields.require("parent").fail("a group cannot be its own parent")
    for g in groups:  # cycles: walking up from any group must end at a root
        seen = [g.spec.id]
        current = g.spec.parent
        while current is not None:
            if current in seen:
                g.fields.require("parent").fail(
                    f"the groups form a cycle ({' -> '.join([*seen, current])}): "
                    "a tree needs one root and every other group naming its parent"
                )
            seen.append(current)
            current = by_id[current].spec.parent
    if single_root and len(roots) > 1:
        roots[1].where.fail(
            f"group {roots[1].spec.id!r} has no parent but {roots[0].spec.id!r} is already the "
            f"root (line {roots[0].where.line}): a site is one tree; name a parent"
        )


def _check_ports_on_groups(ports: Sequence[_Port], groups: Mapping[str, GroupSpec]) -> None:
    for p in ports:
        if p.spec.group not in groups:
            p.fields.require("group").fail(
                f"{p.spec.group!r} is not a group (groups: {', '.join(groups)})"
            )


def _check_caps_under_breakers(ports: Sequence[_Port], groups: Mapping[str, GroupSpec]) -> None:
    """A breaker must carry every port beneath it alone: cap <= 80 % of the breaker."""
    for p in ports:
        for g in _ancestors(p.spec.group, groups):
            limit = g.limit_a
            if limit is None or p.spec.cap_a <= limit + 1e-9:
                continue
            assert g.breaker_a is not None
            what = "power_select_a" if p.spec.power_select_a is not None else "max_a"
            where = p.fields.get(what) or p.where
            where.fail(
                f"the port's cap of {_fmt(p.spec.cap_a)} A is above 80 % of the "
                f"{_fmt(g.breaker_a)} A breaker of group {g.id!r} ({_fmt(limit)} A): the breaker "
                f"must carry the port; set power_select_a <= {_fmt(limit)} "
                f"({_GUIDE_POWER_SELECT})",
                field=f"{p.where.field}.power_select_a",
            )


def _check_fallbacks(groups: Sequence[_Group], ports: Sequence[_Port]) -> None:
    """All ports at their fallback at once must fit every group (the guide, Offline Stations).

    Per line conductor by phasor sums, with the limit tree's own electrical model
    (controller.limits): every port's contribution to a line lies within 30 degrees of it, so
    the magnitude only grows with each port's current and "all at fallback" is the worst case.
    Ports without ``fallback_a`` count as 0 A offline (paused).
    """
    by_id = {g.spec.id: g.spec for g in groups}
    for g in groups:
        beneath = [
            p.spec for p in ports if p.spec.fallback_a and g.spec in _ancestors(p.spec.group, by_id)
        ]
        if not beneath:
            continue
        listing = ", ".join(f"{p.id}: {_fmt(p.fallback_a or 0)} A" for p in beneath)
        limit = g.spec.limit_a
        if limit is not None:
            lines: dict[int, complex] = {}
            for p in beneath:
                for line, current in port_line_currents(p, p.fallback_a or 0.0).items():
                    lines[line] = lines.get(line, 0j) + current
            line_no, worst = max(((n, abs(v)) for n, v in lines.items()), key=lambda t: t[1])
            worst_line = f"L{line_no}"
            if worst > limit + 1e-6:
                (g.fields.get("breaker_a") or g.where).fail(
                    f"the fallbacks of the ports beneath ({listing}) put {_fmt(round(worst, 2))} A "
                    f"on {worst_line}, above the group's 80 % limit of {_fmt(limit)} A: lower "
                    f"fallback_a so all ports at fallback stay within it ({_GUIDE_FALLBACK})"
                )
        if g.spec.limit_kw is not None:
            total = sum(port_kw_per_a(p) * (p.fallback_a or 0.0) for p in beneath)
            if total > g.spec.limit_kw + 1e-9:
                (g.fields.get("limit_kw") or g.where).fail(
                    f"the fallbacks of the ports beneath ({listing}) draw "
                    f"{_fmt(round(total, 2))} kW, above the group's {_fmt(g.spec.limit_kw)} kW: "
                    f"lower fallback_a ({_GUIDE_FALLBACK})"
                )


def _site_common(top: Fields) -> tuple[float, Policy, float]:
    """voltage_v, policy and min_a: defaults for every port (same keys in site and station)."""
    volts = top.get("voltage_v")
    policy = top.get("policy")
    min_a = top.get("min_a")
    return (
        DEFAULT_VOLTAGE_V if volts is None else _in_range(volts, 1, 1000),
        Policy.EQUAL if policy is None else _policy(policy),
        DEFAULT_MIN_A if min_a is None else _min_a(min_a),
    )


# ---- site file -------------------------------------------------------------------------------

_SITE_KEYS = ("site", "voltage_v", "policy", "min_a", "groups", "ports")


def load_site(path: str | os.PathLike[str]) -> SiteSpec:
    """Read a site file (DESIGN.md, "Command line"): a tree of groups and the ports on it."""
    doc = load_document(path)
    return site_from_value(doc)


def site_from_value(doc: Value) -> SiteSpec:
    """A site from an already-read document (scenario files may embed or reference one)."""
    return site_config_from_value(doc).spec


def load_site_config(path: str | os.PathLike[str]) -> SiteConfig:
    """Read a site file with what the coordinator needs besides the tree: which station owns
    each port (``station:``, default the port id up to its last "."), the groups' time-of-use
    ``schedule:`` and site ``meter:`` (controller.site, controller.schedule)."""
    return site_config_from_value(load_document(path))


def site_config_from_value(doc: Value) -> SiteConfig:
    """`load_site_config` from an already-read document."""
    top = doc.mapping(_SITE_KEYS, ("site", "groups", "ports"))
    site_id = top.require("site").ident()
    voltage_v, policy, min_a = _site_common(top)
    groups = [
        _parse_group(item, _SITE_GROUP_KEYS, ("id",))
        for item in top.require("groups").sequence(allow_empty=False)
    ]
    _unique(groups, "group")
    _check_tree(groups, single_root=True)
    by_id = {g.spec.id: g.spec for g in groups}
    defaults = _PortDefaults(
        voltage_v=voltage_v,
        min_a=min_a,
        min_where=top.get("min_a"),
        max_a=None,
        rating_a=J1772_MAX_A,
        rating_why=f"J1772 PWM encodes at most {_fmt(J1772_MAX_A)} A",
    )
    ports = [
        _parse_port(item, _SITE_PORT_KEYS, defaults)
        for item in top.require("ports").sequence(allow_empty=False)
    ]
    _unique(ports, "port")
    _check_ports_on_groups(ports, by_id)
    _check_caps_under_breakers(ports, by_id)
    _check_fallbacks(groups, ports)
    _site_link_id(top.require("site"), site_id, "site")
    spec = SiteSpec(
        id=site_id,
        groups=tuple(g.spec for g in groups),
        ports=tuple(p.spec for p in ports),
        policy=policy,
    )
    schedules, meters = _site_extras(groups)
    return SiteConfig(spec, _stations(ports), schedules, meters)


_SCHEDULE_KEYS = ("days", "from", "to", "kw", "a")
_METER_KEYS = ("url", "topic", "max_kw", "stale_s", "conservative_kw")


def _site_link_id(where: Value, ident: str, what: str) -> None:
    # Site and station ids are MQTT topic levels (firmware.link.topics; MQTT 3.1.1, 4.7.1).
    if len(ident) > 64 or any(c in "/+#\0" for c in ident):
        where.fail(f"{ident!r} cannot be a {what} id on the link (at most 64 characters, no / + #)")


def _stations(ports: Sequence[_Port]) -> dict[str, tuple[str, ...]]:
    """Which station each port belongs to: ``station:``, or its id up to the last "."."""
    stations: dict[str, list[str]] = {}
    for p in ports:
        value = p.fields.get("station")
        station = default_station(p.spec.id) if value is None else value.ident()
        _site_link_id(value or p.fields.require("id"), station, "station")
        stations.setdefault(station, []).append(p.spec.id)
    return {sid: tuple(pids) for sid, pids in stations.items()}


def _site_extras(
    groups: Sequence[_Group],
) -> tuple[dict[str, WeeklySchedule], dict[str, SiteMeterSpec]]:
    schedules: dict[str, WeeklySchedule] = {}
    meters: dict[str, SiteMeterSpec] = {}
    for g in groups:
        value = g.fields.get("schedule")
        if value is not None:
            schedules[g.spec.id] = _schedule(value, g.spec)
        value = g.fields.get("meter")
        if value is not None:
            meters[g.spec.id] = _site_meter(value, g.spec)
    return schedules, meters


def _clock(value: Value, *, end: bool) -> int:
    """``"HH:MM"``; unquoted YAML reads 06:00 as a base-60 integer, so the source text counts."""
    node = value.node
    if not isinstance(node, yaml.ScalarNode) or value.is_null():
        value.fail('expected a time of day like "06:00"')
    try:
        return parse_clock(str(node.value), end=end)
    except ScheduleError as exc:
        value.fail(str(exc))


def _schedule(value: Value, group: GroupSpec) -> WeeklySchedule:
    """A group's weekly time-of-use schedule (the guide, "Time of Use (TOU) Power Sharing")."""
    items = value.sequence(allow_empty=False)
    entries: list[ScheduleEntry] = []
    units: list[str] = []
    for item in items:
        fields = item.mapping(_SCHEDULE_KEYS, ("days",))
        days_value = fields.require("days")
        try:
            if isinstance(days_value.node, yaml.SequenceNode):
                days = frozenset(
                    d for part in days_value.sequence(allow_empty=False) for d in _days(part)
                )
            else:
                days = _days(days_value)
        except ScheduleError as exc:
            days_value.fail(str(exc))
        start_v, end_v = fields.get("from"), fields.get("to")
        start = 0 if start_v is None else _clock(start_v, end=False)
        end = MINUTES_PER_DAY if end_v is None else _clock(end_v, end=True)
        if start == end % MINUTES_PER_DAY and end_v is not None and start_v is not None:
            end_v.fail("from and to are the same time: say 00:00 to 24:00 for a whole day")
        kw_v, a_v = fields.get("kw"), fields.get("a")
        if (kw_v is None) == (a_v is None):
            item.fail("an entry has exactly one of kw: (a power limit) or a: (a current limit)")
        if kw_v is not None:
            if group.limit_kw is None:
                kw_v.fail(
                    f"group {group.id!r} has no limit_kw: a kW schedule lowers a configured kW "
                    "limit (set limit_kw to the most it may ever be)"
                )
            amount = _in_range(kw_v, 0.0, group.limit_kw)
            units.append("kw")
        else:
            assert a_v is not None
            limit_a = group.limit_a
            if limit_a is None:
                a_v.fail(
                    f"group {group.id!r} has no breaker_a: an A schedule lowers the group's "
                    "current limit (80 % of its breaker)"
                )
            amount = _in_range(a_v, 0.0, limit_a)
            units.append("a")
        if units[0] != units[-1]:
            item.fail("all entries of one schedule use kw:, or all use a:")
        entries.append(ScheduleEntry(days, start, end, amount))
    try:
        return WeeklySchedule(entries, units[0])
    except ScheduleError as exc:
        where = items[exc.entries[-1]] if exc.entries else value
        where.fail(str(exc))


def _days(value: Value) -> frozenset[int]:
    return parse_days(value.string())


def _site_meter(value: Value, group: GroupSpec) -> SiteMeterSpec:
    """Dynamic load management on a group (the guide, "How to set the Limits?" 3)."""
    fields = value.mapping(_METER_KEYS, ("conservative_kw",))
    if group.limit_kw is None:
        value.fail(
            f"group {group.id!r} has no limit_kw: the site maximum minus the unmanaged load "
            "lowers a configured kW limit (set limit_kw to the site maximum)"
        )
    url_v, topic_v = fields.get("url"), fields.get("topic")
    topic = False if topic_v is None else topic_v.boolean()
    if (url_v is None) == (not topic):
        value.fail("a site meter has exactly one source: url: (a meter backend) or topic: true")
    url = None if url_v is None else url_v.url()
    max_v = fields.get("max_kw")
    max_kw = group.limit_kw if max_v is None else _in_range(max_v, 0.0, group.limit_kw)
    stale_v = fields.get("stale_s")
    stale = DEFAULT_METER_STALE_S if stale_v is None else stale_v.duration()
    if not stale > 0.0:
        assert stale_v is not None
        stale_v.fail("must be > 0")
    conservative = _in_range(fields.require("conservative_kw"), 0.0, max_kw)
    return SiteMeterSpec(
        max_kw=max_kw, conservative_kw=conservative, url=url, topic=topic, stale_s=stale
    )


# ---- station file ----------------------------------------------------------------------------

_STATION_KEYS = (
    "station",
    "model",
    "jumper",
    "voltage_v",
    "policy",
    "min_a",
    "hardware",
    "loop_period_s",
    "groups",
    "ports",
    "port_machine",
    "control",
    "sim",
    "link",
)


def load_station(path: str | os.PathLike[str]) -> StationConfig:
    """Read a station file (shape: the comment at the top of configs/ct4000-jumper.yaml)."""
    return station_from_value(load_document(path))


def station_from_value(doc: Value) -> StationConfig:
    """A station from an already-read document (``load_document``)."""
    path = doc.path
    top = doc.mapping(_STATION_KEYS, ("station", "model", "groups", "ports"))
    station_id = top.require("station").ident()
    model = _station_model(top.require("model"))
    jumper_value = top.get("jumper")
    jumper = False if jumper_value is None else jumper_value.boolean()
    if jumper and not model.has_jumper:
        assert jumper_value is not None
        with_jumper = ", ".join(m.name for m in MODELS.values() if m.has_jumper)
        jumper_value.fail(
            f"the {model.name} has no Power Sharing jumper option (models with one: "
            f"{with_jumper}; the guide, Power Sharing Jumper)"
        )
    voltage_v, policy, min_a = _site_common(top)

    # The installer must state the breaker (the guide, "How is Power Sharing Configured": the
    # electrical contractor configures "the specific breaker size"): breaker_a is required.
    groups = [
        _parse_group(item, _STATION_GROUP_KEYS, ("id", "breaker_a"))
        for item in top.require("groups").sequence(allow_empty=False)
    ]
    _unique(groups, "group")
    feed_max = model.jumper_breaker_a if jumper else model.breaker_a
    assert feed_max is not None
    for g in groups:
        assert g.spec.breaker_a is not None
        if g.spec.breaker_a > feed_max:
            per = "a jumpered feed" if jumper else "a port's dedicated feed"
            g.fields.require("breaker_a").fail(
                f"{_fmt(g.spec.breaker_a)} A is above the {model.name}'s rating for {per} "
                f"(allowed: up to {_fmt(feed_max)} A; {model.source})"
            )
    by_id = {g.spec.id: g.spec for g in groups}

    defaults = _PortDefaults(
        voltage_v=voltage_v,
        min_a=min_a,
        min_where=top.get("min_a"),
        max_a=model.port_max_a,
        rating_a=model.port_max_a,
        rating_why=f"the {model.name} is rated {_fmt(model.port_max_a)} A per port",
    )
    ports_value = top.require("ports")
    ports = [
        _parse_port(item, _STATION_PORT_KEYS, defaults)
        for item in ports_value.sequence(allow_empty=False)
    ]
    _unique(ports, "port")
    for p in ports:
        if p.spec.id not in model.port_ids:
            p.fields.require("id").fail(
                f"the {model.name} has no port {p.spec.id!r} (allowed: {', '.join(model.port_ids)})"
            )
    listed = {p.spec.id for p in ports}
    missing = [pid for pid in model.port_ids if pid not in listed]
    if missing:
        ports_value.fail(
            f"port {missing[0]!r} is missing: the {model.name} has ports "
            f"{', '.join(model.port_ids)} and each must be on a breaker group"
        )
    _check_ports_on_groups(ports, by_id)
    _check_jumper_topology(jumper, groups, ports)
    _check_caps_under_breakers(ports, by_id)
    _check_fallbacks(groups, ports)

    ports.sort(key=lambda p: model.port_ids.index(p.spec.id))
    meter_urls = tuple(
        DEFAULT_URL if (url := p.fields.get("meter")) is None else url.url() for p in ports
    )
    site = SiteSpec(
        id=station_id,
        groups=_station_tree(station_id, top.require("station"), groups),
        ports=tuple(p.spec for p in ports),
        policy=policy,
    )

    hardware = top.get("hardware")
    loop = top.get("loop_period_s")
    port_machine = top.get("port_machine")
    control = top.get("control")
    sim = top.get("sim")
    return StationConfig(
        id=station_id,
        model=model.name,
        jumper=jumper,
        voltage_v=voltage_v,
        site=site,
        hardware_url=DEFAULT_URL if hardware is None else hardware.url(),
        meter_urls=meter_urls,
        port_config=PortConfig() if port_machine is None else _port_config(port_machine),
        control={} if control is None else _control(control),
        sim_evs=() if sim is None else _sim(sim, model.port_ids),
        sim_meter_server=None if sim is None else _sim_meter_server(sim),
        link=None if (link := top.get("link")) is None else _link(link, station_id),
        loop_period_s=DEFAULT_LOOP_PERIOD_S if loop is None else _loop_period(loop),
        path=path,
    )


_LINK_KEYS = (
    "broker",
    "site",
    "username",
    "password",
    "password_file",
    "tls",
    "telemetry_period",
    "key_file",
    "insecure",
)
# A topic level must not hold MQTT's separator or wildcards (MQTT 3.1.1, 4.7.1).
_TOPIC_FORBIDDEN = frozenset("/+#\0")


def parse_broker_url(text: str) -> tuple[str, int, bool]:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` -> (host, port, tls); ValueError,
    whose message never repeats a password written into the URL."""
    parts = urlsplit(text)
    text = redact_url(text)
    if parts.scheme not in ("mqtt", "mqtts") or "://" not in text:
        raise ValueError(f"{text!r} is not a broker URL (expected mqtt://HOST:PORT or mqtts://...)")
    if parts.path.strip("/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(
            f"{text!r}: expected only a host and port, e.g. mqtt://127.0.0.1:1883 "
            "(credentials go in username / password_file)"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a TCP port (1..65535)") from None
    if port == 0:
        raise ValueError(f"{text!r}: the port is not a TCP port (1..65535)")
    if not parts.hostname:
        raise ValueError(f"{text!r}: no host")
    tls = parts.scheme == "mqtts"
    return parts.hostname, port or (MQTTS_PORT if tls else MQTT_PORT), tls


def redact_url(text: str) -> str:
    """``text`` with any ``user:password@`` of a URL replaced by ``***@``: what an error message
    or a log line may repeat of a URL somebody typed (a password must never reach a log)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}{sep}{netloc}{slash}{tail}"


def _topic_id(value: Value, what: str) -> str:
    ident = value.ident()
    bad = sorted(_TOPIC_FORBIDDEN & set(ident))
    if bad or len(ident) > 64:
        value.fail(
            f"{ident!r} cannot be an MQTT topic level (the {what} id names topics; "
            "allowed: up to 64 characters without '/', '+', '#')"
        )
    return ident


def _readable_file(value: Value) -> str:
    """A path relative to the config file's directory that must be a readable file."""
    path = os.path.join(os.path.dirname(os.path.abspath(value.path)), value.string())
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        value.fail(f"{path}: no such readable file")
    return path


def _link(value: Value, station_id: str) -> LinkConfig:
    """The ``link:`` block (docs/mqtt.md, "Station config")."""
    fields = value.mapping(_LINK_KEYS, ("broker", "site"))
    broker_value = fields.require("broker")
    broker = broker_value.string()
    try:
        host, port, tls = parse_broker_url(broker)
    except ValueError as exc:
        broker_value.fail(str(exc))
    site = _topic_id(fields.require("site"), "site")
    if _TOPIC_FORBIDDEN & set(station_id):
        value.fail(
            f"the station id {station_id!r} names MQTT topics: it must not contain '/', '+', '#'"
        )
    username = None if (user := fields.get("username")) is None else user.string()
    password_value, file_value = fields.get("password"), fields.get("password_file")
    password = None
    if password_value is not None and file_value is not None:
        file_value.fail("give password or password_file, not both")
    if password_value is not None:
        password = password_value.string()
    if file_value is not None:
        path = _readable_file(file_value)
        try:
            with open(path, encoding="utf-8") as stream:
                text = stream.read(MAX_PASSWORD_CHARS + 1)
        except (OSError, UnicodeDecodeError) as exc:  # e.g. a binary file named by mistake
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not text"
            file_value.fail(f"{path}: cannot read a password from it ({reason})")
        if len(text) > MAX_PASSWORD_CHARS:
            file_value.fail(f"{path}: longer than {MAX_PASSWORD_CHARS} characters (not a password)")
        password = text.strip()  # a trailing newline is not part of a password
        if not password:
            file_value.fail(f"{path} is empty")
    if password is not None and username is None:
        (password_value or file_value or value).fail("a password needs a username")
    ca = cert = key = None
    tls_value = fields.get("tls")
    if tls_value is not None:
        if not tls:
            tls_value.fail("TLS options need an mqtts:// broker URL (default port 8883)")
        tls_fields = tls_value.mapping(("ca", "cert", "key"))
        ca = None if (v := tls_fields.get("ca")) is None else _readable_file(v)
        cert = None if (v := tls_fields.get("cert")) is None else _readable_file(v)
        key = None if (v := tls_fields.get("key")) is None else _readable_file(v)
        if (cert is None) != (key is None):
            tls_value.fail("a client certificate needs both cert and key")
    period_value = fields.get("telemetry_period")
    period = DEFAULT_TELEMETRY_PERIOD_S
    if period_value is not None:
        period = period_value.duration()
        if not 0.1 <= period <= 60.0:
            period_value.fail(
                f"{_fmt(period)} s is not allowed (allowed: 0.1 s .. 60 s; the coordinator "
                "takes a station that stays silent much longer for offline)"
            )
    keyring, key_path = None, None
    key_value, insecure_value = fields.get("key_file"), fields.get("insecure")
    insecure = False if insecure_value is None else insecure_value.boolean()
    if key_value is not None:
        if insecure_value is not None and insecure:
            insecure_value.fail("insecure: true and a key_file contradict each other")
        key_path = _readable_file(key_value)
        try:
            keyring = load_keyring(key_path)
        except KeyFileError as exc:
            key_value.fail(str(exc))
    elif not insecure:
        value.fail(
            "a site link needs key_file: (the site key that signs limits; `ampshare keygen "
            "FILE` makes one), or insecure: true for a lab without one (docs/mqtt.md, "
            '"Threat model")',
            f"{value.field}.key_file",
        )
    return LinkConfig(
        broker=broker,
        site=site,
        host=host,
        port=port,
        tls=tls,
        username=username,
        password=password,
        ca=ca,
        cert=cert,
        key=key,
        telemetry_period_s=period,
        keyring=keyring,
        key_file=key_path,
    )


def _station_tree(station_id: str, where: Value, groups: Sequence[_Group]) -> tuple[GroupSpec, ...]:
    """The station's groups as one tree (the limit tree has exactly one root).

    With one feed (jumper, or a one-port model) that feed is the root. With a breaker per port,
    a pure grouping root named after the station (no limit of its own) holds them.
    """
    if len(groups) == 1:
        return (groups[0].spec,)
    for g in groups:
        if g.spec.id == station_id:
            g.fields.require("id").fail(
                f"{station_id!r} is the station's id, which names the group holding its breakers "
                "(choose another group id)"
            )
    root_id = _group_id(where)
    root = GroupSpec(id=root_id)
    return (root, *(dataclasses.replace(g.spec, parent=root_id) for g in groups))


def _station_model(value: Value) -> StationModel:
    name = value.string().strip().lower()
    model = MODELS.get(name)
    if model is None:
        value.fail(f"unknown station model {name!r} (known: {', '.join(MODELS)})")
    return model


def _check_jumper_topology(jumper: bool, groups: Sequence[_Group], ports: Sequence[_Port]) -> None:
    """Jumper: both ports on the one feed. No jumper: each port on its own breaker."""
    first_on: dict[str, _Port] = {}
    for p in ports:
        other = first_on.get(p.spec.group)
        if other is not None and not jumper:
            p.fields.require("group").fail(
                f"ports {other.spec.id} and {p.spec.id} are both on group {p.spec.group!r}, but "
                "without the jumper each port has its own breaker (set jumper: true if the Power "
                "Sharing jumper is installed; the guide, Power Sharing Jumper)"
            )
        first_on.setdefault(p.spec.group, p)
    if jumper:
        first = ports[0]
        for p in ports[1:]:
            if p.spec.group != first.spec.group:
                p.fields.require("group").fail(
                    f"with the jumper installed both ports share one feed, but port {p.spec.id} "
                    f"is on {p.spec.group!r} and port {first.spec.id} on {first.spec.group!r} "
                    "(the guide, Power Sharing Jumper: 'fed from a single feed')"
                )
    for g in groups:
        if g.spec.id not in first_on:
            g.where.fail(f"group {g.spec.id!r} feeds no port (a station's groups are its breakers)")


def _loop_period(value: Value) -> float:
    seconds = value.duration()
    if not 0 < seconds <= MAX_LOOP_PERIOD_S:
        value.fail(
            f"{_fmt(seconds)} s is not allowed (allowed: > 0 .. {_fmt(MAX_LOOP_PERIOD_S)} s: the "
            "contactor must open within 100 ms of C -> B, DESIGN.md J1772 essentials)"
        )
    return seconds


def _port_config(value: Value) -> PortConfig:
    """``port_machine:`` keys are PortConfig's fields, found at run time so new ones just work."""
    hints = typing.get_type_hints(PortConfig)
    names = [f.name for f in dataclasses.fields(PortConfig)]
    fields = value.mapping(names)
    kwargs: dict[str, object] = {}
    for name in fields:
        item = fields.require(name)
        kind = hints[name]
        if kind is bool:
            kwargs[name] = item.boolean()
        elif kind is int:
            number = item.integer()
            if number < 0:
                item.fail(f"{number} is not allowed (must be >= 0)")
            kwargs[name] = number
        elif kind is float:
            number_f = item.duration() if name.endswith("_s") else item.number()
            if number_f < 0:
                item.fail(f"{_fmt(number_f)} is not allowed (must be >= 0)")
            kwargs[name] = number_f
        elif kind is str:
            kwargs[name] = item.string()
        else:  # a field type this loader cannot read from YAML: say so, never guess
            item.fail(f"cannot be set from a config file (type {kind})")
    ratio = kwargs.get("overdraw_ratio")
    if isinstance(ratio, float) and ratio < 1.0:
        fields.require("overdraw_ratio").fail(
            f"{_fmt(ratio)} would fault vehicles that follow their offer (allowed: >= 1)"
        )
    return PortConfig(**kwargs)  # type: ignore[arg-type]


def _control_fields() -> dict[str, object] | None:
    """ControlSettings' fields and their types when the controller provides it.

    Looked up at run time (not imported statically) so the loader only checks what the
    controller really takes; without it, any number passes through.
    """
    try:
        module = importlib.import_module("controller.core")
    except ImportError:
        return None
    settings = getattr(module, "ControlSettings", None)
    if not isinstance(settings, type) or not dataclasses.is_dataclass(settings):
        return None
    hints = typing.get_type_hints(settings)
    return {f.name: hints.get(f.name, float) for f in dataclasses.fields(settings)}


def _control(value: Value) -> dict[str, float]:
    """``control:`` is passed to ControlSettings as numbers; ``*_s`` keys also take durations,
    integer settings must be integers."""
    known = _control_fields()
    fields = value.mapping(sorted(known) if known is not None else None)
    out: dict[str, float] = {}
    for name in fields:
        item = fields.require(name)
        if known is not None and known[name] is int:
            out[name] = item.integer()
        else:
            out[name] = item.duration() if name.endswith("_s") else item.number()
    return out


_EV_KEYS = (
    "port",
    "arrive",
    "leave",
    "max_a",
    "phases",
    "battery_kwh",
    "soc",
    "target_soc",
    "response_s",
    "min_a",
    "wakes",
    "overdraw_a",
)


def _sim(value: Value, port_ids: Collection[str]) -> tuple[EvSpec, ...]:
    fields = value.mapping(("evs", "meter_server"))
    evs = fields.get("evs")
    return () if evs is None else parse_evs(evs, port_ids)


def _sim_meter_server(value: Value) -> SimMeterServer | None:
    server = value.mapping(("evs", "meter_server")).get("meter_server")
    if server is None:
        return None
    fields = server.mapping(("model", "host", "port"), ("model",))
    model_value = fields.require("model")
    model = model_value.string()
    # The map is checked now (a typo is a config error with its line, not a failed start);
    # hal.modbus.maps reads YAML only, it does not load the Modbus library.
    from hal.modbus.maps import MapError, load_map

    try:
        load_map(model)
    except MapError as exc:
        model_value.fail(str(exc))
    spec = SimMeterServer(model=model)
    if (host := fields.get("host")) is not None:
        spec = dataclasses.replace(spec, host=host.string())
    if (port := fields.get("port")) is not None:
        number = port.integer()
        if not 1 <= number <= 65535:
            port.fail(f"{number} is not a TCP port (allowed: 1..65535)")
        spec = dataclasses.replace(spec, port=number)
    return spec


def parse_evs(value: Value, port_ids: Collection[str]) -> tuple[EvSpec, ...]:
    """A list of simulated plug-ins (the scenario file's ``evs:`` shape, DESIGN.md).

    Refuses an EV on a port that does not exist, and two EVs on one port at the same time.
    """
    evs: list[tuple[EvSpec, Value]] = []
    for item in value.sequence():
        fields = item.mapping(_EV_KEYS, ("port",))
        port_value = fields.require("port")
        port = port_value.ident()
        if port not in port_ids:
            port_value.fail(f"no port {port!r} (allowed: {', '.join(port_ids)})")
        kwargs: dict[str, object] = {"port": port}
        for key in fields:
            entry = fields.get(key)
            if entry is None or key == "port":
                continue
            if key in ("arrive", "leave", "response_s"):
                kwargs[{"arrive": "arrive_s", "leave": "leave_s"}.get(key, key)] = entry.duration()
            elif key == "wakes":
                kwargs[key] = entry.boolean()
            elif key == "phases":
                phases = entry.integer()
                if phases not in (1, 2, 3):
                    entry.fail(f"{phases} is not allowed (allowed: 1, 2 or 3)")
                kwargs[key] = phases
            elif key in ("soc", "target_soc"):
                kwargs[key] = _in_range(entry, 0.0, 1.0)
            elif key in ("max_a", "battery_kwh"):
                kwargs[key] = _positive(entry)
            else:  # min_a, overdraw_a
                kwargs[key] = _in_range(entry, 0.0, J1772_MAX_A)
        ev = EvSpec(**kwargs)  # type: ignore[arg-type]
        if ev.leave_s is not None and ev.leave_s <= ev.arrive_s:
            (fields.get("leave") or item).fail(
                f"leaves at {_fmt(ev.leave_s)} s, not after it arrives at {_fmt(ev.arrive_s)} s"
            )
        evs.append((ev, item))
    by_port: dict[str, list[tuple[EvSpec, Value]]] = {}
    for ev, item in evs:
        by_port.setdefault(ev.port, []).append((ev, item))
    for plugins in by_port.values():
        plugins.sort(key=lambda pair: pair[0].arrive_s)
        for (before, _), (after, where) in itertools.pairwise(plugins):
            if before.leave_s is None or before.leave_s > after.arrive_s:
                until = (
                    "never leaves" if before.leave_s is None else f"leaves at {before.leave_s:g} s"
                )
                where.fail(
                    f"arrives on port {after.port} at {_fmt(after.arrive_s)} s while the EV "
                    f"that arrived at {_fmt(before.arrive_s)} s is still plugged in ({until})"
                )
    return tuple(ev for ev, _ in evs)


# ---- state file ------------------------------------------------------------------------------

_STATE_KEYS = ("time", "site_load_kw", "ports")
_STATE_PORT_KEYS = ("demand_a", "since")


def load_state(path: str | os.PathLike[str], site: SiteSpec, *, site_meter: bool = False) -> State:
    """Read a state file (YAML or JSON, DESIGN.md "Command line") for ``site``.

    ``site_meter``: the site has a group with a ``meter:`` (DLM), which ``site_load_kw`` feeds;
    without one it lowers the root group's limit_kw, which must then exist.
    """
    doc = load_document(path)
    top = doc.mapping(_STATE_KEYS)
    time_value = top.get("time")
    load_value = top.get("site_load_kw")
    site_load = None
    if load_value is not None:
        site_load = load_value.number()
        if site_load < 0:
            load_value.fail(f"{_fmt(site_load)} is not allowed (must be >= 0 kW)")
        # Dynamic load management: the unmanaged load comes off the site maximum, the root
        # group's limit_kw (the guide, "How to set the Limits?" 3). Without one it means nothing.
        root = next((g for g in site.groups if g.parent is None), None)
        if not site_meter and (root is None or root.limit_kw is None):
            name = "" if root is None else f" {root.id!r}"
            load_value.fail(f"needs a site maximum, but the root group{name} has no limit_kw")
    known = [p.id for p in site.ports]
    ports: dict[str, PortDemand] = {}
    ports_value = top.get("ports")
    if ports_value is not None:
        entries = ports_value.mapping(None)
        for pid in entries:
            entry = entries.values[pid]
            if pid not in known:
                entry.fail(f"unknown port {pid!r} (ports of site {site.id!r}: {', '.join(known)})")
            ports[pid] = _port_demand(entry)
    return State(
        ports=ports,
        time=None if time_value is None else time_value.timestamp(),
        site_load_kw=site_load,
    )


def _port_demand(value: Value) -> PortDemand:
    if value.is_null():  # `st1.2:` alone: charging, defaults
        return PortDemand()
    fields = value.mapping(_STATE_PORT_KEYS)
    demand_value = fields.get("demand_a")
    since_value = fields.get("since")
    demand = None
    if demand_value is not None:
        demand = demand_value.number()
        if demand < 0:
            demand_value.fail(f"{_fmt(demand)} is not allowed (must be >= 0 A)")
    since = None
    if since_value is not None:
        if since_value.node.tag.endswith(":timestamp"):
            moment = since_value.timestamp()
            since = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        else:
            since = since_value.number()
    return PortDemand(demand_a=demand, since=since)
