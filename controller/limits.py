"""The limit tree: which port loads which breaker conductor or kW limit, and by how much.

This module's one job is to turn a `SiteSpec` (groups and ports as installed) into a set of
*limits*, each with a value and a load function of the port currents, and to evaluate them.
Whether a spec is sound is `controller.validate`'s job (`LimitTree.from_spec` refuses what it
finds); who gets what is `controller.allocate`'s.

Electrical model (docs/design.md "Electrical rules"; the guide, "Power Sharing Through the Panel"):

* A group with ``breaker_a`` may carry 80 % of its rating continuously on every line conductor
  (NEC 210.20(A) / 625.41; `GroupSpec.limit_a`).
* Line currents are phasor sums over all ports beneath a group (descendant groups included),
  assuming a balanced 120-degree supply with the L1, L2, L3 sequence and unity power factor:
  an L-N port draws I in phase with its line voltage on that one line; an L-L port
  (L1-L2, L2-L3, L3-L1) draws I in phase with its line-to-line voltage, out on the first
  line and back on the second, so line A of two 208 V loads carries |I_AB - I_CA|; a
  three-phase port draws I on each line in phase with that line's voltage.
  Every contribution to one line lies within +-30 degrees of that line's voltage, so a line's
  current magnitude never falls when a port's current rises.
* Power (a group's ``limit_kw``): an L-L or L-N port draws ``I x voltage_v``; a three-phase
  port draws ``3 x I x voltage_v`` with ``voltage_v`` its line-to-neutral voltage (docs/design.md
  "Site file": voltage_v is L-L for two-phase ports, L-N otherwise). A three-phase port given
  the 208 V line-to-line default is thus over-counted by sqrt(3), which errs on the safe side.

Limit ids (the same ids as `controller.model.Decision.binding` and ``loads``):

* ``"<group>"``: the current limit of a group with ``phases == 1``; its load is the largest
  line current beneath it (for ports all on the same conductors, simply their sum);
* ``"<group>:L1"``, ``"<group>:L2"``, ``"<group>:L3"``: the per-line current limits of a
  group with ``phases == 3`` (a panel is limited per phase);
* ``"<group>:kW"``: the power limit of a group with ``limit_kw``.

Internally every limit is one or more *rows* ``|sum_p c_p x I_p| <= limit`` with a complex
coefficient ``c_p`` per port (a unit phasor for a line; kW per ampere, real, for power). The
coefficients are computed once, when the tree is built; a row's members are kept grouped by
coefficient, so evaluating a row is a few C-level float sums (no numpy: the controller runs
on a Raspberry-Pi-class board with a light runtime). `controller.allocate` reads the rows
(the attributes with a leading underscore) directly; other modules use the public methods.

Size: one thing, the compiled limit tree and the arithmetic every other module asks of it
(loads, room, headroom, caps).
"""

from __future__ import annotations

import cmath
import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import mul
from types import MappingProxyType
from typing import TYPE_CHECKING

from controller.model import GroupSpec, Phases, PortSpec, SiteSpec

if TYPE_CHECKING:
    from controller.validate import Problem

__all__ = [
    "LOAD_TOLERANCE",
    "REMOTE_LABELS",
    "RESERVED_IDS",
    "Constraint",
    "LimitTree",
    "TreeError",
    "port_kw_per_a",
    "port_line_currents",
]

# A load within this many amperes (or kW) of its limit still fits: floating sums of a few
# dozen phasors carry errors near 1e-13, far below the pilot's 0.1 A resolution. (Sites of
# thousands of ports sum to errors nearer 1e-10; still inside it.)
LOAD_TOLERANCE = 1e-9

# What a port held by a remote source is limited by (firmware.link.remote): the site's
# coordinator, or a charging schedule (OCPP smart charging).
REMOTE_LABELS = frozenset({"coordinator", "schedule"})
# Words `Decision.binding` uses besides limit ids; a group may not be called one of them.
RESERVED_IDS = frozenset(
    {"port", "demand", "paused", "fallback", "sequencing", "idle", "finished", "not-responding"}
    | REMOTE_LABELS
)

_SQRT3 = math.sqrt(3.0)
# Unit phasors of the line-to-neutral voltages, L1 at 0 degrees, sequence L1 -> L2 -> L3.
_LINE_PHASOR = {
    1: complex(1.0, 0.0),
    2: cmath.rect(1.0, -2.0 * math.pi / 3.0),
    3: cmath.rect(1.0, 2.0 * math.pi / 3.0),
}


