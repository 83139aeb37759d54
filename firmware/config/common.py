"""What station and site files share: the small checks, and the breaker groups and ports.

One job: read a ``groups:`` or ``ports:`` entry (the same keys in a station file and a site
file, a few more in each) into the controller's ``GroupSpec`` / ``PortSpec``, and refuse a
tree of them at the file:line of its first problem. Only what the file alone knows is checked
while reading (value types, the station model's or J1772's ratings, duplicate ids with the
line of the first); every electrical rule is `controller.validate`'s, run on the built spec
(`check_spec`), so each is written once. Every refusal is a ``ConfigError`` naming file, line
and field.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from controller.model import (
    DEFAULT_MIN_A,
    J1772_MIN_A,
    GroupSpec,
    Phases,
    Policy,
    PortSpec,
    SiteSpec,
)
from controller.validate import MAX_VOLTAGE_V, MIN_VOLTAGE_V, Kind, Problem, validate
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
    "check_spec",
    "check_unique",
    "fail_at",
    "parse_group",
    "parse_min_a",
    "parse_phases",
    "parse_policy",
    "parse_port",
    "readable_file",
    "top_defaults",
]

DEFAULT_VOLTAGE_V = 208.0  # the guide's examples are 208 V (the 400 A / 208 V panel)

# The port fields a file's top level sets for every port that does not write its own.
_TOP_LEVEL_PORT_FIELDS = ("min_a", "voltage_v")


# ---- small checks ----------------------------------------------------------------------------


def readable_file(value: Value) -> str:
    """A path relative to the config file's directory that must be a readable file."""
    path = os.path.join(os.path.dirname(os.path.abspath(value.path)), value.string())
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        value.fail(f"{path}: no such readable file")
    return path


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


def parse_group(item: Value, keys: tuple[str, ...], required: tuple[str, ...]) -> GroupEntry:
    """One ``groups:`` entry with the keys its file allows."""
    gid = item.mapping(None, ("id",)).require("id").ident()
    item = item.renamed(f"groups[{gid}]")
    fields = item.mapping(keys, required)  # re-read so nested fields carry the id in their name
    # A site group's schedule: and meter: are read by firmware.config.site (SiteConfig).
    parent = fields.get("parent")
    breaker = fields.get("breaker_a")
    limit_kw = fields.get("limit_kw")
    phases = fields.get("phases")
    spec = GroupSpec(
        id=gid,
        parent=None if parent is None else parent.ident(),
        breaker_a=None if breaker is None else breaker.number(),
        phases=1 if phases is None else phases.integer(),
        limit_kw=None if limit_kw is None else limit_kw.number(),
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


def parse_port(item: Value, keys: tuple[str, ...], defaults: PortDefaults) -> PortEntry:
    """One ``ports:`` entry, its rating held to the model's (or J1772's)."""
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
        if max_value is None and power_select > max_a:
            # max_a is not written: the cap is the model's rating, which validate cannot know
            # (it would say "the port's max_a").
            ps_value.fail(
                f"{fmt(power_select)} is above the port's rating (allowed: {fmt(J1772_MIN_A)}.."
                f"{fmt(max_a)}; {defaults.rating_why}; Power Select only lowers)"
            )

    min_value = fields.get("min_a")
    fb_value = fields.get("fallback_a")
    phases_value = fields.get("phases")
    volts_value = fields.get("voltage_v")
    kw_value = fields.get("rated_kw")
    spec = PortSpec(
        id=pid,
        group=group,
        max_a=max_a,
        phases=defaults.phases if phases_value is None else parse_phases(phases_value),
        voltage_v=defaults.voltage_v if volts_value is None else volts_value.number(),
        power_select_a=power_select,
        min_a=defaults.min_a if min_value is None else min_value.number(),
        fallback_a=None if fb_value is None else fb_value.number(),
        rated_kw=None if kw_value is None else kw_value.number(),
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


def check_spec(
    spec: SiteSpec,
    top: Fields,
    groups: Sequence[GroupEntry],
    ports: Sequence[PortEntry],
    *,
    jumper: bool | None = None,
    root: Value | None = None,
) -> None:
    """Refuse ``spec`` at the file:line of the first problem `controller.validate` finds.

    ``groups`` and ``ports`` are the entries ``spec`` was built from, in its order; groups
    ``spec`` has before them were made up by the loader (a station's grouping root) and stand
    for ``root``. ``jumper``: None for a site, else the station's jumper.
    """
    problems = validate(spec, jumper=jumper)
    if problems:
        offset = len(spec.groups) - len(groups)
        fail_at(problems[0], top, groups, ports, offset=offset, root=root)


def fail_at(
    problem: Problem,
    top: Fields,
    groups: Sequence[GroupEntry],
    ports: Sequence[PortEntry],
    *,
    offset: int = 0,
    root: Value | None = None,
) -> NoReturn:
    """Refuse ``problem`` at the value it names.

    ``problem.index`` counts in the spec: ``groups[index - offset]`` (below ``offset``: a
    made-up group, refused at ``root``), ``ports[index]``; a problem of the site as a whole is
    its ``groups:``. A field the entry does not write is the entry's, except a port's
    ``min_a`` / ``voltage_v`` taken from the file's top level (refused there, naming the
    port), and a cap without Power Select (its ``max_a``).
    """
    message = problem.message
    if problem.where == "site":
        top.require("groups").fail(message)
    assert problem.index is not None
    entry: GroupEntry | PortEntry
    if problem.where == "group":
        if problem.index < offset:
            assert root is not None
            root.fail(message)
        entry = groups[problem.index - offset]
    else:
        entry = ports[problem.index]
    field = problem.field
    if field is None:
        if problem.kind is Kind.ROOT:
            # An extra root: say where the root is, a line validate cannot know.
            first = next(g for g in groups if g.spec.parent is None)
            message += f" ({first.spec.id!r} is on line {first.where.line})"
        entry.where.fail(message)
    value = entry.fields.get(field)
    if value is None and problem.where == "port" and field in _TOP_LEVEL_PORT_FIELDS:
        default = top.get(field)
        if default is not None:
            default.fail(f"port {problem.id}: {message}")
    if value is None and problem.kind is Kind.CAP_ABOVE_BREAKER:
        value = entry.fields.get("max_a")
    (value or entry.where).fail(message, field=f"{entry.where.field}.{field}")


def top_defaults(top: Fields) -> tuple[float, Policy, float]:
    """voltage_v, policy and min_a: defaults for every port (same keys in site and station)."""
    volts = top.get("voltage_v")
    policy = top.get("policy")
    min_a = top.get("min_a")
    # Checked here, not only by validate: a default is refused at its line even when every
    # port writes its own value.
    return (
        DEFAULT_VOLTAGE_V if volts is None else volts.in_range(MIN_VOLTAGE_V, MAX_VOLTAGE_V),
        Policy.EQUAL if policy is None else parse_policy(policy),
        DEFAULT_MIN_A if min_a is None else parse_min_a(min_a),
    )
