"""The limit tree: validation, limit ids, per-line phasor loads, kW loads, limit changes."""

from __future__ import annotations

import cmath
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.limits import LimitTree, TreeError, port_kw_per_a, port_line_currents
from controller.model import GroupSpec, Phases, PortSpec, SiteSpec

PAIRS = (Phases.L1_L2, Phases.L2_L3, Phases.L3_L1)


def tree_of(groups: list[GroupSpec], ports: list[PortSpec]) -> LimitTree:
    return LimitTree.from_spec(SiteSpec("t", tuple(groups), tuple(ports)))


# --- An independent reference: line currents from the voltage phasors ------------------------

V = {1: cmath.rect(1, 0.0), 2: cmath.rect(1, -2 * math.pi / 3), 3: cmath.rect(1, 2 * math.pi / 3)}
WIRES = {
    Phases.L1_N: (1, None),
    Phases.L2_N: (2, None),
    Phases.L3_N: (3, None),
    Phases.L1_L2: (1, 2),
    Phases.L2_L3: (2, 3),
    Phases.L3_L1: (3, 1),
}


def reference_lines(ports: list[PortSpec], amps: dict[str, float]) -> dict[int, complex]:
    """Line phasors of ports at unity power factor: current in phase with its voltage."""
    lines = {1: 0j, 2: 0j, 3: 0j}
    for p in ports:
        a = amps.get(p.id, 0.0)
        if p.phases is Phases.L1_L2_L3:
            for k in (1, 2, 3):
                lines[k] += a * V[k]
            continue
        out, back = WIRES[p.phases]
        if back is None:
            lines[out] += a * V[out]
        else:
            v = V[out] - V[back]  # the line-to-line voltage the port sits across
            lines[out] += a * v / abs(v)
            lines[back] -= a * v / abs(v)
    return lines


def reference_loads(spec: SiteSpec, amps: dict[str, float]) -> dict[str, float]:
    """Each limit's load, computed from the spec without the tree."""
    groups = {g.id: g for g in spec.groups}

    def beneath(gid: str) -> list[PortSpec]:
        out = []
        for p in spec.ports:
            node: str | None = p.group
            while node is not None:
                if node == gid:
                    out.append(p)
                    break
                node = groups[node].parent
        return out

    loads: dict[str, float] = {}
    for g in spec.groups:
        ports = beneath(g.id)
        if g.breaker_a is not None:
            lines = reference_lines(ports, amps)
            if g.phases == 3:
                for k in (1, 2, 3):
                    loads[f"{g.id}:L{k}"] = abs(lines[k])
            else:
                loads[g.id] = max(abs(v) for v in lines.values())
        if g.limit_kw is not None:
            total = 0.0
            for p in ports:
                mult = 3.0 if p.phases is Phases.L1_L2_L3 else 1.0
                total += mult * p.voltage_v * amps.get(p.id, 0.0) / 1000.0
            loads[f"{g.id}:kW"] = total
    return loads


# --- Validation ------------------------------------------------------------------------------


def good_groups() -> list[GroupSpec]:
    return [GroupSpec("site", limit_kw=100), GroupSpec("c1", "site", breaker_a=40)]