def _ll(a: int, b: int) -> complex:
    """Unit phasor of the line-to-line voltage from line a to line b (leads line a by 30 deg)."""
    return (_LINE_PHASOR[a] - _LINE_PHASOR[b]) / _SQRT3


# Per port wiring: (line, phasor of the line current per ampere of port current).
_LINES: dict[Phases, tuple[tuple[int, complex], ...]] = {
    Phases.L1_N: ((1, _LINE_PHASOR[1]),),
    Phases.L2_N: ((2, _LINE_PHASOR[2]),),
    Phases.L3_N: ((3, _LINE_PHASOR[3]),),
    Phases.L1_L2: ((1, _ll(1, 2)), (2, -_ll(1, 2))),
    Phases.L2_L3: ((2, _ll(2, 3)), (3, -_ll(2, 3))),
    Phases.L3_L1: ((3, _ll(3, 1)), (1, -_ll(3, 1))),
    Phases.L1_L2_L3: ((1, _LINE_PHASOR[1]), (2, _LINE_PHASOR[2]), (3, _LINE_PHASOR[3])),
}


def port_line_currents(port: PortSpec, amps: float) -> dict[int, complex]:
    """The line current phasors (lines 1..3) a port draws at ``amps``."""
    return {line: coef * amps for line, coef in _LINES[port.phases]}


def port_kw_per_a(port: PortSpec) -> float:
    """kW drawn per ampere of port current: V for L-L and L-N ports, 3 x V(L-N) for 3-phase."""
    per_phase = port.voltage_v / 1000.0
    return 3.0 * per_phase if port.phases is Phases.L1_L2_L3 else per_phase


# A row under construction: (member port indices, coefficient per member).
_Row = tuple[list[int], list[complex]]


