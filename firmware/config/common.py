"""What station and site files share: the small checks, and the breaker groups and ports.

One job: read a ``groups:`` or ``ports:`` entry (the same keys in a station file and a site
file, a few more in each) into the controller's ``GroupSpec`` / ``PortSpec``, and check what a
tree of them must satisfy wherever it is written: unique ids, one acyclic tree, every port on a
group, every port's cap within 80 % of each breaker above it, all ports at their fallback within
every group (the guide, "Power Sharing Features", "Handling Offline Stations"). Every refusal
is a ``ConfigError`` naming file, line and field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controller.limits import RESERVED_IDS, port_kw_per_a, port_line_currents
from controller.model import DEFAULT_MIN_A, J1772_MIN_A, GroupSpec, Phases, Policy, PortSpec
from hal.yamlnodes import Fields, Value, fmt

__all__ = [
    "DEFAULT_VOLTAGE_V",
    "PORT_KEYS",
    "SITE_GROUP_KEYS",
    "SITE_PORT_KEYS",
    "STATION_GROUP_KEYS",
    "STATION_PORT_KEYS",
    "GroupEntry",
    "PortDefaults",
    "PortEntry",
    "ancestors",
    "check_caps_under_breakers",
    "check_fallbacks",
    "check_ports_on_groups",
    "check_tree",
    "check_unique",
    "parse_group",
    "parse_group_id",
    "parse_min_a",
    "parse_phases",
    "parse_policy",
    "parse_port",
    "top_defaults",
]

DEFAULT_VOLTAGE_V = 208.0  # the guide's examples are 208 V (the 400 A / 208 V panel)

_GUIDE_POWER_SELECT = "the guide, Power Select: 'CT4000 installed for 16A service (20A breaker)'"
_GUIDE_FALLBACK = "the guide, Handling Offline Stations"


# ---- small checks ----------------------------------------------------------------------------


def parse_policy(value: Value) -> Policy:
    """``policy:``, one of controller.model.Policy."""
    text = value.string()
    try:
        return Policy(text)
    except ValueError:
        allowed = ", ".join(p.value for p in Policy)
        value.fail(f"unknown policy {text!r} (allowed: {allowed})")


def parse_phases(value: Value) -> Phases:
    """A port's wiring (``L1-L2`` ...), one of controller.model.Phases."""
    text = value.string()
    try:
        return Phases(text)
    except ValueError:
        allowed = "|".join(p.value for p in Phases)
        value.fail(f"unknown wiring {text!r} (allowed: {allowed})")


def parse_min_a(value: Value, top: str = "port max") -> float:
    """A minimum current: at least J1772's 6 A; ``top`` names the upper end in the refusal."""
    number = value.number()
    if number < J1772_MIN_A:
        value.fail(
            f"{fmt(number)} is below the J1772 minimum of {fmt(J1772_MIN_A)} A "
            f"(allowed: {fmt(J1772_MIN_A)}..{top})"
        )
    return number


# ---- groups and ports (shared by station and site files) -------------------------------------

SITE_GROUP_KEYS = ("id", "parent", "breaker_a", "phases", "limit_kw", "schedule", "meter")
STATION_GROUP_KEYS = ("id", "breaker_a", "phases", "limit_kw")
PORT_KEYS = (
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
STATION_PORT_KEYS = (*PORT_KEYS, "meter")
SITE_PORT_KEYS = (*PORT_KEYS, "station")


@dataclass(frozen=True, slots=True)
class GroupEntry:
    """A group as written: its spec, where it is in the file, and its fields (to point at)."""

    spec: GroupSpec
    where: Value
    fields: Fields


@dataclass(frozen=True, slots=True)
class PortEntry:
    """A port as written: its spec, where it is in the file, and its fields (to point at)."""

    spec: PortSpec
    where: Value
    fields: Fields


def parse_group_id(value: Value) -> str:
    """A group id: also a limit id in allocations, so not a binding word and without ':'."""
    gid = value.ident()
    if ":" in gid:
        value.fail(f"{gid!r}: ':' is reserved for limit ids like 'panel:L1'")
    if gid in RESERVED_IDS:
        value.fail(f"{gid!r} is a reserved word (not allowed: {', '.join(sorted(RESERVED_IDS))})")
    return gid


def parse_group(item: Value, keys: tuple[str, ...], required: tuple[str, ...]) -> GroupEntry:
    """One ``groups:`` entry with the keys its file allows."""
    id_value = item.mapping(None, ("id",)).require("id")
    gid = parse_group_id(id_value)
    item = item.renamed(f"groups[{gid}]")
    fields = item.mapping(keys, required)  # re-read so nested fields carry the id in their name
    # A site group's schedule: and meter: are read by firmware.config.site (SiteConfig).
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
        breaker_a=None if breaker is None else breaker.positive(" A: a breaker rating"),
        phases=phases,
        limit_kw=None if limit_kw is None else limit_kw.positive(" kW"),
    )
    return GroupEntry(spec, item, fields)