def good_port(**kw: object) -> PortSpec:
    fields: dict[str, object] = {"id": "p1", "group": "c1", "max_a": 32}
    fields.update(kw)
    return PortSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("groups", "ports", "message"),
    [
        (
            [*good_groups(), GroupSpec("c1", "site", breaker_a=20)],
            [],
            "group 'c1': id: duplicate group id 'c1'",
        ),
        ([GroupSpec("a"), GroupSpec("b")], [], "exactly one root"),
        (
            [GroupSpec("a", "b"), GroupSpec("b", "a")],
            [],
            "exactly one root (no parent); found none",
        ),
        (
            [GroupSpec("r"), GroupSpec("a", "b"), GroupSpec("b", "a")],
            [],
            "group 'a': parent: the groups form a cycle (a -> b -> a)",
        ),
        (
            [GroupSpec("r"), GroupSpec("a", "nope")],
            [],
            "group 'a': parent: parent 'nope' is not a group",
        ),
        ([GroupSpec("r", breaker_a=0)], [], "group 'r': breaker_a: 0 is not allowed (must be > 0"),
        (
            [GroupSpec("r", breaker_a=math.inf)],
            [],
            "group 'r': breaker_a: inf is not allowed (must be > 0 A: a breaker rating)",
        ),
        ([GroupSpec("r", limit_kw=-5)], [], "group 'r': limit_kw: -5 is not allowed (must be > 0"),
        ([GroupSpec("r", limit_kw=math.nan)], [], "group 'r': limit_kw: nan is not allowed"),
        (
            [GroupSpec("r", breaker_a=100, phases=2)],
            [],
            "group 'r': phases: 2 is not allowed (allowed: 1 or 3)",
        ),
        ([GroupSpec("r:x")], [], "group 'r:x': id: 'r:x': ':' is reserved for limit ids"),
        ([GroupSpec("port")], [], "group 'port': id: 'port' is a reserved word"),
        ([GroupSpec("")], [], "group '': id: '' is not an id (a non-empty string)"),
        (good_groups(), [good_port(), good_port()], "port 'p1': id: duplicate port id 'p1'"),
        (good_groups(), [good_port(group="c9")], "port 'p1': group: 'c9' is not a group"),
        (good_groups(), [good_port(max_a=0)], "port 'p1': max_a: 0 is not allowed (must be > 0"),
        (good_groups(), [good_port(max_a=math.nan)], "port 'p1': max_a: nan is not allowed"),
        (
            good_groups(),
            [good_port(power_select_a=-1)],
            "port 'p1': power_select_a: -1 is below the J1772 minimum of 6 A",
        ),
        (
            good_groups(),
            [good_port(voltage_v=0)],
            "port 'p1': voltage_v: 0 is out of range (allowed: 1..1000 V)",
        ),
        (
            good_groups(),
            [good_port(min_a=5.9)],
            "port 'p1': min_a: 5.9 is below the J1772 minimum of 6 A",
        ),
        (
            good_groups(),
            [good_port(min_a=40)],
            "port 'p1': min_a: the port's minimum 40 A is above its cap of 32 A",
        ),
        (
            good_groups(),
            [good_port(power_select_a=16, min_a=20)],
            "the port's minimum 20 A is above its cap of 16 A",
        ),
        (
            good_groups(),
            [good_port(fallback_a=33)],
            "port 'p1': fallback_a: 33 is above the port's cap of 32 A",
        ),
        (
            good_groups(),
            [good_port(fallback_a=3)],
            "port 'p1': fallback_a: 3 cannot be offered: J1772's minimum is 6 A",
        ),
        (
            good_groups(),
            [good_port(rated_kw=0)],
            "port 'p1': rated_kw: 0 is not allowed (must be > 0 kW)",
        ),
        (good_groups(), [good_port(phases="L1-L2")], "port 'p1': phases: 'L1-L2' is not a wiring"),
        (
            good_groups(),
            [good_port(fallback_a=20), good_port(id="p2", fallback_a=20)],
            "group 'c1': breaker_a: the fallbacks of the ports beneath (p1: 20 A, p2: 20 A) "
            "put 40 A on L1, above the group's 80 % limit of 32 A",
        ),
    ],
)
def test_invalid_specs_are_refused_naming_the_id(
    groups: list[GroupSpec], ports: list[PortSpec], message: str
) -> None:
    with pytest.raises(TreeError, match=re.escape(message)):
        tree_of(groups, ports)


def test_tree_error_is_a_value_error() -> None:
    assert issubclass(TreeError, ValueError)