class TreeError(ValueError):
    """A site specification that is not a valid limit tree.

    ``problems``: every problem `controller.validate` found, as data; the message joins them,
    each naming its group or port.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class Constraint:
    """One row of a limit: ``|sum(terms[p] * amps[p])| <= limit``.

    A ``"<group>"`` limit over ports on different conductors has one row per line; every
    other limit has exactly one row.
    """

    limit_id: str
    limit: float
    terms: Mapping[str, complex]


class LimitTree:
    """A validated site: its ports, its limits and their load functions.

    Immutable. Build with `LimitTree.from_spec`; `with_limits` returns a copy with other
    limit values (time of use, dynamic load management, remote limits) and the same shape;
    `with_port_caps` a copy with some ports' caps lowered (a coordinator's per-port limits).
    """

    __slots__ = (
        "_base",
        "_base_ports",
        "_caps",
        "_extra_parts",
        "_group_limits",
        "_groups",
        "_head_coef",
        "_head_members",
        "_index",
        "_kw_per_a",
        "_limit_ids",
        "_limit_multi",
        "_limit_rows",
        "_limit_single",
        "_limits",
        "_port_ids",
        "_port_limits",
        "_port_rows",
        "_ports",
        "_row_cmin",
        "_row_coefs",
        "_row_lid",
        "_row_limit",
        "_row_members",
        "_row_names",
        "_spec",
    )

    _spec: SiteSpec
    _groups: Mapping[str, GroupSpec]
    _ports: Mapping[str, PortSpec]
    _port_ids: tuple[str, ...]  # sorted: port index i is _port_ids[i]
    _index: dict[str, int]
    _kw_per_a: tuple[float, ...]
    _caps: tuple[float, ...]  # port index -> cap_a (lowered by with_port_caps)
    _base_ports: Mapping[str, PortSpec]  # ports as specified (the ceiling for with_port_caps)
    _limit_ids: tuple[str, ...]
    _limit_rows: tuple[tuple[int, ...], ...]  # limit index -> its rows
    _limit_single: list[int]  # limit index -> its row when it has one, else -1
    _limit_multi: tuple[tuple[int, tuple[int, ...]], ...]  # (limit, rows) for multi-row limits
    _group_limits: dict[str, tuple[int, ...]]  # group id -> its current-limit indices
    _base: tuple[float, ...]  # limit values as specified (the ceiling for with_limits)
    _limits: tuple[float, ...]  # limit values now
    _row_lid: tuple[int, ...]  # row -> limit index
    _row_limit: list[float]  # row -> limit value now
    _row_names: tuple[str, ...]  # row -> limit id
    _row_members: tuple[list[int], ...]  # row -> port indices
    _row_coefs: tuple[list[complex], ...]  # row -> coefficient per member
    _row_cmin: tuple[float, ...]  # row -> smallest |coefficient| (0.0 for an empty row)
    # Rows split into parts whose members share one coefficient, so that a row's phasor is
    # sum(coef x sum(amps of members)): float sums, in C. Every row has a head part (maybe
    # empty), in row order; rows with ports on several conductors have extra parts.
    _head_coef: tuple[complex, ...]
    _head_members: tuple[tuple[int, ...], ...]
    _extra_parts: tuple[tuple[int, complex, tuple[int, ...]], ...]  # (row, coef, members)
    _port_rows: tuple[tuple[tuple[int, complex], ...], ...]  # port -> (row, coefficient)
    _port_limits: tuple[tuple[str, ...], ...]  # port -> limit ids above it

    @classmethod
    def from_spec(cls, spec: SiteSpec) -> LimitTree:
        """Validate ``spec`` (`controller.validate`) and compile its limits; raise `TreeError`
        with every problem found.

        A port whose cap a breaker above it could not carry alone is compiled (the group's
        limit holds it); only the config loader refuses that (`validate.INSTALLATION_KINDS`).
        """
        # Imported here: validate builds on this module's load model, so it imports this one.
        from controller.validate import INSTALLATION_KINDS, validated

        problems, tree = validated(spec)
        if tree is None:
            raise TreeError([p for p in problems if p.kind not in INSTALLATION_KINDS])
        return tree

    @classmethod
    def _compile(cls, spec: SiteSpec) -> LimitTree:
        """The limits of a spec `controller.validate` found sound; checks nothing itself."""
        groups = {g.id: g for g in spec.groups}
        ports = {p.id: p for p in spec.ports}

        port_ids = tuple(sorted(ports))
        index = {pid: i for i, pid in enumerate(port_ids)}
        # Ports beneath each group, descendants included, in port index order.
        beneath: dict[str, list[int]] = {g.id: [] for g in spec.groups}
        for i, pid in enumerate(port_ids):
            gid: str | None = ports[pid].group
            while gid is not None:
                beneath[gid].append(i)
                gid = groups[gid].parent

        limit_ids: list[str] = []
        limit_rows: list[tuple[int, ...]] = []
        base: list[float] = []
        group_limits: dict[str, tuple[int, ...]] = {}
        row_lid: list[int] = []
        row_members: list[list[int]] = []
        row_coefs: list[list[complex]] = []

        def add_limit(lid: str, value: float, rows: Iterable[_Row]) -> int:
            k = len(limit_ids)
            limit_ids.append(lid)
            base.append(value)
            idx: list[int] = []
            for members, coefs in rows:
                idx.append(len(row_members))
                row_lid.append(k)
                row_members.append(members)
                row_coefs.append(coefs)
            limit_rows.append(tuple(idx))
            return k

        def line_rows(members: list[int], lines: Iterable[int]) -> list[_Row]:
            rows: list[_Row] = []
            for line in lines:
                m: list[int] = []
                c: list[complex] = []
                for i in members:
                    for ln, coef in _LINES[ports[port_ids[i]].phases]:
                        if ln == line:
                            m.append(i)
                            c.append(coef)
                rows.append((m, c))
            return rows

        for g in spec.groups:
            members = beneath[g.id]
            if g.limit_a is not None:
                if g.phases == 3:
                    group_limits[g.id] = tuple(
                        add_limit(f"{g.id}:L{line}", g.limit_a, line_rows(members, (line,)))
                        for line in (1, 2, 3)
                    )
                else:
                    kinds = {ports[port_ids[i]].phases for i in members}
                    if len(kinds) <= 1:
                        # All on the same conductors: every line used carries the same
                        # magnitude, the plain sum; one row is enough.
                        rows = [(list(members), [complex(1.0, 0.0)] * len(members))]
                    else:
                        used = sorted({ln for k in kinds for ln, _ in _LINES[k]})
                        rows = line_rows(members, used)
                    group_limits[g.id] = (add_limit(g.id, g.limit_a, rows),)
            if g.limit_kw is not None:
                kw = [complex(port_kw_per_a(ports[port_ids[i]]), 0.0) for i in members]
                add_limit(f"{g.id}:kW", g.limit_kw, [(list(members), kw)])

        port_rows: list[list[tuple[int, complex]]] = [[] for _ in port_ids]
        for r, (members_r, coefs_r) in enumerate(zip(row_members, row_coefs, strict=True)):
            for i, c in zip(members_r, coefs_r, strict=True):
                port_rows[i].append((r, c))
        head_coef: list[complex] = []
        head_members: list[tuple[int, ...]] = []
        extra_parts: list[tuple[int, complex, tuple[int, ...]]] = []
        for r, (members_r, coefs_r) in enumerate(zip(row_members, row_coefs, strict=True)):
            by_coef: dict[complex, list[int]] = {}
            for i, c in zip(members_r, coefs_r, strict=True):
                by_coef.setdefault(c, []).append(i)
            parts = list(by_coef.items()) or [(complex(1.0, 0.0), [])]
            head_coef.append(parts[0][0])
            head_members.append(tuple(parts[0][1]))
            extra_parts.extend((r, c, tuple(m)) for c, m in parts[1:])
        port_limits = tuple(
            tuple(dict.fromkeys(limit_ids[row_lid[r]] for r, _ in rows)) for rows in port_rows
        )

        tree = object.__new__(cls)
        tree._spec = spec
        tree._groups = MappingProxyType(dict(groups))
        tree._ports = MappingProxyType({pid: ports[pid] for pid in port_ids})
        tree._base_ports = tree._ports
        tree._port_ids = port_ids
        tree._index = index
        tree._kw_per_a = tuple(port_kw_per_a(ports[pid]) for pid in port_ids)
        tree._caps = tuple(ports[pid].cap_a for pid in port_ids)
        tree._limit_ids = tuple(limit_ids)
        tree._limit_rows = tuple(limit_rows)
        tree._limit_single = [rows[0] if len(rows) == 1 else -1 for rows in limit_rows]
        tree._limit_multi = tuple((k, rows) for k, rows in enumerate(limit_rows) if len(rows) != 1)
        tree._group_limits = group_limits
        tree._base = tuple(base)
        tree._limits = tuple(base)
        tree._row_lid = tuple(row_lid)
        tree._row_limit = [base[k] for k in row_lid]
        tree._row_names = tuple(limit_ids[k] for k in row_lid)
        tree._row_members = tuple(row_members)
        tree._row_coefs = tuple(row_coefs)
        tree._row_cmin = tuple(min((abs(c) for c in cs), default=0.0) for cs in row_coefs)
        tree._head_coef = tuple(head_coef)
        tree._head_members = tuple(head_members)
        tree._extra_parts = tuple(extra_parts)
        tree._port_rows = tuple(tuple(rows) for rows in port_rows)
        tree._port_limits = port_limits

        return tree

    # --- Views ---------------------------------------------------------------------------

    @property
    def spec(self) -> SiteSpec:
        """The specification this tree was built from (limits as configured)."""
        return self._spec

    @property
    def ports(self) -> Mapping[str, PortSpec]:
        """Every port by id, in sorted id order."""
        return self._ports

    @property
    def groups(self) -> Mapping[str, GroupSpec]:
        """Every group by id, in specification order."""
        return self._groups

    @property
    def limit_ids(self) -> tuple[str, ...]:
        """Every limit id, in group specification order."""
        return self._limit_ids

    def limits(self) -> dict[str, float]:
        """Every limit's value now, by limit id (amperes per line, or kW)."""
        return dict(zip(self._limit_ids, self._limits, strict=True))

    def base_limits(self) -> dict[str, float]:
        """Every limit's value as configured (the most `with_limits` can set)."""
        return dict(zip(self._limit_ids, self._base, strict=True))

    def limits_of(self, port_id: str) -> tuple[str, ...]:
        """The limit ids a port loads, in the order of `limit_ids` (the spec's group order)."""
        return self._port_limits[self._port_index(port_id)]

    def constraints(self) -> tuple[Constraint, ...]:
        """Every row of every limit, for tools and independent checks."""
        out = []
        for r, members in enumerate(self._row_members):
            terms = {self._port_ids[i]: c for i, c in zip(members, self._row_coefs[r], strict=True)}
            lid = self._row_lid[r]
            out.append(Constraint(self._limit_ids[lid], self._limits[lid], MappingProxyType(terms)))
        return tuple(out)

    # --- Evaluation ----------------------------------------------------------------------

    def _port_index(self, port_id: str) -> int:
        try:
            return self._index[port_id]
        except KeyError:
            raise ValueError(f"unknown port {port_id!r}") from None

    def _vector(self, amps: Mapping[str, float]) -> list[float]:
        x = [0.0] * len(self._port_ids)
        for pid, a in amps.items():
            x[self._port_index(pid)] = float(a)
        return x

    def _row_sums(self, x: list[float]) -> list[complex]:
        """Each row's phasor (or kW, as a real complex) with port i at x[i]."""
        get = x.__getitem__
        # Circuits of one or two ports are the common rows: index them directly rather than
        # pay for a map object and a sum call each.
        heads = [
            x[m[0]] + x[m[1]] if (k := len(m)) == 2 else x[m[0]] if k == 1 else sum(map(get, m))
            for m in self._head_members
        ]
        sums = list(map(mul, self._head_coef, heads))
        for r, c, m in self._extra_parts:
            sums[r] += c * sum(map(get, m))
        return sums

    def _limit_loads(self, row_loads: list[float]) -> list[float]:
        """Each limit's load from its rows' loads (a multi-row limit: the largest)."""
        loads = [row_loads[r] if r >= 0 else 0.0 for r in self._limit_single]
        for k, rows in self._limit_multi:
            loads[k] = max((row_loads[r] for r in rows), default=0.0)
        return loads

    def _loads_of(self, amps: Mapping[str, float]) -> list[float]:
        return self._limit_loads([abs(s) for s in self._row_sums(self._vector(amps))])

    def loads(self, amps: Mapping[str, float]) -> dict[str, float]:
        """Each limit's load (largest line current, or kW) with ports at ``amps``.

        Ports not in ``amps`` draw nothing; an unknown port id raises ValueError.
        """
        return dict(zip(self._limit_ids, self._loads_of(amps), strict=True))

    def headroom(self, amps: Mapping[str, float]) -> dict[str, float]:
        """Each limit's value minus its load at ``amps`` (negative: exceeded)."""
        loads = self._loads_of(amps)
        return {
            lid: lim - load
            for lid, lim, load in zip(self._limit_ids, self._limits, loads, strict=True)
        }

    def violations(
        self, amps: Mapping[str, float], tol: float = LOAD_TOLERANCE
    ) -> dict[str, float]:
        """The limits ``amps`` exceeds by more than ``tol``, with their loads."""
        loads = self._loads_of(amps)
        return {
            lid: load
            for lid, lim, load in zip(self._limit_ids, self._limits, loads, strict=True)
            if load > lim + tol
        }

    def fits(self, amps: Mapping[str, float], tol: float = LOAD_TOLERANCE) -> bool:
        """Whether ``amps`` respects every limit (within ``tol``); port caps are not checked."""
        sums = self._row_sums(self._vector(amps))
        return all(abs(s) <= lim + tol for s, lim in zip(sums, self._row_limit, strict=True))

    def room(self, amps: Mapping[str, float], port_id: str) -> float:
        """The most ``port_id`` could draw, the other ports as in ``amps``, under every limit.

        Its own value in ``amps`` is ignored and its cap is not applied. 0.0 when a limit
        above it is already full or exceeded. Sums only the rows above the port.
        """
        i = self._port_index(port_id)
        x = self._vector(amps)
        x[i] = 0.0
        get = x.__getitem__
        best = math.inf
        for r, c in self._port_rows[i]:
            s = sum(map(mul, self._row_coefs[r], map(get, self._row_members[r])), 0j)
            best = min(best, max_step(s, c, self._row_limit[r]))
        return best

    def rooms(self, amps: Mapping[str, float]) -> dict[str, float]:
        """`room` for every port at once (each with the others as in ``amps``), in one pass."""
        x = self._vector(amps)
        sums = self._row_sums(x)
        limit = self._row_limit
        out = {}
        for i, pid in enumerate(self._port_ids):
            xi = x[i]
            best = math.inf
            for r, c in self._port_rows[i]:
                best = min(best, max_step(sums[r] - c * xi, c, limit[r]))
            out[pid] = best
        return out

    # --- Changing limit values -----------------------------------------------------------

    def with_limits(self, limits: Mapping[str, float]) -> LimitTree:
        """A copy of this tree with some limit values replaced; the shape never changes.

        Keys are limit ids (``"c1"``, ``"panel:L2"``, ``"site:kW"``) or a group id, which
        sets that group's current limit on every line. A value is clamped to the limit as
        configured (docs/design.md "Safety is local": remote, time-of-use and DLM limits only
        ever lower); 0 is allowed (the guide's time-of-use example: "max 0 kW"). Limits not
        named keep their configured value, so ``with_limits({})`` restores the spec.
        Unknown ids, negative or NaN values raise ValueError.
        """
        values = list(self._base)
        position = {lid: k for k, lid in enumerate(self._limit_ids)}
        for key, value in limits.items():
            v = float(value)
            if not (v >= 0.0):  # also refuses NaN
                raise ValueError(f"limit {key!r}: must be >= 0, not {value}")
            if key in position:
                targets: tuple[int, ...] = (position[key],)
            elif key in self._group_limits:
                targets = self._group_limits[key]
            elif key in self._groups:
                raise ValueError(
                    f"limit {key!r}: group {key!r} has no breaker_a, so no current limit to set"
                )
            else:
                raise ValueError(f"unknown limit id {key!r}")
            for k in targets:
                values[k] = min(v, self._base[k])
        tree = self._copy()
        tree._limits = tuple(values)
        tree._row_limit = [values[k] for k in self._row_lid]
        return tree

    def with_port_caps(self, caps: Mapping[str, float]) -> LimitTree:
        """A copy of this tree with some ports' caps lowered (remote per-port limits).

        ``caps`` maps port ids to the most each may be offered; a value is clamped to the
        port's own cap as specified (rating and Power Select: docs/design.md "Safety is local",
        remote limits only ever lower). Ports not named get their specified cap back, so
        ``with_port_caps({})`` restores the spec; limit values are kept. A cap under the
        port's minimum (0 included) means the port cannot be offered anything (J1772: 0 or
        at least the minimum). Unknown ports, negative or NaN values raise ValueError.

        The proportional policy's weight of a port stays its *specified* rated power, so a
        remote cap does not change how the others share.
        """
        ports = dict(self._base_ports)
        for pid, value in caps.items():
            base = self._base_ports.get(pid)
            if base is None:
                raise ValueError(f"port cap for unknown port {pid!r}")
            v = float(value)
            if not (v >= 0.0):  # also refuses NaN
                raise ValueError(f"port {pid!r}: cap must be >= 0, not {value}")
            if v < base.cap_a:
                rated = base.rated_kw
                if rated is None:
                    rated = base.cap_a * port_kw_per_a(base)
                ports[pid] = dataclasses.replace(base, power_select_a=v, rated_kw=rated)
        tree = self._copy()
        tree._ports = MappingProxyType({pid: ports[pid] for pid in self._port_ids})
        tree._caps = tuple(ports[pid].cap_a for pid in self._port_ids)
        return tree

    def port_caps(self) -> dict[str, float]:
        """Every port's cap now (its specified cap, or lower after `with_port_caps`)."""
        return dict(zip(self._port_ids, self._caps, strict=True))

    def _copy(self) -> LimitTree:
        tree = object.__new__(LimitTree)
        for name in LimitTree.__slots__:
            object.__setattr__(tree, name, getattr(self, name))
        return tree


def max_step(s: complex, c: complex, limit: float) -> float:
    """The largest y >= 0 with ``|s + c*y| <= limit`` (0.0 when s alone fills the limit).

    Solves |c|^2 y^2 + 2 Re(s c*) y + |s|^2 - limit^2 = 0 for its positive root in the
    cancellation-free form -q / (b + sqrt(b^2 - a q)); Re(s c*) >= 0 since every phasor on a
    line lies within 30 degrees of the line voltage (module docstring).
    """
    cc = c.real * c.real + c.imag * c.imag
    if cc <= 0.0:
        return math.inf
    sc = s.real * c.real + s.imag * c.imag
    q = s.real * s.real + s.imag * s.imag - limit * limit
    if q >= 0.0:
        return 0.0
    return -q / (sc + math.sqrt(sc * sc - cc * q))
