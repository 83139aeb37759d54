"""Every worked number of the power-sharing guide (seeds/001), reproduced by `allocate`.

Each test names the guide section it comes from. Currents are on the pilot's 0.1 A grid.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.allocate import Allocation, PortRequest, allocate
from controller.limits import LimitTree
from controller.model import GroupSpec, Phases, Policy, PortSpec, SiteSpec

SITES = Path(__file__).resolve().parent.parent / "configs" / "sites"
PAIRS = (Phases.L1_L2, Phases.L2_L3, Phases.L3_L1)


def tree_of(groups: list[GroupSpec], ports: list[PortSpec]) -> LimitTree:
    return LimitTree.from_spec(SiteSpec("t", tuple(groups), tuple(ports)))


def charging(*ids: str, want: float = 80.0, min_a: float = 8.0) -> dict[str, PortRequest]:
    """Vehicles that take all they are offered, plugged in in the order given."""
    return {pid: PortRequest(want, min_a, since=float(k)) for k, pid in enumerate(ids)}


def site_from_yaml(path: Path) -> SiteSpec:
    """A minimal reader of the docs/design.md site file shape (the loader is firmware.config)."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    volts = float(doc.get("voltage_v", 208))
    min_a = float(doc.get("min_a", 8))
    groups = tuple(
        GroupSpec(
            id=str(g["id"]),
            parent=g.get("parent"),
            breaker_a=g.get("breaker_a"),
            phases=int(g.get("phases", 1)),
            limit_kw=g.get("limit_kw"),
        )
        for g in doc["groups"]
    )
    ports = tuple(
        PortSpec(
            id=str(p["id"]),
            group=str(p["group"]),
            max_a=float(p["max_a"]),
            phases=Phases(p.get("phases", "L1-L2")),
            voltage_v=float(p.get("voltage_v", volts)),
            power_select_a=p.get("power_select_a"),
            min_a=float(p.get("min_a", min_a)),
            fallback_a=p.get("fallback_a"),
        )
        for p in doc["ports"]
    )
    return SiteSpec(str(doc["site"]), groups, ports, Policy(doc.get("policy", "equal")))


def holds(tree: LimitTree, result: Allocation) -> None:
    assert tree.fits(result.amps)
    for lid, load in result.loads.items():
        assert load <= result.limits[lid] + 1e-9, lid


# --- "Power Sharing Jumper" (CT4000: 40 A breaker, ports rated 30 A) ------------------------


def ct4000_jumper() -> LimitTree:
    return tree_of(
        [GroupSpec("st", breaker_a=40)],  # 80 % -> 32 A shared
        [PortSpec("1", "st", max_a=30), PortSpec("2", "st", max_a=30)],
    )


def test_jumper_one_vehicle_takes_up_to_port_max() -> None:
    # "When a single vehicle plugs in, it will take as much power as it can up to 80% of the
    # installed breaker rating": min(port max 30 A, 32 A) = 30 A.
    result = allocate(ct4000_jumper(), charging("1"))
    assert result.amps == {"1": 30.0}
    assert result.binding == {"1": "port"}
    assert result.limits["st"] == 32.0


def test_jumper_two_vehicles_share_50_50() -> None:
    result = allocate(ct4000_jumper(), charging("1", "2"))
    assert result.amps == {"1": 16.0, "2": 16.0}
    assert result.binding == {"1": "st", "2": "st"}
    assert result.loads["st"] == pytest.approx(32.0)


def test_jumper_what_one_cannot_take_goes_to_the_other() -> None:
    # "If one vehicle cannot take as much power as 50% ... the second vehicle may receive a
    # higher charge such that the amperage of the two vehicles does not exceed 80%".
    reqs = {"1": PortRequest(10.0, 8.0, since=0.0), "2": PortRequest(80.0, 8.0, since=1.0)}
    result = allocate(ct4000_jumper(), reqs)
    assert result.amps == {"1": 10.0, "2": 22.0}
    assert result.binding == {"1": "demand", "2": "st"}