def test_empty_site_and_grouping_nodes_are_fine() -> None:
    tree = tree_of([GroupSpec("site"), GroupSpec("bldg", "site")], [])
    assert tree.limits() == {}
    assert tree.loads({}) == {}
    assert tree.fits({})


def test_fallbacks_that_fit_are_accepted() -> None:
    tree = tree_of(good_groups(), [good_port(fallback_a=16), good_port(id="p2", fallback_a=16)])
    assert tree.fits({"p1": 16, "p2": 16})


# --- Limit ids and values ------------------------------------------------------------------


def mixed_site() -> LimitTree:
    return tree_of(
        [
            GroupSpec("site", limit_kw=50),
            GroupSpec("panel", "site", breaker_a=400, phases=3),
            GroupSpec("c1", "panel", breaker_a=40),
            GroupSpec("c2", "panel", breaker_a=100, limit_kw=10),
            GroupSpec("bldg", "site"),  # a pure grouping node: no limit
            GroupSpec("mixed", "bldg", breaker_a=60),  # ports on different conductors
        ],
        [
            PortSpec("a", "c1", max_a=32, phases=Phases.L1_L2),
            PortSpec("b", "c1", max_a=32, phases=Phases.L1_L2),
            PortSpec("c", "c2", max_a=80, phases=Phases.L2_L3),
            PortSpec("d", "mixed", max_a=32, phases=Phases.L1_N, voltage_v=120),
            PortSpec("e", "mixed", max_a=16, phases=Phases.L1_L2_L3, voltage_v=120),
        ],
    )


def test_limit_ids_and_values() -> None:
    tree = mixed_site()
    assert tree.limits() == {
        "site:kW": 50.0,
        "panel:L1": 320.0,
        "panel:L2": 320.0,
        "panel:L3": 320.0,
        "c1": 32.0,
        "c2": 80.0,
        "c2:kW": 10.0,
        "mixed": 48.0,
    }
    assert tree.limit_ids == tuple(tree.limits())
    assert tree.limits_of("a") == ("site:kW", "panel:L1", "panel:L2", "c1")
    assert tree.limits_of("d") == ("site:kW", "mixed")
    assert list(tree.ports) == ["a", "b", "c", "d", "e"]
    assert tree.groups["c2"].limit_kw == 10
    with pytest.raises(ValueError, match="unknown port 'zz'"):
        tree.limits_of("zz")


def test_loads_are_the_phasor_sums() -> None:
    tree = mixed_site()
    amps = {"a": 20.0, "b": 10.0, "c": 30.0, "d": 12.0, "e": 16.0}
    loads = tree.loads(amps)
    # L1 of the panel: 30 A at +30 deg (L1-L2) and nothing on L3-L1: 30 A. L2: 30 A back
    # from L1-L2 at -150 deg, 30 A out on L2-L3 at -90 deg: 60 deg apart, sqrt(3) x 30 A.
    assert loads["panel:L1"] == pytest.approx(30.0)
    assert loads["panel:L2"] == pytest.approx(math.sqrt(3) * 30.0)
    assert loads["panel:L3"] == pytest.approx(30.0)
    assert loads["c1"] == pytest.approx(30.0)
    # The mixed circuit: L1 carries 12 A (L-N) + 16 A (3-phase) in phase: 28 A.
    assert loads["mixed"] == pytest.approx(28.0)
    # kW: L-L and L-N ports I x V; the three-phase port 3 x I x V(L-N).
    expected_kw = (20 + 10 + 30) * 0.208 + 12 * 0.120 + 3 * 16 * 0.120
    assert loads["site:kW"] == pytest.approx(expected_kw)
    assert loads["c2:kW"] == pytest.approx(30 * 0.208)
    assert loads == pytest.approx(reference_loads(tree.spec, amps))


