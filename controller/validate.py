"""Every electrical check of a site or station specification, once, returned as data.

One job: `validate` lists every problem of a `SiteSpec` (an empty list: the spec is sound).
Each `Problem` names the group or port and the field at fault, so the config loader can point
at that field's file:line; `LimitTree.from_spec` raises `TreeError` with them. Nothing else in
the code base repeats these rules.

The rules, each with its source ("the guide" is the ChargePoint Power Sharing Reference Guide,
cited by section). ``where``: g = group, p = port, s = site; field "-": the entry itself.
Kinds marked * are rules of an installation (`INSTALLATION_KINDS`): the config loader refuses
them, `LimitTree.from_spec` compiles them, since the tree's limits keep a site safe anyway.

=======================  =====  ==============  ===========================================
kind                     where  field           rule (source)
=======================  =====  ==============  ===========================================
bad-id                   g, p   id              a non-empty string
reserved-id              g      id              no ':' and no word of `RESERVED_IDS` (a
                                                group id is also a limit id)
duplicate-id             g, p   id              unique among the groups / the ports
group-phases             g      phases          1 or 3
breaker                  g      breaker_a       > 0 and finite
limit-kw                 g      limit_kw        > 0 and finite
unknown-parent           g      parent          the parent is a group
cycle                    g      parent          no group is its own ancestor
root                     g, s   -, groups       exactly one group has no parent
unknown-group            p      group           the port's group is a group
port-phases              p      phases          a `Phases` value
max-a                    p      max_a           > 0 and finite
power-select             p      power_select_a  >= 6 A (SAE J1772)
power-select-above-max*  p      power_select_a  <= max_a: Power Select only lowers (the
                                                guide, "Power Sharing Features")
voltage                  p      voltage_v       1..1000 V (low voltage, IEC 60038)
min-a                    p      min_a           >= 6 A (SAE J1772, IEC 61851-1 Table A.7;
                                                the guide, "Oversubscription and Minimum
                                                Power Levels")
min-above-cap            p      min_a           <= cap, else the port never charges
fallback-unofferable     p      fallback_a      0 (pause) or >= 6 A (SAE J1772)
fallback-above-cap       p      fallback_a      <= cap (the guide, "Handling Offline
                                                Stations")
rated-kw                 p      rated_kw        > 0 and finite
cap-above-breaker*       p      power_select_a  every breaker above a port carries it alone:
                                                cap <= 80 % of the rating, else Power Select
                                                de-rates it (the guide, "Power Sharing at the
                                                Circuit Level", "Power Sharing Features";
                                                NEC 625.41)
jumper-split*            p      group           a station with the jumper: all ports on one
                                                feed (the guide, "Power Sharing Jumper")
shared-breaker*          p      group           a station without it: a breaker per port
empty-group*             g      -               a station: every group feeds a port
fallback-overload        g      breaker_a,      all ports at their fallback level at once fit
                                limit_kw        every limit (the guide, "Handling Offline
                                                Stations", "Failsafe Power Value")
=======================  =====  ==============  ===========================================

The 80 % continuous rating itself is `GroupSpec.limit_a` (`controller.model`); the electrical
model (per-line phasor sums, kW per ampere) is `controller.limits`, which the fallback check
uses as is, so "validate accepts" and "the tree fits every port at its fallback level" can
never disagree. A port's fallback level is ``min(fallback_a, cap)``
(`PortSpec.fallback_level_a`): a port never offers more than its cap, so that is the most it
can draw at fallback.

The station rules apply only to a station's own tree (``validate(spec, jumper=...)``); a site
has grouping nodes and spare breakers without ports.

Size: every electrical check of a spec, by design in one place and one table, each with its
source.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from controller.limits import LOAD_TOLERANCE, RESERVED_IDS, LimitTree, port_line_currents
from controller.model import J1772_MIN_A, GroupSpec, Phases, PortSpec, SiteSpec

__all__ = [
    "INSTALLATION_KINDS",
    "MAX_VOLTAGE_V",
    "MIN_VOLTAGE_V",
    "Kind",
    "Problem",
    "Where",
    "fallback_overloads",
    "validate",
    "validated",
]

# A port's voltage: any real low-voltage supply (IEC 60038: low voltage is up to 1000 V AC).
MIN_VOLTAGE_V = 1.0
MAX_VOLTAGE_V = 1000.0

# How many ports a fallback message lists before it says "and N more".
_LISTED_PORTS = 10

_GUIDE_OFFLINE = "the guide, Handling Offline Stations"
_GUIDE_POWER_SELECT = (
    "the guide, Power Sharing Features: Power Select, "
    "'CT4000 installed for 16A service (20A breaker)'"
)
_GUIDE_JUMPER = "the guide, Power Sharing Jumper"

Where = Literal["group", "port", "site"]


class Kind(enum.StrEnum):
    """Which rule a problem breaks (the table in the module docstring)."""

    BAD_ID = "bad-id"
    RESERVED_ID = "reserved-id"
    DUPLICATE_ID = "duplicate-id"
    GROUP_PHASES = "group-phases"
    BREAKER = "breaker"
    LIMIT_KW = "limit-kw"
    UNKNOWN_PARENT = "unknown-parent"
    CYCLE = "cycle"
    ROOT = "root"
    UNKNOWN_GROUP = "unknown-group"
    PORT_PHASES = "port-phases"
    MAX_A = "max-a"
    POWER_SELECT = "power-select"
    POWER_SELECT_ABOVE_MAX = "power-select-above-max"
    VOLTAGE = "voltage"
    MIN_A = "min-a"
    MIN_ABOVE_CAP = "min-above-cap"
    FALLBACK_UNOFFERABLE = "fallback-unofferable"
    FALLBACK_ABOVE_CAP = "fallback-above-cap"
    RATED_KW = "rated-kw"
    CAP_ABOVE_BREAKER = "cap-above-breaker"
    JUMPER_SPLIT = "jumper-split"
    SHARED_BREAKER = "shared-breaker"
    EMPTY_GROUP = "empty-group"
    FALLBACK_OVERLOAD = "fallback-overload"


# Rules of an installation that a limit tree runs safely without: its group limits hold a
# port to every breaker above it whatever the port's cap, the cap is the lower of max_a and
# Power Select whichever is written higher, and a site has no jumper. The config loader
# refuses them (`validate`); `LimitTree.from_spec` compiles them, since tests, tools and
# benches model such ports on purpose (a 48 A port on a 40 A circuit shows the circuit bind).
INSTALLATION_KINDS = frozenset(
    {
        Kind.POWER_SELECT_ABOVE_MAX,
        Kind.CAP_ABOVE_BREAKER,
        Kind.JUMPER_SPLIT,
        Kind.SHARED_BREAKER,
        Kind.EMPTY_GROUP,
    }
)

# Problems that leave no tree to compile (ids, shape, or numbers the load model multiplies
# by); with any of them the fallback check is skipped rather than run on a broken tree.
_BLOCKING = frozenset(
    {
        Kind.BAD_ID,
        Kind.RESERVED_ID,
        Kind.DUPLICATE_ID,
        Kind.GROUP_PHASES,
        Kind.BREAKER,
        Kind.LIMIT_KW,
        Kind.UNKNOWN_PARENT,
        Kind.CYCLE,
        Kind.UNKNOWN_GROUP,
        Kind.PORT_PHASES,
        Kind.VOLTAGE,
    }
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule.

    ``where`` and ``id`` name the group or port (``"site"``: the spec as a whole, ``id`` its
    site id); ``index`` is its position in ``spec.groups`` or ``spec.ports`` (None for the
    site), which tells duplicate ids apart. ``field`` is the field to point at (None: the
    entry itself); ``message`` says what is wrong and what is allowed, without repeating the
    entry's name (``str()`` adds it).
    """

    kind: Kind
    where: Where
    id: str
    field: str | None
    message: str
    index: int | None = None

    def __str__(self) -> str:
        head = f"{self.where} {self.id!r}"
        return f"{head}: {self.field}: {self.message}" if self.field else f"{head}: {self.message}"


