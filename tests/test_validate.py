"""controller.validate: every refusal, once each; LimitTree.from_spec refuses the same; the
fallback check agrees with the limit tree's own loads over random trees."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.fallback import fallback_violations
from controller.limits import LimitTree, TreeError
from controller.model import GroupSpec, Phases, PortSpec, SiteSpec
from controller.validate import (
    INSTALLATION_KINDS,
    Kind,
    Problem,
    fallback_overloads,
    validate,
)

ROOT = Path(__file__).resolve().parent.parent
G = GroupSpec


def site(groups: list[GroupSpec], ports: list[PortSpec]) -> SiteSpec:
    return SiteSpec("t", tuple(groups), tuple(ports))


def base(*ports: PortSpec) -> SiteSpec:
    """A site of 100 kW with one 40 A circuit (32 A), ``ports`` on it."""
    return site([G("site", limit_kw=100), G("c1", "site", breaker_a=40)], list(ports))


def port(pid: str = "p1", **kw: Any) -> PortSpec:
    fields: dict[str, Any] = {"id": pid, "group": "c1", "max_a": 32}
    fields.update(kw)
    return PortSpec(**fields)


def station(groups: list[GroupSpec], on: tuple[str, str]) -> SiteSpec:
    """A two-port station's tree: ports "1" and "2" on the groups ``on``."""
    return site(groups, [PortSpec("1", on[0], 30), PortSpec("2", on[1], 30)])


PER_PORT = [G("st"), G("b1", "st", breaker_a=40), G("b2", "st", breaker_a=40)]


@dataclasses.dataclass(frozen=True)
class Case:
    spec: SiteSpec
    kinds: tuple[Kind, ...]  # every problem's kind, in order
    where: str  # of the first problem
    id: str
    field: str | None
    message: str  # the first problem's message starts with this
    jumper: bool | None = None