def test_line_a_of_two_208v_loads_is_the_phasor_difference() -> None:
    # docs/design.md: "phase A of two 208 V loads is |I_AB - I_CA|".
    ab = PortSpec("ab", "g", max_a=80, phases=Phases.L1_L2)
    ca = PortSpec("ca", "g", max_a=80, phases=Phases.L3_L1)
    i_ab = port_line_currents(ab, 10.0)[1]
    i_ca = port_line_currents(ca, 20.0)[3]
    tree = tree_of([GroupSpec("g", breaker_a=200, phases=3)], [ab, ca])
    assert tree.loads({"ab": 10.0, "ca": 20.0})["g:L1"] == pytest.approx(abs(i_ab - i_ca))
    assert abs(i_ab - i_ca) == pytest.approx(math.sqrt(10**2 + 20**2 + 10 * 20))


def test_balanced_three_phase_loads() -> None:
    tree = tree_of(
        [GroupSpec("g", breaker_a=400, phases=3)],
        [PortSpec(f"p{k}", "g", max_a=80, phases=PAIRS[k % 3]) for k in range(6)],
    )
    loads = tree.loads({f"p{k}": 80.0 for k in range(6)})
    for line in (1, 2, 3):
        assert loads[f"g:L{line}"] == pytest.approx(math.sqrt(3) * 160.0)  # 277.1 A


def test_kw_per_amp() -> None:
    assert port_kw_per_a(PortSpec("p", "g", 32)) == pytest.approx(0.208)
    assert port_kw_per_a(PortSpec("p", "g", 32, Phases.L2_N, 120)) == pytest.approx(0.120)
    assert port_kw_per_a(PortSpec("p", "g", 32, Phases.L1_L2_L3, 230)) == pytest.approx(0.690)


def test_loads_fits_room_headroom_violations() -> None:
    tree = mixed_site()
    with pytest.raises(ValueError, match="unknown port 'zz'"):
        tree.loads({"zz": 1.0})
    assert tree.fits({"a": 16, "b": 16})
    assert not tree.fits({"a": 16, "b": 16.1})
    assert tree.fits({"a": 16, "b": 16.1}, tol=0.2)
    assert tree.violations({"a": 16, "b": 16.1}) == {"c1": pytest.approx(32.1)}
    assert tree.headroom({"a": 16})["c1"] == pytest.approx(16.0)
    assert tree.room({"a": 20.0}, "b") == pytest.approx(12.0)
    assert tree.room({"a": 40.0}, "b") == 0.0
    assert tree.room({"a": 20.0, "b": 5.0}, "b") == pytest.approx(12.0)  # b's own value ignored
    # c alone: its circuit (80 A) and the c2 kW limit (10 kW / 0.208 = 48.1 A).
    assert tree.room({}, "c") == pytest.approx(10 / 0.208)
    amps = {"a": 20.0, "b": 5.0, "c": 30.0, "d": 12.0, "e": 3.0}
    rooms = tree.rooms(amps)
    assert set(rooms) == set(tree.ports)
    for pid in tree.ports:
        assert rooms[pid] == pytest.approx(tree.room(amps, pid))
        # The room is the most that fits: at it the port fills a limit, just above it, breaks.
        at = dict(amps, **{pid: rooms[pid]})
        assert tree.fits(at, tol=1e-6)
        assert not tree.fits(dict(amps, **{pid: rooms[pid] + 1e-3}))


def test_constraints_describe_every_row() -> None:
    tree = mixed_site()
    rows = tree.constraints()
    assert [r.limit_id for r in rows if r.limit_id == "mixed"] == ["mixed"] * 3  # L1, L2, L3
    amps = {"a": 3.0, "c": 7.0, "d": 11.0, "e": 2.0}
    by_id: dict[str, float] = {}
    for r in rows:
        load = abs(sum(c * amps.get(pid, 0.0) for pid, c in r.terms.items()))
        by_id[r.limit_id] = max(by_id.get(r.limit_id, 0.0), load)
    assert by_id == pytest.approx(tree.loads(amps))