def test_cp6000_jumper_on_100a_gives_40_each() -> None:
    # CP6000 "can be installed up to a 100 A feed"; the panel example: "With a jumper, power
    # is shared between 2 vehicles with each at 40 A (max) each".
    tree = tree_of(
        [GroupSpec("st", breaker_a=100)],
        [PortSpec("1", "st", max_a=80), PortSpec("2", "st", max_a=80)],
    )
    assert allocate(tree, charging("1", "2")).amps == {"1": 40.0, "2": 40.0}
    assert allocate(tree, charging("2")).amps == {"2": 80.0}


def test_power_select_caps_the_port() -> None:
    # "Power Select": CT4000 installed for 16 A service (20 A breaker) per port.
    tree = tree_of(
        [GroupSpec("st", breaker_a=40)],
        [PortSpec("1", "st", max_a=30, power_select_a=16), PortSpec("2", "st", max_a=30)],
    )
    result = allocate(tree, charging("1", "2"))
    assert result.amps == {"1": 16.0, "2": 16.0}
    result = allocate(tree, charging("1"))
    assert result.amps == {"1": 16.0}
    assert result.binding == {"1": "port"}


# --- "Power Sharing at the Circuit Level" and the introduction --------------------------------


def ten_ports_100a() -> LimitTree:
    return tree_of(
        [GroupSpec("c1", breaker_a=100)],
        [PortSpec(f"p{k}", "c1", max_a=80) for k in range(10)],
    )


def test_ten_ports_on_100a_get_8a_each() -> None:
    # "10 ports sharing a single 100 A circuit would yield 8 A per port"; 8 A x 208 V = 1.664 kW.
    tree = ten_ports_100a()
    result = allocate(tree, charging(*tree.ports))
    assert set(result.amps.values()) == {8.0}
    assert result.paused == frozenset()
    assert 8.0 * tree.ports["p0"].voltage_v / 1000 == pytest.approx(1.664)


def test_ten_ports_single_vehicle_gets_80a() -> None:
    # "when a single vehicle is charging it will get up to 80 A (or its max AC input level)".
    tree = ten_ports_100a()
    assert allocate(tree, charging("p3")).amps == {"p3": 80.0}
    assert allocate(tree, charging("p3", want=48.0)).amps == {"p3": 48.0}


def test_finished_vehicles_give_their_share_back() -> None:
    # "vehicles will complete their charge ... rediverts the available power" (no unplug):
    # 4 of 10 finished (taking ~0 A) -> the other 6 share 80 A.
    tree = ten_ports_100a()
    reqs = charging(*tree.ports)
    for pid in ("p0", "p1", "p2", "p3"):
        reqs[pid] = PortRequest(0.0, 8.0)
    result = allocate(tree, reqs)
    # 80 / 6 = 13.33 A: 13.3 A each, and the 0.2 A left by the pilot's 0.1 A grid goes to
    # the first two (lowest port ids).
    assert [result.amps[f"p{k}"] for k in range(4, 10)] == [13.4, 13.4, 13.3, 13.3, 13.3, 13.3]
    assert all(result.amps[f"p{k}"] == 0.0 for k in range(4))
    assert result.loads["c1"] == pytest.approx(80.0)


def test_3_3_kw_minimum_lets_only_5_ports_share_100a() -> None:
    # "some jurisdictions require ... 3.3 kW (approximately 16 A at 208 V) ... only 5 ports
    # could share a 100 A circuit": floors of 16 A admit 5, the rest wait (round robin).
    tree = ten_ports_100a()
    result = allocate(tree, charging(*tree.ports, min_a=16.0))
    admitted = [pid for pid, a in result.amps.items() if a > 0]
    assert len(admitted) == 5
    assert all(result.amps[pid] == 16.0 for pid in admitted)
    assert len(result.paused) == 5
    assert all(result.binding[pid] == "paused" for pid in result.paused)