CASES: dict[str, Case] = {
    "group id empty": Case(site([G("")], []), (Kind.BAD_ID,), "group", "", "id", "'' is not an id"),
    "port id empty": Case(base(port("")), (Kind.BAD_ID,), "port", "", "id", "'' is not an id"),
    "group id with ':'": Case(
        site([G("r:x")], []),
        (Kind.RESERVED_ID,),
        "group",
        "r:x",
        "id",
        "'r:x': ':' is reserved for limit ids like 'panel:L1'",
    ),
    "group id a binding word": Case(
        site([G("paused")], []),
        (Kind.RESERVED_ID,),
        "group",
        "paused",
        "id",
        "'paused' is a reserved word (not allowed: coordinator, demand, fallback, finished, "
        "idle, not-responding, paused, port, schedule, sequencing)",
    ),
    "duplicate group": Case(
        site([G("site"), G("c1", "site", breaker_a=40), G("c1", "site", breaker_a=20)], []),
        (Kind.DUPLICATE_ID,),
        "group",
        "c1",
        "id",
        "duplicate group id 'c1'",
    ),
    "duplicate port": Case(
        base(port(), port()), (Kind.DUPLICATE_ID,), "port", "p1", "id", "duplicate port id 'p1'"
    ),
    "group phases 2": Case(
        site([G("r", breaker_a=100, phases=2)], []),
        (Kind.GROUP_PHASES,),
        "group",
        "r",
        "phases",
        "2 is not allowed (allowed: 1 or 3)",
    ),
    "breaker 0": Case(
        site([G("r", breaker_a=0)], []),
        (Kind.BREAKER,),
        "group",
        "r",
        "breaker_a",
        "0 is not allowed (must be > 0 A: a breaker rating)",
    ),
    "breaker inf": Case(
        site([G("r", breaker_a=math.inf)], []),
        (Kind.BREAKER,),
        "group",
        "r",
        "breaker_a",
        "inf is not allowed",
    ),
    "limit_kw negative": Case(
        site([G("r", limit_kw=-5)], []),
        (Kind.LIMIT_KW,),
        "group",
        "r",
        "limit_kw",
        "-5 is not allowed (must be > 0 kW)",
    ),
    "limit_kw nan": Case(
        site([G("r", limit_kw=math.nan)], []),
        (Kind.LIMIT_KW,),
        "group",
        "r",
        "limit_kw",
        "nan is not allowed",
    ),
    "orphan": Case(
        site([G("r"), G("a", "nope")], []),
        (Kind.UNKNOWN_PARENT,),
        "group",
        "a",
        "parent",
        "parent 'nope' is not a group: an orphan (groups: r, a)",
    ),
    "cycle": Case(
        site([G("r"), G("d", "a"), G("a", "b"), G("b", "a")], []),
        (Kind.CYCLE,),  # reported once, at the cycle's first group; d only hangs below it
        "group",
        "a",
        "parent",
        "the groups form a cycle (a -> b -> a)",
    ),
    "own parent": Case(
        site([G("r"), G("a", "a")], []),
        (Kind.CYCLE,),
        "group",
        "a",
        "parent",
        "a group cannot be its own parent",
    ),
    "no root (a cycle)": Case(
        site([G("a", "b"), G("b", "a")], []),
        (Kind.CYCLE, Kind.ROOT),
        "group",
        "a",
        "parent",
        "the groups form a cycle (a -> b -> a)",
    ),
    "no groups": Case(
        site([], []),
        (Kind.ROOT,),
        "site",
        "t",
        "groups",
        "the groups must have exactly one root (no parent); found none",
    ),
    "two roots": Case(
        site([G("a"), G("b")], []),
        (Kind.ROOT,),
        "group",
        "b",
        None,
        "group 'b' has no parent but 'a' is already the root",
    ),
    "port on no group": Case(
        base(port(group="c9")),
        (Kind.UNKNOWN_GROUP,),
        "port",
        "p1",
        "group",
        "'c9' is not a group (groups: site, c1)",
    ),
    "port phases not Phases": Case(
        base(port(phases="L1-L2")),
        (Kind.PORT_PHASES,),
        "port",
        "p1",
        "phases",
        "'L1-L2' is not a wiring (allowed: L1-L2|L2-L3|L3-L1|L1-N|L2-N|L3-N|L1-L2-L3)",
    ),
    "max_a 0": Case(
        base(port(max_a=0)), (Kind.MAX_A,), "port", "p1", "max_a", "0 is not allowed (must be > 0"
    ),
    "max_a nan": Case(
        base(port(max_a=math.nan)), (Kind.MAX_A,), "port", "p1", "max_a", "nan is not allowed"
    ),
    "power select under 6 A": Case(
        base(port(power_select_a=3)),
        (Kind.POWER_SELECT,),
        "port",
        "p1",
        "power_select_a",
        "3 is below the J1772 minimum of 6 A (allowed: 6..32)",
    ),
    "power select above max_a": Case(
        base(port(max_a=30, power_select_a=32)),
        (Kind.POWER_SELECT_ABOVE_MAX,),
        "port",
        "p1",
        "power_select_a",
        "32 is above the port's max_a of 30 A (allowed: 6..30; Power Select only lowers)",
    ),
    "voltage 0": Case(
        base(port(voltage_v=0)),
        (Kind.VOLTAGE,),
        "port",
        "p1",
        "voltage_v",
        "0 is out of range (allowed: 1..1000 V)",
    ),
    "voltage above 1000 V": Case(
        base(port(voltage_v=1001)),
        (Kind.VOLTAGE,),
        "port",
        "p1",
        "voltage_v",
        "1001 is out of range",
    ),
    "min_a under 6 A": Case(
        base(port(min_a=5.9)),
        (Kind.MIN_A,),
        "port",
        "p1",
        "min_a",
        "5.9 is below the J1772 minimum of 6 A (allowed: 6..port cap 32)",
    ),
    "min_a above cap": Case(
        base(port(power_select_a=16, min_a=20)),
        (Kind.MIN_ABOVE_CAP,),
        "port",
        "p1",
        "min_a",
        "the port's minimum 20 A is above its cap of 16 A: it could never charge",
    ),
    "fallback 3 A": Case(
        base(port(fallback_a=3)),
        (Kind.FALLBACK_UNOFFERABLE,),
        "port",
        "p1",
        "fallback_a",
        "3 cannot be offered: J1772's minimum is 6 A (allowed: 0 = pause, or 6..32)",
    ),
    "fallback negative": Case(
        base(port(fallback_a=-1)),
        (Kind.FALLBACK_UNOFFERABLE,),
        "port",
        "p1",
        "fallback_a",
        "-1 cannot be offered",
    ),
    "fallback nan": Case(
        base(port(fallback_a=math.nan)),
        (Kind.FALLBACK_UNOFFERABLE,),
        "port",
        "p1",
        "fallback_a",
        "nan cannot be offered",
    ),
    "fallback above cap": Case(
        base(port(power_select_a=20, fallback_a=24)),
        (Kind.FALLBACK_ABOVE_CAP,),
        "port",
        "p1",
        "fallback_a",
        "24 is above the port's cap of 20 A (allowed: 0 or 6..20",
    ),
    "rated_kw 0": Case(
        base(port(rated_kw=0)),
        (Kind.RATED_KW,),
        "port",
        "p1",
        "rated_kw",
        "0 is not allowed (must be > 0 kW)",
    ),
    "cap above breaker": Case(
        # The guide's CT4000 on a 20 A breaker: 30 A ports must be Power Selected to 16 A.
        site([G("r"), G("b", "r", breaker_a=20)], [PortSpec("1", "b", 30)]),
        (Kind.CAP_ABOVE_BREAKER,),
        "port",
        "1",
        "power_select_a",
        "the port's cap of 30 A is above 80 % of the 20 A breaker of group 'b' (16 A)",
    ),
    "cap above the tighter breaker higher up": Case(
        site([G("r", breaker_a=40), G("b", "r", breaker_a=100)], [PortSpec("1", "b", 48)]),
        (Kind.CAP_ABOVE_BREAKER,),
        "port",
        "1",
        "power_select_a",
        "the port's cap of 48 A is above 80 % of the 40 A breaker of group 'r' (32 A): "
        "the breaker must carry the port alone; set power_select_a <= 32",
    ),
    "jumper, ports on two feeds": Case(
        station(PER_PORT, ("b1", "b2")),
        (Kind.JUMPER_SPLIT,),
        "port",
        "2",
        "group",
        "with the jumper installed both ports share one feed, but port 2 is on 'b2' and port 1 "
        "on 'b1'",
        jumper=True,
    ),
    "no jumper, ports on one breaker": Case(
        station([G("feed", breaker_a=40)], ("feed", "feed")),
        (Kind.SHARED_BREAKER,),
        "port",
        "2",
        "group",
        "ports 1 and 2 are both on group 'feed', but without the jumper each port has its own "
        "breaker",
        jumper=False,
    ),
    "station group feeding nothing": Case(
        station([*PER_PORT, G("spare", "st", breaker_a=40)], ("b1", "b2")),
        (Kind.EMPTY_GROUP,),
        "group",
        "spare",
        None,
        "group 'spare' feeds no port (a station's groups are its breakers)",
        jumper=False,
    ),
    "fallbacks over a circuit": Case(
        base(port(fallback_a=20), port("p2", fallback_a=16)),
        (Kind.FALLBACK_OVERLOAD,),
        "group",
        "c1",
        "breaker_a",
        "the fallbacks of the ports beneath (p1: 20 A, p2: 16 A) put 36 A on L1, above the "
        "group's 80 % limit of 32 A: lower fallback_a",
    ),
    "fallbacks over a kW limit": Case(
        site(
            [G("site", limit_kw=5), G("c1", "site", breaker_a=40)],
            [port("a", fallback_a=16), port("b", fallback_a=16)],
        ),
        (Kind.FALLBACK_OVERLOAD,),
        "group",
        "site",
        "limit_kw",
        "the fallbacks of the ports beneath (a: 16 A, b: 16 A) draw 6.66 kW, above the group's "
        "5 kW",
    ),
    "fallbacks over one line of a panel": Case(
        site(
            [G("panel", breaker_a=50, phases=3)],
            [
                PortSpec("a", "panel", 30, Phases.L2_L3, fallback_a=16),
                PortSpec("b", "panel", 30, Phases.L2_L3, fallback_a=16),
                PortSpec("c", "panel", 30, Phases.L2_N, voltage_v=120, fallback_a=16),
            ],
        ),
        (Kind.FALLBACK_OVERLOAD,),
        "group",
        "panel",
        "breaker_a",
        # L2 carries 32 A leading its voltage by 30 degrees and 16 A in phase with it:
        # |32 at 30 deg + 16| = 46.55 A; L3 carries 32 A, L1 nothing.
        "the fallbacks of the ports beneath (a: 16 A, b: 16 A, c: 16 A) put 46.55 A on L2, above "
        "the group's 80 % limit of 40 A",
    ),
    "fallbacks over a circuit of mixed wiring": Case(
        site(
            [G("c", breaker_a=40)],
            [
                PortSpec("a", "c", 30, Phases.L3_N, voltage_v=120, fallback_a=30),
                PortSpec("b", "c", 30, Phases.L3_L1, fallback_a=8),
            ],
        ),
        (Kind.FALLBACK_OVERLOAD,),
        "group",
        "c",
        "breaker_a",
        # One limit over two lines; L3 is the worse: |30 + 8 at 30 deg| = 37.14 A (L1: 8 A).
        "the fallbacks of the ports beneath (a: 30 A, b: 8 A) put 37.14 A on L3",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_every_refusal(case: Case) -> None:
    problems = validate(case.spec, jumper=case.jumper)
    assert tuple(p.kind for p in problems) == case.kinds, problems
    first = problems[0]
    assert (first.where, first.id, first.field) == (case.where, case.id, case.field)
    assert first.message.startswith(case.message), first.message


def test_the_cases_cover_every_kind() -> None:
    assert {kind for case in CASES.values() for kind in case.kinds} == set(Kind)


def test_problem_names_its_entry_and_field() -> None:
    (problem,) = validate(base(port(min_a=5.9)))
    assert str(problem) == f"port 'p1': min_a: {problem.message}"
    assert problem.index == 0
    (problem,) = validate(site([G("a"), G("b")], []))
    assert str(problem) == f"group 'b': {problem.message}"  # no field: the entry itself
    assert problem.index == 1


def test_duplicates_are_told_apart_by_index() -> None:
    problems = validate(base(port(), port("p2"), port()))
    assert [(p.kind, p.id, p.index) for p in problems] == [(Kind.DUPLICATE_ID, "p1", 2)]


def test_every_problem_at_once_in_reading_order() -> None:
    spec = site(
        [G("site", limit_kw=-1), G("c1", "site", breaker_a=40), G("c2", "nope")],
        [port(min_a=5), port("p2", fallback_a=3, group="c9")],
    )
    assert [(p.kind, p.id) for p in validate(spec)] == [
        (Kind.LIMIT_KW, "site"),
        (Kind.UNKNOWN_PARENT, "c2"),
        (Kind.MIN_A, "p1"),
        (Kind.UNKNOWN_GROUP, "p2"),
        (Kind.FALLBACK_UNOFFERABLE, "p2"),
    ]


def test_sound_specs_have_no_problem() -> None:
    assert validate(base(port(fallback_a=16), port("p2", fallback_a=16))) == []
    assert validate(site([G("site"), G("bldg", "site")], [])) == []  # grouping nodes only
    jumper = station([G("feed", breaker_a=40)], ("feed", "feed"))
    assert validate(jumper, jumper=True) == []
    assert validate(station(PER_PORT, ("b1", "b2")), jumper=False) == []
    # A DC port (the guide's proportional example) may be rated above J1772's 80 A.
    assert validate(site([G("site", limit_kw=100)], [PortSpec("dc", "site", 100)])) == []


# --- LimitTree.from_spec refuses what validate finds ---------------------------------------


def test_from_spec_raises_every_problem() -> None:
    spec = site(
        [G("site"), G("c1", "site", breaker_a=0)],
        [port(min_a=5), port("p2", fallback_a=3)],
    )
    with pytest.raises(TreeError) as caught:
        LimitTree.from_spec(spec)
    assert caught.value.problems == tuple(validate(spec))
    assert len(caught.value.problems) == 3
    assert str(caught.value) == "; ".join(str(p) for p in validate(spec))


@pytest.mark.parametrize(
    "name", [n for n, c in CASES.items() if c.jumper is None and set(c.kinds) & INSTALLATION_KINDS]
)
def test_from_spec_compiles_what_only_an_installation_must_keep(name: str) -> None:
    # The tree's own limits hold such a port to its breakers; the config loader refuses it.
    case = CASES[name]
    assert validate(case.spec)
    tree = LimitTree.from_spec(case.spec)
    for pid, p in tree.ports.items():
        above = []
        node: str | None = p.group
        while node is not None:
            above.append(tree.groups[node].limit_a or math.inf)
            node = tree.groups[node].parent
        assert tree.room({}, pid) <= min(above)


@pytest.mark.parametrize(
    "name",
    [n for n, c in CASES.items() if c.jumper is None and not set(c.kinds) & INSTALLATION_KINDS],
)
def test_from_spec_refuses_every_other_refusal(name: str) -> None:
    case = CASES[name]
    with pytest.raises(TreeError) as caught:
        LimitTree.from_spec(case.spec)
    assert caught.value.problems == tuple(validate(case.spec))


def test_station_rules_only_for_a_station() -> None:
    spec = station([G("feed", breaker_a=40)], ("feed", "feed"))
    assert validate(spec) == []  # a site may put two ports on one breaker
    LimitTree.from_spec(spec)


# --- Fallback: min(fallback_a, cap) is what counts ------------------------------------------


def test_fallback_counts_at_most_the_cap() -> None:
    # p1's fallback_a of 20 is above its Power Select cap of 16 A, and only that is refused:
    # at fallback it offers 16 A, and 16 + 16 fits the 32 A circuit. Raw fallback_a
    # (20 + 16 = 36 A) would also blame the circuit, wrongly.
    spec = base(port(power_select_a=16, fallback_a=20), port("p2", fallback_a=16))
    assert [(p.kind, p.id) for p in validate(spec)] == [(Kind.FALLBACK_ABOVE_CAP, "p1")]
    spec = base(port(power_select_a=16, fallback_a=20), port("p2", fallback_a=17))
    assert [(p.kind, p.id) for p in validate(spec)] == [
        (Kind.FALLBACK_ABOVE_CAP, "p1"),
        (Kind.FALLBACK_OVERLOAD, "c1"),  # 16 + 17 = 33 A > 32 A
    ]


def test_fallback_at_exactly_the_limit_fits() -> None:
    assert validate(base(port(fallback_a=16), port("p2", fallback_a=16))) == []
    assert [p.kind for p in validate(base(port(fallback_a=16), port("p2", fallback_a=16.1)))] == [
        Kind.FALLBACK_OVERLOAD
    ]


def test_runtime_check_uses_the_caps_in_force() -> None:
    # A coordinator lowered p2's cap to 12 A: at fallback p2 offers 12 A, so 16 + 12 fits 28.
    tree = LimitTree.from_spec(base(port(fallback_a=16), port("p2", fallback_a=16)))
    lowered = tree.with_limits({"c1": 28.0})
    assert fallback_overloads(lowered) == {"c1": 32.0}
    assert fallback_violations(lowered) == ["c1"]
    assert fallback_overloads(lowered.with_port_caps({"p2": 12.0})) == {}
    assert fallback_violations(lowered.with_port_caps({"p2": 12.0})) == []


# --- Random trees: validate agrees with the tree's own loads --------------------------------

BREAKERS = (15, 20, 30, 40, 50, 60, 70, 100, 125, 200, 400)
VOLTS = {Phases.L1_N: 120.0, Phases.L2_N: 230.0, Phases.L3_N: 120.0, Phases.L1_L2_L3: 230.0}


@st.composite
def random_sites(draw: st.DrawFn) -> SiteSpec:
    """A sound site of random depth and branching; only its fallbacks may be too high."""
    groups: list[GroupSpec] = []
    for k in range(draw(st.integers(1, 7))):
        groups.append(
            GroupSpec(
                f"g{k}",
                parent=None if k == 0 else f"g{draw(st.integers(0, k - 1))}",
                breaker_a=draw(st.one_of(st.none(), st.sampled_from(BREAKERS))),
                phases=draw(st.sampled_from((1, 3))),
                limit_kw=draw(st.one_of(st.none(), st.integers(2, 60).map(float))),
            )
        )
    by_id = {g.id: g for g in groups}
    ports: list[PortSpec] = []
    for j in range(draw(st.integers(0, 8))):
        gid = f"g{draw(st.integers(0, len(groups) - 1))}"
        above: list[float] = []
        node: str | None = gid
        while node is not None:
            limit = by_id[node].limit_a
            if limit is not None:
                above.append(limit)
            node = by_id[node].parent
        phases = draw(st.sampled_from(list(Phases)))
        max_a = draw(st.integers(6, 80))
        select = draw(st.one_of(st.none(), st.integers(6, max_a)))
        cap = max_a if select is None else select
        if above and cap > min(above):
            # Power Select de-rates a port its breakers cannot carry (cap-above-breaker).
            select = cap = math.floor(min(above))
        fallback = draw(
            st.one_of(
                st.none(),
                st.just(0.0),
                st.integers(6, cap).map(float),
                st.floats(6.0, cap, allow_nan=False),
            )
        )
        ports.append(
            PortSpec(
                f"p{j}",
                gid,
                max_a,
                phases,
                voltage_v=VOLTS.get(phases, 208.0),
                power_select_a=select,
                min_a=draw(st.integers(6, min(cap, 10))),
                fallback_a=fallback,
            )
        )
    return SiteSpec("r", tuple(groups), tuple(ports))


def _levels(spec: SiteSpec) -> dict[str, float]:
    return {p.id: min(p.fallback_a or 0.0, p.cap_a) for p in spec.ports}


@settings(max_examples=400, deadline=None)
@given(random_sites())
def test_accepted_means_every_port_at_fallback_fits(spec: SiteSpec) -> None:
    problems = validate(spec)
    if not problems:
        tree = LimitTree.from_spec(spec)
        assert tree.fits(_levels(spec))
        assert all(
            load <= tree.limits()[lid] + 1e-9 for lid, load in tree.loads(_levels(spec)).items()
        )


@settings(max_examples=400, deadline=None)
@given(random_sites())
def test_fallback_problem_exactly_when_the_tree_does_not_fit(spec: SiteSpec) -> None:
    # The same tree without fallbacks is sound; load it with every port at its level.
    bare = dataclasses.replace(
        spec, ports=tuple(dataclasses.replace(p, fallback_a=None) for p in spec.ports)
    )
    assert validate(bare) == []
    tree = LimitTree.from_spec(bare)
    levels = _levels(spec)
    problems = validate(spec)
    assert {p.kind for p in problems} <= {Kind.FALLBACK_OVERLOAD}
    assert bool(problems) == (not tree.fits(levels))
    over = tree.violations(levels)
    assert {p.id for p in problems} == {lid.partition(":")[0] for lid in over}
    assert {(p.id, p.field) for p in problems} == {
        (lid.partition(":")[0], "limit_kw" if lid.endswith(":kW") else "breaker_a") for lid in over
    }
    if not problems:
        assert LimitTree.from_spec(spec).fits(levels)


# --- The shipped configs ---------------------------------------------------------------------


def test_shipped_configs_have_no_problem() -> None:
    from firmware.config import load_site_config, load_station

    for path in sorted((ROOT / "configs" / "sites").glob("*.yaml")):
        assert validate(load_site_config(str(path)).spec) == [], path
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        config = load_station(str(path))
        assert validate(config.site, jumper=config.jumper) == [], path


def test_problem_is_plain_data() -> None:
    fields = [f.name for f in dataclasses.fields(Problem)]
    assert fields == ["kind", "where", "id", "field", "message", "index"]
    assert str(Kind.FALLBACK_OVERLOAD) == "fallback-overload"  # a kind is its string
    assert isinstance(Kind.FALLBACK_OVERLOAD, str)
