"""Site files: the tree of groups and ports a site shares, with its schedules and meters.

One job: read a site file (docs/design.md, "File shapes"; for ``ampshare allocate``, the
coordinator and site scenarios) into a ``SiteConfig``: the ``SiteSpec`` the allocation core
runs on, which station owns each port, each group's time-of-use ``schedule:`` (the guide,
"Time of Use (TOU) Power Sharing") and site ``meter:`` (dynamic load management, the guide,
"How to set the Limits?" 3). Every refusal is a ``ConfigError`` naming file, line and field.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import yaml

from controller.model import GroupSpec, SiteSpec
from controller.schedule import (
    MINUTES_PER_DAY,
    ScheduleEntry,
    ScheduleError,
    WeeklySchedule,
    parse_clock,
    parse_days,
)
from controller.site import DEFAULT_METER_STALE_S, SiteConfig, SiteMeterSpec, default_station
from firmware.config.common import (
    SITE_GROUP_KEYS,
    SITE_PORT_KEYS,
    GroupEntry,
    PortDefaults,
    PortEntry,
    check_spec,
    check_unique,
    parse_group,
    parse_port,
    top_defaults,
)
from hal import pilot
from hal.yamlnodes import Value, fmt, load_document

__all__ = [
    "SITE_KEYS",
    "load_site",
    "load_site_config",
    "site_config_from_value",
    "site_from_value",
]

SITE_KEYS = ("site", "voltage_v", "policy", "min_a", "groups", "ports")


def load_site(path: str | os.PathLike[str]) -> SiteSpec:
    """Read a site file (docs/design.md, "File shapes"): a tree of groups and the ports on it."""
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
    top = doc.mapping(SITE_KEYS, ("site", "groups", "ports"))
    site_id = top.require("site").ident()
    voltage_v, policy, min_a = top_defaults(top)
    groups = [
        parse_group(item, SITE_GROUP_KEYS, ("id",))
        for item in top.require("groups").sequence(allow_empty=False)
    ]
    check_unique(groups, "group")
    defaults = PortDefaults(
        voltage_v=voltage_v,
        min_a=min_a,
        max_a=None,
        rating_a=pilot.MAX_A,  # PWM encodes at most 80 A (IEC 61851-1 Table A.7)
        rating_why=f"J1772 PWM encodes at most {fmt(pilot.MAX_A)} A",
    )
    ports = [
        parse_port(item, SITE_PORT_KEYS, defaults)
        for item in top.require("ports").sequence(allow_empty=False)
    ]
    check_unique(ports, "port")
    spec = SiteSpec(
        id=site_id,
        groups=tuple(g.spec for g in groups),
        ports=tuple(p.spec for p in ports),
        policy=policy,
    )
    check_spec(spec, top, groups, ports)
    _site_link_id(top.require("site"), site_id, "site")
    schedules, meters = _site_extras(groups)
    return SiteConfig(spec, _stations(ports), schedules, meters)


_SCHEDULE_KEYS = ("days", "from", "to", "kw", "a")
_METER_KEYS = ("url", "topic", "max_kw", "stale_s", "conservative_kw")


def _site_link_id(where: Value, ident: str, what: str) -> None:
    # Site and station ids are MQTT topic levels (firmware.link.topics; MQTT 3.1.1, 4.7.1).
    if len(ident) > 64 or any(c in "/+#\0" for c in ident):
        where.fail(f"{ident!r} cannot be a {what} id on the link (at most 64 characters, no / + #)")


def _stations(ports: Sequence[PortEntry]) -> dict[str, tuple[str, ...]]:
    """Which station each port belongs to: ``station:``, or its id up to the last "."."""
    stations: dict[str, list[str]] = {}
    for p in ports:
        value = p.fields.get("station")
        station = default_station(p.spec.id) if value is None else value.ident()
        _site_link_id(value or p.fields.require("id"), station, "station")
        stations.setdefault(station, []).append(p.spec.id)
    return {sid: tuple(pids) for sid, pids in stations.items()}


def _site_extras(
    groups: Sequence[GroupEntry],
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
            amount = kw_v.in_range(0.0, group.limit_kw)
            units.append("kw")
        else:
            assert a_v is not None
            limit_a = group.limit_a
            if limit_a is None:
                a_v.fail(
                    f"group {group.id!r} has no breaker_a: an A schedule lowers the group's "
                    "current limit (80 % of its breaker)"
                )
            amount = a_v.in_range(0.0, limit_a)
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
    max_kw = group.limit_kw if max_v is None else max_v.in_range(0.0, group.limit_kw)
    stale_v = fields.get("stale_s")
    stale = DEFAULT_METER_STALE_S if stale_v is None else stale_v.duration()
    if not stale > 0.0:
        assert stale_v is not None
        stale_v.fail("must be > 0")
    conservative = fields.require("conservative_kw").in_range(0.0, max_kw)
    return SiteMeterSpec(
        max_kw=max_kw, conservative_kw=conservative, url=url, topic=topic, stale_s=stale
    )