# --- "Power Sharing Through the Panel": 400 A / 208 V three-phase ------------------------------


def panel_400a(ports: int = 20) -> LimitTree:
    """400 A panel (320 A per phase), a 100 A 2-pole home run per port, pairs rotating."""
    groups = [GroupSpec("panel", breaker_a=400, phases=3)]
    specs = []
    for k in range(ports):
        groups.append(GroupSpec(f"c{k:02d}", "panel", breaker_a=100))
        specs.append(PortSpec(f"p{k:02d}", f"c{k:02d}", max_a=80, phases=PAIRS[k % 3]))
    return tree_of(groups, specs)


def test_panel_six_vehicles_spread_over_the_pairs_get_80a() -> None:
    # "any six vehicles can plug into any port on the panel and receive the full 80 A":
    # two per phase pair put sqrt(3) x 160 = 277 A on each line, under 320 A.
    tree = panel_400a()
    result = allocate(tree, charging(*[f"p{k:02d}" for k in range(6)]))
    assert set(result.amps.values()) == {80.0}
    assert set(result.binding.values()) == {"port"}
    for line in (1, 2, 3):
        assert result.loads[f"panel:L{line}"] == pytest.approx(math.sqrt(3) * 160.0)


def test_panel_seventh_vehicle_throttles_everyone() -> None:
    # "When a seventh vehicle plugs in, the panel ratings would be exceeded, so stations
    # throttle back": 3-2-2 over the pairs; lines L1 and L2 carry sqrt(19) x I = 320 A.
    tree = panel_400a()
    result = allocate(tree, charging(*[f"p{k:02d}" for k in range(7)]))
    level = 320.0 / math.sqrt(19.0)  # 73.41 A
    assert set(result.amps.values()) == {math.floor(level * 10) / 10} == {73.4}
    assert {b for b in result.binding.values()} <= {"panel:L1", "panel:L2"}
    holds(tree, result)


def test_panel_twenty_vehicles_get_about_27a() -> None:
    # "vehicles will continue to plug in until all ports are occupied ... (27 A in this
    # example)". Per-line phasor sums with 7-7-6 ports over L1-L2, L2-L3, L3-L1: line L2
    # carries 7x on each of its two pairs, sqrt(3) x 7x = 320 A -> x = 26.39 A for the 14
    # ports on the heavier pairs; the 6 on L3-L1 rise on to 30.8 A, when L1 and L3 are full.
    tree = panel_400a()
    result = allocate(tree, charging(*tree.ports))
    heavy = [a for pid, a in result.amps.items() if int(pid[1:]) % 3 != 2]
    light = [a for pid, a in result.amps.items() if int(pid[1:]) % 3 == 2]
    assert len(heavy) == 14 and len(light) == 6
    exact = 320.0 / (math.sqrt(3) * 7)  # 26.39 A
    assert set(heavy) <= {26.3, 26.4}  # on the 0.1 A grid, the rest topped up where it fits
    assert sum(heavy) / 14 <= exact
    assert set(light) <= {30.7, 30.8}
    assert 27.0 <= sum(result.amps.values()) / 20 <= 28.0  # the guide's "about 27 A"
    assert min(result.amps.values()) >= 26.3
    holds(tree, result)
    assert result.loads["panel:L2"] == pytest.approx(320.0, abs=0.1)


def test_panel_twenty_one_balanced_ports_get_26_4a() -> None:
    # 7-7-7: every line carries sqrt(3) x 7 x I = 320 A -> I = 26.39 A, floored to 26.3 A,
    # then topped up by 0.1 A where a line still has room.
    tree = panel_400a(21)
    result = allocate(tree, charging(*tree.ports))
    assert set(result.amps.values()) <= {26.3, 26.4}
    holds(tree, result)