@dataclass(frozen=True, slots=True)
class PortDefaults:
    """What a port that does not say takes from its file (station model or site defaults)."""

    voltage_v: float
    min_a: float
    max_a: float | None  # None: max_a is required
    rating_a: float  # the most max_a / power_select_a may be
    rating_why: str
    phases: Phases = Phases.L1_L2
    min_where: Value | None = None  # the top-level min_a, to point at when it is the culprit


def parse_port(item: Value, keys: tuple[str, ...], defaults: PortDefaults) -> PortEntry:
    """One ``ports:`` entry: its rating, Power Select, minimum and fallback checked."""
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
                f"{fmt(max_a)} is out of range (allowed: {fmt(J1772_MIN_A)}..{fmt(rating)}"
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
            why = defaults.rating_why if max_value is None else f"the port's max_a is {fmt(max_a)}"
            ps_value.fail(
                f"{fmt(power_select)} is above the port's rating "
                f"(allowed: {fmt(J1772_MIN_A)}..{fmt(max_a)}; {why}; Power Select only lowers)"
            )
        if power_select < J1772_MIN_A:
            ps_value.fail(
                f"{fmt(power_select)} is below the J1772 minimum of {fmt(J1772_MIN_A)} A "
                f"(allowed: {fmt(J1772_MIN_A)}..{fmt(max_a)})"
            )
    cap = max_a if power_select is None else min(max_a, power_select)

    min_value = fields.get("min_a")
    min_a = defaults.min_a
    if min_value is not None:
        min_a = parse_min_a(min_value, f"port cap {fmt(cap)}")
    if min_a > cap:
        message = (
            f"the port's minimum {fmt(min_a)} A is above its cap of {fmt(cap)} A: it could "
            f"never charge (allowed: min_a {fmt(J1772_MIN_A)}..{fmt(cap)})"
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
                f"{fmt(fallback)} is above the port's cap of {fmt(cap)} A "
                f"(allowed: 0 or {fmt(J1772_MIN_A)}..{fmt(cap)}; {_GUIDE_FALLBACK})"
            )
        if fallback != 0 and fallback < J1772_MIN_A:
            fb_value.fail(
                f"{fmt(fallback)} cannot be offered: J1772's minimum is {fmt(J1772_MIN_A)} A "
                f"(allowed: 0 = pause, or {fmt(J1772_MIN_A)}..{fmt(cap)})"
            )

    phases_value = fields.get("phases")
    volts_value = fields.get("voltage_v")
    kw_value = fields.get("rated_kw")
    spec = PortSpec(
        id=pid,
        group=group,
        max_a=max_a,
        phases=defaults.phases if phases_value is None else parse_phases(phases_value),
        voltage_v=defaults.voltage_v if volts_value is None else volts_value.in_range(1, 1000),
        power_select_a=power_select,
        min_a=min_a,
        fallback_a=fallback,
        rated_kw=None if kw_value is None else kw_value.positive(" kW"),
    )
    return PortEntry(spec, item, fields)


def check_unique(items: Sequence[GroupEntry] | Sequence[PortEntry], kind: str) -> None:
    """No two groups (or ports) with one id."""
    seen: dict[str, int] = {}
    for entry in items:
        sid = entry.spec.id
        if sid in seen:
            entry.fields.require("id").fail(
                f"duplicate {kind} id {sid!r} (first used on line {seen[sid]})"
            )
        seen[sid] = entry.where.line


