"""Dynamic limits (time of use, site meter), the site file's meter:, station: and the local
tree of a station, and `ampshare allocate` honouring the state's time: and site_load_kw:."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from controller.dynamic import DynamicLimits, dynamic_limits, next_change
from controller.limits import LimitTree
from controller.model import GroupSpec, PortSpec, SiteSpec
from controller.schedule import ScheduleEntry, WeeklySchedule, parse_days
from controller.site import SiteConfig, SiteMeterSpec, default_station
from firmware.config import ConfigError, load_site_config
from tools.allocate_cmd import allocate_command

ROOT = Path(__file__).resolve().parent.parent
SITES = ROOT / "configs" / "sites"
MONDAY = datetime(2026, 11, 23)


def _config() -> SiteConfig:
    spec = SiteSpec(
        "hq",
        (GroupSpec("site", limit_kw=100.0), GroupSpec("c1", parent="site", breaker_a=100.0)),
        (PortSpec("a.1", "c1", 80.0), PortSpec("b.1", "c1", 80.0)),
    )
    schedule = WeeklySchedule(
        [
            ScheduleEntry(parse_days("mon-fri"), 8 * 60, 18 * 60, 30.0),
            ScheduleEntry(parse_days("sat"), 0, 1440, 60.0),
        ]
    )
    amps = WeeklySchedule([ScheduleEntry(parse_days("daily"), 0, 6 * 60, 40.0)], "a")
    meter = SiteMeterSpec(max_kw=100.0, conservative_kw=20.0, url="modbus-tcp://127.0.0.1:5020")
    return SiteConfig(
        spec,
        {"a": ("a.1",), "b": ("b.1",)},
        schedules={"site": schedule, "c1": amps},
        meters={"site": meter},
    )


def test_the_lowest_of_schedule_and_meter_applies() -> None:
    cfg = _config()
    noon = MONDAY.replace(hour=12)
    # Schedule 30 kW, meter 100 - 50 = 50 kW: 30.
    assert dynamic_limits(cfg, noon, {"site": 50.0}) == {"site:kW": 30.0}
    # Meter 100 - 85 = 15 kW beats the schedule.
    assert dynamic_limits(cfg, noon, {"site": 85.0}) == {"site:kW": 15.0}
    # The guide, "How to set the Limits?" 3: 500 kW site, 200 kW unmanaged -> 300 kW; 400 -> 100.
    guide = SiteConfig(
        cfg.spec, cfg.stations, meters={"site": SiteMeterSpec(max_kw=500.0, conservative_kw=0.0)}
    )
    assert dynamic_limits(guide, None, {"site": 200.0}) == {"site:kW": 300.0}
    assert dynamic_limits(guide, None, {"site": 400.0}) == {"site:kW": 100.0}
    assert dynamic_limits(guide, None, {"site": 900.0}) == {"site:kW": 0.0}


def test_no_reading_means_the_conservative_limit_never_no_limit() -> None:
    cfg = _config()
    sunday = MONDAY.replace(day=29, hour=12)  # no schedule entry: the configured 100 kW
    assert dynamic_limits(cfg, sunday, {"site": None}) == {"site:kW": 20.0}
    assert dynamic_limits(cfg, sunday, {}) == {"site:kW": 20.0}
    assert dynamic_limits(cfg, sunday, {"site": float("nan")}) == {"site:kW": 20.0}


def test_an_ampere_schedule_sets_the_groups_current_limit() -> None:
    cfg = _config()
    night = MONDAY.replace(hour=3)
    limits = dynamic_limits(cfg, night, {"site": 0.0})
    assert limits == {"site:kW": 100.0, "c1": 40.0}
    tree = LimitTree.from_spec(cfg.spec).with_limits(limits)
    assert tree.limits() == {"site:kW": 100.0, "c1": 40.0}
    assert next_change(cfg, night) == MONDAY.replace(hour=6)
    assert dynamic_limits(cfg, None, {"site": 0.0}) == {"site:kW": 100.0}  # no time: no TOU


def test_dynamic_limits_over_time_a_reading_goes_stale_after_stale_s() -> None:
    cfg = _config()  # meter on "site": max 100 kW, conservative 20 kW, stale after 30 s
    sunday = MONDAY.replace(day=29, hour=12)  # no schedule entry
    dyn = DynamicLimits(cfg)
    assert dyn.limits(sunday, 0.0) == {"site:kW": 20.0}  # nothing read yet: conservative
    dyn.read("site", 40.0, 100.0)
    assert dyn.readings(130.0) == {"site": 40.0}
    assert dyn.limits(sunday, 130.0) == dynamic_limits(cfg, sunday, {"site": 40.0})
    assert dyn.readings(130.001) == {"site": None}
    assert dyn.limits(sunday, 130.001) == {"site:kW": 20.0}  # stale: never "no limit"
    dyn.read("site", None, 140.0)  # the meter says it has no reading
    assert dyn.limits(sunday, 140.0) == {"site:kW": 20.0}
    with pytest.raises(ValueError, match="no meter"):
        dyn.read("c1", 1.0, 140.0)


def test_dynamic_limits_say_when_they_change_by_themselves() -> None:
    cfg = _config()
    dyn = DynamicLimits(cfg)
    night = MONDAY.replace(hour=3)
    assert dyn.deadlines(50.0, night) == [50.0 + 3 * 3600.0]  # c1's schedule ends at 06:00
    dyn.read("site", 10.0, 40.0)
    assert dyn.deadlines(50.0, night) == pytest.approx([70.0, 50.0 + 3 * 3600.0])
    # The boundary is the function's, asked again only once the wall clock has passed it.
    for wall in (night, MONDAY.replace(hour=5, minute=59), MONDAY.replace(hour=6)):
        assert dyn.next_change(wall) == next_change(cfg, wall)
    assert dyn.next_change(night) == next_change(cfg, night)  # the clock went back: asked again


# --- the site file ---------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


METER_SITE = """\
site: hq
groups:
  - id: site
    limit_kw: 120
    meter: {url: "modbus-tcp://127.0.0.1:5020?unit=1&model=sdm630", conservative_kw: 40}
  - {id: c1, parent: site, breaker_a: 100}