def test_panel_six_vehicles_on_one_pair_do_not_all_get_80a() -> None:
    # The guide's "any six" counts amperes as if single phase; per line, six vehicles on the
    # same pair put 480 A on L1 and L2. Physics wins: they share 320 A (53.3 A each).
    tree = panel_400a()
    result = allocate(tree, charging(*[f"p{k:02d}" for k in range(0, 18, 3)]))
    assert set(result.amps.values()) <= {53.3, 53.4}
    assert sum(result.amps.values()) == pytest.approx(320.0)


# --- "Combining Power Sharing Strategies": jumper + panel -----------------------------------


def test_jumper_panel_two_vehicles_at_one_station_get_40a() -> None:
    tree = LimitTree.from_spec(site_from_yaml(SITES / "jumper-panel.yaml"))
    result = allocate(tree, charging("st1.1", "st1.2"))
    assert result.amps == {"st1.1": 40.0, "st1.2": 40.0}
    assert result.binding == {"st1.1": "st1", "st1.2": "st1"}
    # Six vehicles at six different stations, two per pair: 80 A each.
    six = charging("st1.1", "st2.1", "st3.1", "st4.1", "st5.1", "st6.1")
    assert set(allocate(tree, six).amps.values()) == {80.0}


def test_jumper_panel_twenty_vehicles_about_27a() -> None:
    # "20 vehicles at 20 ports - power is shared with all vehicles at 27 A (max) each".
    # Stations 4-3-3 over the pairs (8-6-6 ports): L1 and L2 carry sqrt(148) x I = 320 A.
    tree = LimitTree.from_spec(site_from_yaml(SITES / "jumper-panel.yaml"))
    result = allocate(tree, charging(*tree.ports))
    assert set(result.amps.values()) == {26.3}
    holds(tree, result)


# --- Multifamily: "(5) Ports / 50 Amp 208V Circuit" -----------------------------------------


def test_multifamily_five_ports_on_50a_get_8a() -> None:
    tree = LimitTree.from_spec(site_from_yaml(SITES / "multifamily-5-ports-50a.yaml"))
    assert tree.limits() == {"c1": 40.0}
    result = allocate(tree, charging(*tree.ports))
    assert set(result.amps.values()) == {8.0}
    assert allocate(tree, charging("apt2")).amps == {"apt2": 40.0}  # Power Select 40 A


# --- Site files ---------------------------------------------------------------------------


def test_site_files_reproduce_the_guide() -> None:
    ten = LimitTree.from_spec(site_from_yaml(SITES / "ten-ports-100a.yaml"))
    assert set(allocate(ten, charging(*ten.ports)).amps.values()) == {8.0}
    panel = LimitTree.from_spec(site_from_yaml(SITES / "panel-400a-208v.yaml"))
    ids = list(panel.ports)
    file_order = [p.id for p in site_from_yaml(SITES / "panel-400a-208v.yaml").ports]
    assert set(allocate(panel, charging(*file_order[:6])).amps.values()) == {80.0}
    assert set(allocate(panel, charging(*file_order[:7])).amps.values()) == {73.4}
    twenty = allocate(panel, charging(*ids)).amps
    assert 27.0 <= sum(twenty.values()) / 20 <= 28.0
    assert min(twenty.values()) >= 26.3


# --- "Sharing Policy": 40 kW DC + 10 kW AC under a 25 kW group limit -------------------------


def dc_ac() -> LimitTree:
    # The DC charger modelled as a port of 40 kW (100 A at 400 V, rated_kw 40), the AC one as
    # 40 A at 250 V (10 kW), under a 25 kW group limit: oversubscription 50 / 25 = 2:1.
    return tree_of(
        [GroupSpec("site", limit_kw=25)],
        [
            PortSpec("dc", "site", max_a=100, voltage_v=400, rated_kw=40),
            PortSpec("ac", "site", max_a=40, voltage_v=250),
        ],
    )