def ancestors(group_id: str, groups: Mapping[str, GroupSpec]) -> list[GroupSpec]:
    """The group and every group above it (the tree is already checked acyclic)."""
    chain: list[GroupSpec] = []
    current: str | None = group_id
    while current is not None:
        spec = groups[current]
        chain.append(spec)
        current = spec.parent
    return chain


def check_tree(groups: Sequence[GroupEntry], single_root: bool) -> None:
    """Every parent exists, no cycle and, for a site, one root."""
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


def check_ports_on_groups(ports: Sequence[PortEntry], groups: Mapping[str, GroupSpec]) -> None:
    """Every port names a group that exists."""
    for p in ports:
        if p.spec.group not in groups:
            p.fields.require("group").fail(
                f"{p.spec.group!r} is not a group (groups: {', '.join(groups)})"
            )


def check_caps_under_breakers(ports: Sequence[PortEntry], groups: Mapping[str, GroupSpec]) -> None:
    """A breaker must carry every port beneath it alone: cap <= 80 % of the breaker."""
    for p in ports:
        for g in ancestors(p.spec.group, groups):
            limit = g.limit_a
            if limit is None or p.spec.cap_a <= limit + 1e-9:
                continue
            assert g.breaker_a is not None
            what = "power_select_a" if p.spec.power_select_a is not None else "max_a"
            where = p.fields.get(what) or p.where
            where.fail(
                f"the port's cap of {fmt(p.spec.cap_a)} A is above 80 % of the "
                f"{fmt(g.breaker_a)} A breaker of group {g.id!r} ({fmt(limit)} A): the breaker "
                f"must carry the port; set power_select_a <= {fmt(limit)} "
                f"({_GUIDE_POWER_SELECT})",
                field=f"{p.where.field}.power_select_a",
            )


def check_fallbacks(groups: Sequence[GroupEntry], ports: Sequence[PortEntry]) -> None:
    """All ports at their fallback at once must fit every group (the guide, Offline Stations).

    Per line conductor by phasor sums, with the limit tree's own electrical model
    (controller.limits): every port's contribution to a line lies within 30 degrees of it, so
    the magnitude only grows with each port's current and "all at fallback" is the worst case.
    Ports without ``fallback_a`` count as 0 A offline (paused).
    """
    by_id = {g.spec.id: g.spec for g in groups}
    for g in groups:
        beneath = [
            p.spec for p in ports if p.spec.fallback_a and g.spec in ancestors(p.spec.group, by_id)
        ]
        if not beneath:
            continue
        listing = ", ".join(f"{p.id}: {fmt(p.fallback_a or 0)} A" for p in beneath)
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
                    f"the fallbacks of the ports beneath ({listing}) put {fmt(round(worst, 2))} A "
                    f"on {worst_line}, above the group's 80 % limit of {fmt(limit)} A: lower "
                    f"fallback_a so all ports at fallback stay within it ({_GUIDE_FALLBACK})"
                )
        if g.spec.limit_kw is not None:
            total = sum(port_kw_per_a(p) * (p.fallback_a or 0.0) for p in beneath)
            if total > g.spec.limit_kw + 1e-9:
                (g.fields.get("limit_kw") or g.where).fail(
                    f"the fallbacks of the ports beneath ({listing}) draw "
                    f"{fmt(round(total, 2))} kW, above the group's {fmt(g.spec.limit_kw)} kW: "
                    f"lower fallback_a ({_GUIDE_FALLBACK})"
                )


def top_defaults(top: Fields) -> tuple[float, Policy, float]:
    """voltage_v, policy and min_a: defaults for every port (same keys in site and station)."""
    volts = top.get("voltage_v")
    policy = top.get("policy")
    min_a = top.get("min_a")
    return (
        DEFAULT_VOLTAGE_V if volts is None else volts.in_range(1, 1000),
        Policy.EQUAL if policy is None else parse_policy(policy),
        DEFAULT_MIN_A if min_a is None else parse_min_a(min_a),
    )