# --- Changing limits ----------------------------------------------------------------------


def test_with_limits_lowers_and_never_raises() -> None:
    tree = mixed_site()
    lower = tree.with_limits({"site:kW": 20.0, "panel:L2": 100.0, "c1": 50.0})
    assert lower.limits()["site:kW"] == 20.0
    assert lower.limits()["panel:L2"] == 100.0
    assert lower.limits()["c1"] == 32.0  # clamped to 80 % of its 40 A breaker
    assert lower.base_limits() == tree.limits()
    assert tree.limits()["site:kW"] == 50.0  # the original is unchanged
    assert lower.with_limits({}).limits() == tree.limits()
    assert not lower.fits({"a": 20.0, "b": 20.0, "c": 60.0})


def test_with_limits_by_group_id_sets_every_line() -> None:
    tree = mixed_site().with_limits({"panel": 200.0})
    assert [tree.limits()[f"panel:L{k}"] for k in (1, 2, 3)] == [200.0] * 3


def test_with_limits_time_of_use_zero_and_dlm() -> None:
    # The guide's office TOU example, "Mon-Fri 12:00 - 18:00: max 0 kW".
    tree = mixed_site()
    assert tree.with_limits({"site:kW": 0.0}).room({}, "a") == 0.0
    # DLM (the guide, "How to set the Limits?"): 500 kW max, 200 kW unmanaged -> 300 kW.
    site = tree_of([GroupSpec("site", limit_kw=500)], [PortSpec("p", "site", 80)])
    assert site.with_limits({"site:kW": 500 - 200}).limits() == {"site:kW": 300.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nope": 1.0}, "unknown limit id 'nope'"),
        ({"bldg": 1.0}, "group 'bldg' has no breaker_a"),
        ({"c1": -1.0}, "limit 'c1': must be >= 0"),
        ({"c1": math.nan}, "limit 'c1': must be >= 0"),
        ({"panel:L4": 1.0}, "unknown limit id 'panel:L4'"),
    ],
)
def test_with_limits_refuses(change: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mixed_site().with_limits(change)


# --- Property: the tree's loads equal the reference on random sites ----------------------------

ALL_PHASES = list(Phases)


@st.composite
def sites_and_amps(draw: st.DrawFn) -> tuple[SiteSpec, dict[str, float]]:
    n_groups = draw(st.integers(1, 6))
    groups = []
    for k in range(n_groups):
        parent = None if k == 0 else f"g{draw(st.integers(0, k - 1))}"
        groups.append(
            GroupSpec(
                f"g{k}",
                parent,
                breaker_a=draw(st.sampled_from([None, 20.0, 40.0, 100.0, 400.0])),
                phases=draw(st.sampled_from([1, 3])),
                limit_kw=draw(st.sampled_from([None, 5.0, 50.0])),
            )
        )
    n_ports = draw(st.integers(0, 12))
    ports = [
        PortSpec(
            f"p{k}",
            f"g{draw(st.integers(0, n_groups - 1))}",
            max_a=80,
            phases=draw(st.sampled_from(ALL_PHASES)),
            voltage_v=draw(st.sampled_from([120.0, 208.0, 230.0, 277.0])),
        )
        for k in range(n_ports)
    ]
    amps = {p.id: draw(st.floats(0, 80)) for p in ports}
    return SiteSpec("s", tuple(groups), tuple(ports)), amps


@settings(max_examples=150, deadline=None)
@given(sites_and_amps())
def test_loads_match_the_reference(case: tuple[SiteSpec, dict[str, float]]) -> None:
    spec, amps = case
    tree = LimitTree.from_spec(spec)
    assert tree.loads(amps) == pytest.approx(reference_loads(spec, amps), abs=1e-9)
    assert tree.fits(amps) == all(
        load <= tree.limits()[lid] + 1e-9 for lid, load in tree.loads(amps).items()
    )