ports:
  - {id: st1.1, group: c1, max_a: 80}
  - {id: st1.2, group: c1, max_a: 80}
  - {id: lobby, group: c1, max_a: 32, station: st2}
"""


def test_meter_and_station_keys(tmp_path: Path) -> None:
    cfg = load_site_config(_write(tmp_path, METER_SITE))
    meter = cfg.meters["site"]
    assert meter == SiteMeterSpec(
        max_kw=120.0,
        conservative_kw=40.0,
        url="modbus-tcp://127.0.0.1:5020?unit=1&model=sdm630",
        topic=False,
        stale_s=30.0,
    )
    assert cfg.stations == {"st1": ("st1.1", "st1.2"), "st2": ("lobby",)}
    assert cfg.station_of("lobby") == "st2"
    assert default_station("st10.2") == "st10" and default_station("apt1") == "apt1"


@pytest.mark.parametrize(
    ("meter", "group", "message"),
    [
        ("{conservative_kw: 10}", "limit_kw: 50", "exactly one source"),
        ("{url: 'sim://', topic: true, conservative_kw: 10}", "limit_kw: 50", "exactly one"),
        ("{topic: true}", "limit_kw: 50", "missing required key 'conservative_kw'"),
        ("{topic: true, conservative_kw: 10}", "breaker_a: 50", "has no limit_kw"),
        ("{topic: true, conservative_kw: 10, max_kw: 80}", "limit_kw: 50", "out of range"),
        ("{topic: true, conservative_kw: 60}", "limit_kw: 50", "out of range"),
        ("{topic: true, conservative_kw: 10, stale_s: 0}", "limit_kw: 50", "must be > 0"),
        ("{topic: true, conservative_kw: 10, every: 5}", "limit_kw: 50", "unknown key"),
        ("{url: 'no-scheme', conservative_kw: 10}", "limit_kw: 50", "not a backend URL"),
    ],
)
def test_bad_meters_are_refused(tmp_path: Path, meter: str, group: str, message: str) -> None:
    text = (
        f"site: hq\ngroups:\n  - {{id: g, {group}, meter: {meter}}}\n"
        "ports:\n  - {id: a.1, group: g, max_a: 32}\n"
    )
    with pytest.raises(ConfigError, match=message) as caught:
        load_site_config(_write(tmp_path, text))
    assert caught.value.line == 3
    assert caught.value.field.startswith("groups[g].meter")


@pytest.mark.parametrize("bad", ["a/b", "a+", "#"])
def test_station_ids_must_be_topic_levels(tmp_path: Path, bad: str) -> None:
    text = (
        "site: hq\ngroups:\n  - {id: g, breaker_a: 50}\n"
        f"ports:\n  - {{id: a.1, group: g, max_a: 32, station: '{bad}'}}\n"
    )
    with pytest.raises(ConfigError, match="cannot be a station id") as caught:
        load_site_config(_write(tmp_path, text))
    assert (caught.value.line, caught.value.field) == (5, "ports[a.1].station")


def test_station_local_trees() -> None:
    # Jumper stations on a panel: each station's feed is its own root.
    panel = load_site_config(SITES / "jumper-panel.yaml")
    local = panel.station_spec("st2")
    assert [g.id for g in local.groups] == ["st2"]
    assert local.groups[0].parent is None and local.groups[0].breaker_a == 100.0
    assert [p.id for p in local.ports] == ["st2.1", "st2.2"]
    LimitTree.from_spec(local)
    # Stations that share one circuit: no group of their own, a limitless root.
    circuit = load_site_config(SITES / "ten-ports-100a.yaml")
    local = circuit.station_spec("st3")
    assert [(g.id, g.parent, g.breaker_a) for g in local.groups] == [("st3", None, None)]
    assert {p.group for p in local.ports} == {"st3"}
    # A home run per port on a panel: two breakers under the station's root.
    home = load_site_config(SITES / "panel-400a-208v.yaml")
    local = home.station_spec("st1")
    assert [(g.id, g.parent) for g in local.groups] == [
        ("st1", None),
        ("c1.1", "st1"),
        ("c1.2", "st1"),
    ]
    tree = LimitTree.from_spec(local)
    assert tree.limits() == {"c1.1": 80.0, "c1.2": 80.0}


# --- ampshare allocate -----------------------------------------------------------------------


def _allocate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], site: Path, state: str
) -> dict[str, object]:
    path = tmp_path / "state.yaml"
    path.write_text(state)
    assert allocate_command(str(site), str(path)) == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out, dict)
    return out


ALL_CHARGING = "ports: {st1.1: , st1.2: , st2.1: , st2.2: , st3.1: , st3.2: , st4.1: , st4.2: }\n"


@pytest.mark.parametrize(
    ("time", "kw"),
    [
        ("2026-11-23T05:59:59", 40.0),
        ("2026-11-23T06:00:00", 20.0),
        ("2026-11-23T12:00:00", 0.0),
        ("2026-11-23T18:30:00", 20.0),
        ("2026-11-28T12:00:00", 40.0),  # Saturday
    ],
)
def test_allocate_honours_the_time_of_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], time: str, kw: float
) -> None:
    out = _allocate(tmp_path, capsys, SITES / "office-tou.yaml", f"time: {time}\n{ALL_CHARGING}")
    groups = out["groups"]
    assert isinstance(groups, dict)
    assert groups["site:kW"]["limit"] == kw
    assert groups["site:kW"]["load"] <= kw + 1e-9
    ports = out["ports"]
    assert isinstance(ports, dict)
    if kw == 0.0:
        assert set(ports.values()) == {0}
    else:
        assert sum(ports.values()) * 0.208 == pytest.approx(kw, abs=8 * 0.1 * 0.208 + 0.3)


def test_allocate_without_time_uses_the_configured_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _allocate(tmp_path, capsys, SITES / "office-tou.yaml", ALL_CHARGING)
    assert out["groups"]["site:kW"]["limit"] == 40  # type: ignore[index]


def test_allocate_site_load_feeds_the_meter_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _write(tmp_path, METER_SITE)
    both = "ports: {st1.1: , st1.2: }\n"
    out = _allocate(tmp_path, capsys, site, f"site_load_kw: 100\n{both}")
    assert out["groups"]["site:kW"]["limit"] == 20  # type: ignore[index]
    # No reading in the state: the meter's conservative limit.
    out = _allocate(tmp_path, capsys, site, both)
    assert out["groups"]["site:kW"]["limit"] == 40  # type: ignore[index]


def test_allocate_site_load_without_a_meter_lowers_the_root_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = ROOT / "tests" / "fixtures" / "config" / "site-ok.yaml"
    out = _allocate(tmp_path, capsys, site, "site_load_kw: 480\nports: {st1.1: }\n")
    assert out["groups"]["site:kW"]["limit"] == 20  # type: ignore[index]