def validate(spec: SiteSpec, *, jumper: bool | None = None) -> list[Problem]:
    """Every problem of ``spec``; [] when it is sound.

    In this order, each in spec order: the groups' own fields, the tree's shape, the ports'
    own fields, the station wiring, caps under breakers, the fallback sums (the fallback sums
    only when the tree's shape and numbers are sound enough to load it).

    ``jumper``: None for a site; for a station's own tree, whether its Power Sharing jumper
    is installed (adds the jumper-split, shared-breaker and empty-group rules).
    """
    return validated(spec, jumper=jumper)[0]


def validated(
    spec: SiteSpec, *, jumper: bool | None = None
) -> tuple[list[Problem], LimitTree | None]:
    """`validate`, and the compiled tree unless a problem outside `INSTALLATION_KINDS` leaves
    ``spec`` no sound limit tree (for `LimitTree.from_spec`)."""
    problems = _group_problems(spec.groups)
    problems += _tree_problems(spec)
    problems += _port_problems(spec)
    groups = _first_by_id(spec.groups)
    if jumper is not None:
        problems += _station_problems(spec, groups, jumper)
    problems += _cap_problems(spec.ports, groups)
    if any(p.kind in _BLOCKING for p in problems):
        return problems, None
    # Compiled only once the shape is sound; it is the very tree from_spec returns.
    tree = LimitTree._compile(spec)
    problems += _fallback_problems(spec, groups, tree)
    sound = all(p.kind in INSTALLATION_KINDS for p in problems)
    return problems, (tree if sound else None)