def kw(tree: LimitTree, result: Allocation) -> dict[str, float]:
    return {pid: round(a * tree.ports[pid].voltage_v / 1000, 6) for pid, a in result.amps.items()}


def test_proportional_share_20_and_5_kw() -> None:
    tree = dc_ac()
    reqs = {"dc": PortRequest(100.0, since=0.0), "ac": PortRequest(40.0, since=1.0)}
    result = allocate(tree, reqs, Policy.PROPORTIONAL)
    assert kw(tree, result) == {"dc": 20.0, "ac": 5.0}
    assert result.binding == {"dc": "site:kW", "ac": "site:kW"}


def test_proportional_remaining_power_goes_to_the_other() -> None:
    # "If one of the vehicles ... draws less power than it was allocated, any remaining power
    # (up to the group limit) is assigned to the other vehicle."
    tree = dc_ac()
    reqs = {"dc": PortRequest(100.0, since=0.0), "ac": PortRequest(8.0, since=1.0)}
    result = allocate(tree, reqs, Policy.PROPORTIONAL)
    assert kw(tree, result) == {"dc": 23.0, "ac": 2.0}


def test_fcfs_dc_first_25_and_0_kw() -> None:
    tree = dc_ac()
    reqs = {"dc": PortRequest(100.0, since=0.0), "ac": PortRequest(40.0, 8.0, since=1.0)}
    result = allocate(tree, reqs, Policy.FCFS)
    assert kw(tree, result) == {"dc": 25.0, "ac": 0.0}
    assert result.paused == frozenset({"ac"})
    # Without a floor the AC port is simply left nothing by the full group limit.
    reqs["ac"] = PortRequest(40.0, since=1.0)
    result = allocate(tree, reqs, Policy.FCFS)
    assert kw(tree, result) == {"dc": 25.0, "ac": 0.0}
    assert result.binding["ac"] == "site:kW" and result.paused == frozenset()


def test_fcfs_ac_first_15_and_10_kw() -> None:
    tree = dc_ac()
    reqs = {"dc": PortRequest(100.0, since=1.0), "ac": PortRequest(40.0, since=0.0)}
    result = allocate(tree, reqs, Policy.FCFS)
    assert kw(tree, result) == {"dc": 15.0, "ac": 10.0}
    assert result.binding == {"dc": "site:kW", "ac": "port"}


def test_fcfs_first_vehicle_dipping_frees_power_for_the_second() -> None:
    # "if the vehicle attached to the AC charger dips below 10 kW, the remainder is allocated
    # to the second vehicle on the DC charger".
    tree = dc_ac()
    reqs = {"dc": PortRequest(100.0, since=1.0), "ac": PortRequest(20.0, since=0.0)}
    assert kw(tree, allocate(tree, reqs, Policy.FCFS)) == {"dc": 20.0, "ac": 5.0}


# --- "Minimum Power Level": 10 AC chargers of 6 kW under 50 kW --------------------------------


def test_minimum_power_example_10_chargers_6kw_under_50kw() -> None:
    # "10 AC chargers @ 6 kW each ... The group limit should be kept at 50 kW or greater, so
    # that the minimum power for each charger is 1.5 kW or greater": 5 kW each here.
    tree = tree_of(
        [GroupSpec("g", limit_kw=50)],
        [PortSpec(f"c{k}", "g", max_a=25, voltage_v=240) for k in range(10)],  # 6 kW each
    )
    result = allocate(tree, charging(*tree.ports))
    assert all(a * 0.240 >= 1.5 for a in result.amps.values())
    assert sum(a * 0.240 for a in result.amps.values()) <= 50.0 + 1e-9
    # 50 kW / 240 V / 10 = 20.83 A: 20.8 A each, 0.3 A of grid remainder topped up.
    assert sorted(result.amps.values()) == [20.8] * 7 + [20.9] * 3