def fallback_overloads(tree: LimitTree) -> dict[str, float]:
    """Every limit id that all ports at their fallback level at once would overload, with
    that load; {} when the site is safe offline.

    The guide, "Handling Offline Stations": the fallback level is "hard programmed such
    that even if all stations were in their fall-back power level, the power level would be
    below the NEC ratings of the upstream electrical equipment" ("Failsafe Power Value").
    Each port counts at ``min(fallback_a, cap)`` (`PortSpec.fallback_level_a`) and every limit
    at its value in ``tree`` now (lowered caps and limits included). Every port's
    contribution to a line lies within 30 degrees of it (`controller.limits`), so all ports
    at fallback at once is the worst case of any subset.
    """
    return tree.violations({pid: _level(p) for pid, p in tree.ports.items()})


# --- per entry ---------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:g}"


def _show(value: object) -> str:
    """A value as a message shows it: numbers as written (32, 5.9, nan), others as repr."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _fmt(value)
    return repr(value)


def _number(value: object) -> float | None:
    """``value`` as a finite float, or None (NaN, infinities and non-numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _positive(value: object) -> bool:
    number = _number(value)
    return number is not None and number > 0.0


def _name(value: object) -> str:
    return value if isinstance(value, str) else repr(value)


def _id_ok(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _first_by_id(groups: Sequence[GroupSpec]) -> dict[str, GroupSpec]:
    by_id: dict[str, GroupSpec] = {}
    for g in groups:
        if _id_ok(g.id):
            by_id.setdefault(g.id, g)
    return by_id


def _group_problems(groups: Sequence[GroupSpec]) -> list[Problem]:
    out: list[Problem] = []
    seen: set[str] = set()
    for i, g in enumerate(groups):

        def add(kind: Kind, field: str, message: str, g: GroupSpec = g, i: int = i) -> None:
            out.append(Problem(kind, "group", _name(g.id), field, message, i))

        if not _id_ok(g.id):
            add(Kind.BAD_ID, "id", f"{g.id!r} is not an id (a non-empty string)")
        elif ":" in g.id:
            add(Kind.RESERVED_ID, "id", f"{g.id!r}: ':' is reserved for limit ids like 'panel:L1'")
        elif g.id in RESERVED_IDS:
            words = ", ".join(sorted(RESERVED_IDS))
            add(Kind.RESERVED_ID, "id", f"{g.id!r} is a reserved word (not allowed: {words})")
        elif g.id in seen:
            add(Kind.DUPLICATE_ID, "id", f"duplicate group id {g.id!r}")
        else:
            seen.add(g.id)
        if g.phases not in (1, 3):
            add(Kind.GROUP_PHASES, "phases", f"{_show(g.phases)} is not allowed (allowed: 1 or 3)")
        if g.breaker_a is not None and not _positive(g.breaker_a):
            add(
                Kind.BREAKER,
                "breaker_a",
                f"{_show(g.breaker_a)} is not allowed (must be > 0 A: a breaker rating)",
            )
        if g.limit_kw is not None and not _positive(g.limit_kw):
            add(
                Kind.LIMIT_KW,
                "limit_kw",
                f"{_show(g.limit_kw)} is not allowed (must be > 0 kW)",
            )
    return out


def _tree_problems(spec: SiteSpec) -> list[Problem]:
    """Unknown parents, cycles and the one root (a limit tree: each group but the root
    names its parent)."""
    by_id = _first_by_id(spec.groups)
    index: dict[str, int] = {}
    for i, g in enumerate(spec.groups):
        if _id_ok(g.id):
            index.setdefault(g.id, i)
    out: list[Problem] = []
    for gid, g in by_id.items():
        if g.parent is not None and g.parent not in by_id:
            known = ", ".join(by_id)
            out.append(
                Problem(
                    Kind.UNKNOWN_PARENT,
                    "group",
                    gid,
                    "parent",
                    f"parent {g.parent!r} is not a group: an orphan (groups: {known})",
                    index[gid],
                )
            )
    # Walk up from every group once (0: not seen, 1: on the current path, 2: done); a walk
    # that meets its own path has found a cycle, reported once at its first group in order.
    state = dict.fromkeys(by_id, 0)
    cycles: list[list[str]] = []
    for start in by_id:
        path: list[str] = []
        node: str | None = start
        while node is not None and node in by_id and state[node] == 0:
            state[node] = 1
            path.append(node)
            node = by_id[node].parent
        if node is not None and node in by_id and state[node] == 1:
            cycles.append(path[path.index(node) :])
        for seen in path:
            state[seen] = 2
    for cycle in cycles:
        first = min(cycle, key=index.__getitem__)
        k = cycle.index(first)
        ring = [*cycle[k:], *cycle[:k], first]
        message = (
            "a group cannot be its own parent"
            if len(cycle) == 1
            else f"the groups form a cycle ({' -> '.join(ring)}): a tree needs one root and "
            "every other group naming its parent"
        )
        out.append(Problem(Kind.CYCLE, "group", first, "parent", message, index[first]))
    out.sort(key=lambda p: -1 if p.index is None else p.index)
    # A group with a bad id still counts as a root if it has no parent (its id is its own
    # problem); a duplicate does not count twice.
    roots = [
        (i, g)
        for i, g in enumerate(spec.groups)
        if g.parent is None and (not _id_ok(g.id) or index[g.id] == i)
    ]
    if not roots:
        out.append(
            Problem(
                Kind.ROOT,
                "site",
                spec.id,
                "groups",
                "the groups must have exactly one root (no parent); found none",
            )
        )
    root = roots[0][1].id if roots else None
    for i, extra in roots[1:]:
        out.append(
            Problem(
                Kind.ROOT,
                "group",
                _name(extra.id),
                None,
                f"group {extra.id!r} has no parent but {root!r} is already the root: "
                "a site is one tree (exactly one root); name a parent",
                i,
            )
        )
    return out


def _port_problems(spec: SiteSpec) -> list[Problem]:
    out: list[Problem] = []
    group_ids = _first_by_id(spec.groups)
    seen: set[str] = set()
    for i, p in enumerate(spec.ports):

        def add(kind: Kind, field: str, message: str, p: PortSpec = p, i: int = i) -> None:
            out.append(Problem(kind, "port", _name(p.id), field, message, i))

        if not _id_ok(p.id):
            add(Kind.BAD_ID, "id", f"{p.id!r} is not an id (a non-empty string)")
        elif p.id in seen:
            add(Kind.DUPLICATE_ID, "id", f"duplicate port id {p.id!r}")
        else:
            seen.add(p.id)
        if p.group not in group_ids:
            known = ", ".join(group_ids)
            add(Kind.UNKNOWN_GROUP, "group", f"{p.group!r} is not a group (groups: {known})")
        wiring: object = p.phases  # typed Phases, but a spec may be built from anything
        if not isinstance(wiring, Phases):
            allowed = "|".join(ph.value for ph in Phases)
            add(Kind.PORT_PHASES, "phases", f"{wiring!r} is not a wiring (allowed: {allowed})")
        max_a = _number(p.max_a)
        if max_a is None or max_a <= 0.0:
            add(Kind.MAX_A, "max_a", f"{_show(p.max_a)} is not allowed (must be > 0 A)")
            max_a = None
        cap = max_a
        if p.power_select_a is not None:
            select = _number(p.power_select_a)
            top = "max_a" if max_a is None else _fmt(max_a)
            if select is None or select < J1772_MIN_A:
                add(
                    Kind.POWER_SELECT,
                    "power_select_a",
                    f"{_show(p.power_select_a)} is below the J1772 minimum of "
                    f"{_fmt(J1772_MIN_A)} A (allowed: {_fmt(J1772_MIN_A)}..{top})",
                )
                cap = None
            elif max_a is not None and select > max_a:
                add(
                    Kind.POWER_SELECT_ABOVE_MAX,
                    "power_select_a",
                    f"{_fmt(select)} is above the port's max_a of {_fmt(max_a)} A (allowed: "
                    f"{_fmt(J1772_MIN_A)}..{top}; Power Select only lowers)",
                )
            elif max_a is not None:
                cap = select
        volts = _number(p.voltage_v)
        if volts is None or not MIN_VOLTAGE_V <= volts <= MAX_VOLTAGE_V:
            add(
                Kind.VOLTAGE,
                "voltage_v",
                f"{_show(p.voltage_v)} is out of range "
                f"(allowed: {_fmt(MIN_VOLTAGE_V)}..{_fmt(MAX_VOLTAGE_V)} V)",
            )
        top = "port cap" if cap is None else f"port cap {_fmt(cap)}"
        min_a = _number(p.min_a)
        if min_a is None or min_a < J1772_MIN_A:
            add(
                Kind.MIN_A,
                "min_a",
                f"{_show(p.min_a)} is below the J1772 minimum of {_fmt(J1772_MIN_A)} A "
                f"(allowed: {_fmt(J1772_MIN_A)}..{top})",
            )
        elif cap is not None and min_a > cap:
            add(
                Kind.MIN_ABOVE_CAP,
                "min_a",
                f"the port's minimum {_fmt(min_a)} A is above its cap of {_fmt(cap)} A: it could "
                f"never charge (allowed: min_a {_fmt(J1772_MIN_A)}..{_fmt(cap)})",
            )
        if p.fallback_a is not None:
            fallback = _number(p.fallback_a)
            allowed = "6..cap" if cap is None else f"{_fmt(J1772_MIN_A)}..{_fmt(cap)}"
            if fallback is None or fallback < 0.0 or 0.0 < fallback < J1772_MIN_A:
                add(
                    Kind.FALLBACK_UNOFFERABLE,
                    "fallback_a",
                    f"{_show(p.fallback_a)} cannot be offered: J1772's minimum is "
                    f"{_fmt(J1772_MIN_A)} A (allowed: 0 = pause, or {allowed})",
                )
            elif cap is not None and fallback > cap:
                add(
                    Kind.FALLBACK_ABOVE_CAP,
                    "fallback_a",
                    f"{_fmt(fallback)} is above the port's cap of {_fmt(cap)} A "
                    f"(allowed: 0 or {allowed}; {_GUIDE_OFFLINE})",
                )
        if p.rated_kw is not None and not _positive(p.rated_kw):
            add(Kind.RATED_KW, "rated_kw", f"{_show(p.rated_kw)} is not allowed (must be > 0 kW)")
    return out


def _ancestors(group: str, groups: Mapping[str, GroupSpec]) -> list[GroupSpec]:
    """The group and every group above it, as far as the chain is sound."""
    chain: list[GroupSpec] = []
    seen: set[str] = set()
    node: str | None = group
    while node is not None and node in groups and node not in seen:
        seen.add(node)
        chain.append(groups[node])
        node = groups[node].parent
    return chain


def _cap(p: PortSpec) -> float | None:
    """The port's cap when its ratings are numbers (their own problems are reported apart)."""
    values = [p.max_a] if p.power_select_a is None else [p.max_a, p.power_select_a]
    numbers = [_number(v) for v in values]
    return None if None in numbers else min(n for n in numbers if n is not None)


def _cap_problems(ports: Sequence[PortSpec], groups: Mapping[str, GroupSpec]) -> list[Problem]:
    """Every breaker above a port must carry the port alone (the guide, "Power Sharing at the
    Circuit Level": 80 % continuous; "Power Sharing Features": Power Select de-rates a port
    that a breaker cannot carry). Names the tightest breaker: its limit is the remedy."""
    out: list[Problem] = []
    for i, p in enumerate(ports):
        cap = _cap(p)
        if cap is None:
            continue
        breakers = [g for g in _ancestors(p.group, groups) if _positive(g.breaker_a) and g.limit_a]
        if not breakers:
            continue
        tight = min(breakers, key=lambda g: g.limit_a or 0.0)
        limit = tight.limit_a
        assert limit is not None and tight.breaker_a is not None
        if cap <= limit + LOAD_TOLERANCE:
            continue
        out.append(
            Problem(
                Kind.CAP_ABOVE_BREAKER,
                "port",
                _name(p.id),
                "power_select_a",
                f"the port's cap of {_fmt(cap)} A is above 80 % of the {_fmt(tight.breaker_a)} A "
                f"breaker of group {tight.id!r} ({_fmt(limit)} A): the breaker must carry the "
                f"port alone; set power_select_a <= {_fmt(limit)} ({_GUIDE_POWER_SELECT})",
                i,
            )
        )
    return out


def _station_problems(
    spec: SiteSpec, groups: Mapping[str, GroupSpec], jumper: bool
) -> list[Problem]:
    """A station's wiring (the guide, "Power Sharing Jumper"): with the jumper both ports are
    "fed from a single feed"; without it each port has its own breaker. A station's groups
    are its breakers, so each feeds a port."""
    out: list[Problem] = []
    ports = spec.ports
    first_on: dict[str, PortSpec] = {}
    for i, p in enumerate(ports):
        other = first_on.setdefault(p.group, p)
        if jumper and p.group != ports[0].group:
            out.append(
                Problem(
                    Kind.JUMPER_SPLIT,
                    "port",
                    _name(p.id),
                    "group",
                    f"with the jumper installed both ports share one feed, but port {p.id} is on "
                    f"{p.group!r} and port {ports[0].id} on {ports[0].group!r} "
                    f"({_GUIDE_JUMPER}: 'fed from a single feed')",
                    i,
                )
            )
        elif not jumper and other is not p:
            out.append(
                Problem(
                    Kind.SHARED_BREAKER,
                    "port",
                    _name(p.id),
                    "group",
                    f"ports {other.id} and {p.id} are both on group {p.group!r}, but without the "
                    "jumper each port has its own breaker (set jumper: true if the Power Sharing "
                    f"jumper is installed; {_GUIDE_JUMPER})",
                    i,
                )
            )
    fed = {g.id for p in ports for g in _ancestors(p.group, groups)}
    for i, g in enumerate(spec.groups):
        if _id_ok(g.id) and g.id not in fed:
            out.append(
                Problem(
                    Kind.EMPTY_GROUP,
                    "group",
                    g.id,
                    None,
                    f"group {g.id!r} feeds no port (a station's groups are its breakers)",
                    i,
                )
            )
    return out


def _level(p: PortSpec) -> float:
    """The port's fallback level for the sum; a fallback_a already refused as a number
    counts as 0 (its own problem names it)."""
    level = p.fallback_level_a
    return level if math.isfinite(level) else 0.0


def _fallback_problems(
    spec: SiteSpec, groups: Mapping[str, GroupSpec], tree: LimitTree
) -> list[Problem]:
    """`fallback_overloads` as problems: one per group and field (its current limit, the
    worst line named; its kW limit)."""
    over = fallback_overloads(tree)
    if not over:
        return []
    limits = tree.limits()
    levels = {p.id: _level(p) for p in spec.ports}
    beneath: dict[str, list[PortSpec]] = {}
    for p in spec.ports:
        for above in _ancestors(p.group, groups):
            beneath.setdefault(above.id, []).append(p)
    out: list[Problem] = []
    for i, g in enumerate(spec.groups):
        mine = {lid: load for lid, load in over.items() if lid.partition(":")[0] == g.id}
        if not mine:
            continue
        ports = beneath.get(g.id, [])
        listed = [f"{p.id}: {_fmt(levels[p.id])} A" for p in ports if levels[p.id] > 0.0]
        if len(listed) > _LISTED_PORTS:
            rest = len(listed) - _LISTED_PORTS
            listed = [*listed[:_LISTED_PORTS], f"and {rest} more"]
        listing = ", ".join(listed)

        def add(field: str, message: str, g: GroupSpec = g, i: int = i) -> None:
            out.append(Problem(Kind.FALLBACK_OVERLOAD, "group", g.id, field, message, i))

        lines = {lid: load for lid, load in mine.items() if not lid.endswith(":kW")}
        if lines:
            lid, load = max(lines.items(), key=lambda item: item[1])
            line = lid.partition(":")[2] or _worst_line(ports, levels)
            add(
                "breaker_a",
                f"the fallbacks of the ports beneath ({listing}) put {_fmt(round(load, 2))} A "
                f"on {line}, above the group's 80 % limit of {_fmt(limits[lid])} A: lower "
                f"fallback_a so all ports at fallback stay within it ({_GUIDE_OFFLINE})",
            )
        kw = mine.get(f"{g.id}:kW")
        if kw is not None:
            add(
                "limit_kw",
                f"the fallbacks of the ports beneath ({listing}) draw {_fmt(round(kw, 2))} kW, "
                f"above the group's {_fmt(limits[f'{g.id}:kW'])} kW: lower fallback_a "
                f"({_GUIDE_OFFLINE})",
            )
    return out


def _worst_line(ports: Sequence[PortSpec], levels: Mapping[str, float]) -> str:
    """The line a one-limit group's fallback load is on (for the message only)."""
    total: dict[int, complex] = {}
    for p in ports:
        for line, current in port_line_currents(p, levels[p.id]).items():
            total[line] = total.get(line, 0j) + current
    line = max(sorted(total), key=lambda k: abs(total[k]))
    return f"L{line}"
