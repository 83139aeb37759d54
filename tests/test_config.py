"""Config loading: every shipped config loads, every bad one is refused with file:line:field.

The bad configs are files in tests/fixtures/config/; each says what it expects in a
``# expect: LINE: FIELD: message-prefix`` comment (or, for JSON, a sibling ``.expect`` file).
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.core import ControlSettings
from controller.model import Phases, Policy
from firmware.config import (
    ConfigError,
    StationConfig,
    load_site,
    load_state,
    load_station,
    parse_duration,
)
from firmware.models import MODELS
from firmware.port import PortConfig
from hal.sim.config import SimSection

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "config"
SITE_OK = FIXTURES / "site-ok.yaml"


def _sim(config: StationConfig) -> SimSection:
    """The station's ``sim:`` section, as the sim backend read it."""
    assert isinstance(config.hardware_section, SimSection)
    return config.hardware_section


def _expectation(path: Path) -> tuple[int, str, str]:
    sidecar = path.with_suffix(".expect")
    if sidecar.exists():
        text = sidecar.read_text().strip()
    else:
        lines = [ln for ln in path.read_text().splitlines() if ln.startswith("# expect: ")]
        assert lines, f"{path.name} has no '# expect:' line"
        text = lines[0].removeprefix("# expect: ")
    line, field, message = text.split(": ", 2)
    return int(line), field, message


def _bad(prefix: str) -> list[Path]:
    return sorted(p for p in FIXTURES.glob(f"{prefix}-*") if p.suffix in (".yaml", ".json"))


def _check_refusal(path: Path, exc: ConfigError) -> None:
    line, field, message = _expectation(path)
    assert exc.path == str(path)
    assert (exc.line, exc.field) == (line, field), str(exc)
    assert exc.message.startswith(message), str(exc)
    where = f"{path}:{line}"
    assert str(exc) == (f"{where}: {field}: {exc.message}" if field else f"{where}: {exc.message}")
    assert "\n" not in str(exc)


# ---- shipped configs -------------------------------------------------------------------------

SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))


def test_every_model_config_is_shipped() -> None:
    names = {p.name for p in SHIPPED}
    for name in ("ct4000", "ct4000-jumper", "cp6000", "cp6000-jumper", "demo-jumper"):
        assert f"{name}.yaml" in names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_station_configs_load(path: Path) -> None:
    config = load_station(str(path))
    assert config.port_ids == ("1", "2")
    assert len(config.meter_urls) == 2
    assert config.loop_period_s <= 0.1


def test_ct4000_jumper_is_one_40a_feed() -> None:
    config = load_station(str(ROOT / "configs" / "ct4000-jumper.yaml"))
    assert config.jumper and config.model == "ct4000"
    (feed,) = config.site.groups
    assert feed.breaker_a == 40 and feed.limit_a == pytest.approx(32.0)
    assert [p.group for p in config.site.ports] == [feed.id, feed.id]
    assert [p.cap_a for p in config.site.ports] == [30.0, 30.0]
    assert [p.min_a for p in config.site.ports] == [8.0, 8.0]
    assert config.site.policy is Policy.EQUAL
    assert config.hardware_url == "sim://" and config.meter_urls == ("builtin", "builtin")
    assert config.port_config == PortConfig()
    assert config.control == ControlSettings() and config.hardware_section is None


def test_no_jumper_configs_have_a_breaker_per_port() -> None:
    for name, breaker, cap in (("ct4000", 40, 30), ("cp6000", 100, 80)):
        config = load_station(str(ROOT / "configs" / f"{name}.yaml"))
        assert not config.jumper
        # A pure grouping root named after the station holds one breaker per port (the limit
        # tree has exactly one root).
        root, *breakers = config.site.groups
        assert (root.id, root.parent, root.breaker_a, root.limit_kw) == (name, None, None, None)
        assert [(g.parent, g.breaker_a) for g in breakers] == [(name, breaker), (name, breaker)]
        assert len({p.group for p in config.site.ports}) == 2
        assert [p.cap_a for p in config.site.ports] == [cap, cap]


def test_demo_has_two_evs_arriving_2s_and_20s() -> None:
    config = load_station(str(ROOT / "configs" / "demo-jumper.yaml"))
    first, second = _sim(config).evs
    assert (first.port, first.arrive_s) == ("1", 2.0)
    assert second.port == "2" and 15 <= second.arrive_s <= 25
    assert first.leave_s == 180.0
    assert max(first.battery_kwh, second.battery_kwh) <= 2


# ---- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", _bad("station"), ids=lambda p: p.name)
def test_bad_station_is_refused_with_file_line_field(path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_station(str(path))
    _check_refusal(path, caught.value)


@pytest.mark.parametrize("path", _bad("site"), ids=lambda p: p.name)
def test_bad_site_is_refused_with_file_line_field(path: Path) -> None:
    if path == SITE_OK:
        return
    with pytest.raises(ConfigError) as caught:
        load_site(str(path))
    _check_refusal(path, caught.value)


@pytest.mark.parametrize("path", _bad("state"), ids=lambda p: p.name)
def test_bad_state_is_refused_with_file_line_field(path: Path) -> None:
    site = load_site(str(SITE_OK))
    with pytest.raises(ConfigError) as caught:
        load_state(str(path), site)
    _check_refusal(path, caught.value)


def test_fixtures_cover_every_refusal_the_brief_names() -> None:
    names = {p.stem for p in FIXTURES.iterdir()}
    for needed in (
        "station-breaker-missing",
        "station-min-below-6",
        "station-max-above-rating",
        "station-jumper-no-option",
        "station-jumper-split",
        "station-no-jumper-shared",
        "station-fallback-above-cap",
        "station-fallback-sum",
        "station-power-select-above-rating",
        "station-power-select-vs-breaker",
        "station-unknown-key",
        "station-wrong-type",
        "station-duplicate-port",
        "station-unknown-model",
        "site-cycle",
        "site-orphan",
        "site-limit-zero",
        "state-unknown-port",
        "state-negative",
        "state-nan",
    ):
        assert needed in names


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_station(str(missing))
    assert str(caught.value).startswith(f"{missing}: cannot read the file")
    with pytest.raises(ConfigError):
        load_site(str(tmp_path))  # a directory


def test_empty_file_is_a_config_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="empty"):
        load_station(str(empty))


def test_malformed_yaml_keeps_yamls_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("station: s\nmodel: [ct4000\ngroups: []\n")
    with pytest.raises(ConfigError) as caught:
        load_station(str(bad))
    assert caught.value.line is not None and caught.value.line >= 2
    assert "malformed YAML" in str(caught.value)


# ---- accepted variations ---------------------------------------------------------------------

BASE = """\
station: s
model: ct4000
jumper: true
groups:
  - {id: feed, breaker_a: 40}
ports:
  - {id: "1", group: feed}
  - {id: "2", group: feed, power_select_a: 24, fallback_a: 16, meter: "modbus-tcp://10.0.0.5:502?unit=2"}
"""


def _station(tmp_path: Path, extra: str = "", base: str = BASE) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(base + extra)
    return path


def test_station_options_are_read(tmp_path: Path) -> None:
    config = load_station(
        str(
            _station(
                tmp_path,
                "hardware: serial:///dev/ttyAMA0\nloop_period_s: 20ms\npolicy: fcfs\n"
                "port_machine: {gfci_retry_delay_s: 15m, gfci_max_retries: 2, overdraw_s: 7}\n"
                "control: {demand: {probe_interval_s: 5m, low_margin_a: 1}, wake: {attempts: 2}}\n",
            )
        )
    )
    port2 = config.site.ports[1]
    assert port2.cap_a == 24 and port2.fallback_a == 16
    assert config.meter_url("2").startswith("modbus-tcp://") and config.meter_url("1") == "builtin"
    assert config.hardware_url == "serial:///dev/ttyAMA0"
    assert config.loop_period_s == pytest.approx(0.02)
    assert config.site.policy is Policy.FCFS
    assert config.port_config.gfci_retry_delay_s == 900.0
    assert config.port_config.gfci_max_retries == 2
    assert config.port_config.overdraw_s == 7.0
    assert config.station_model is MODELS["ct4000"]
    assert config.control.demand.probe_interval_s == 300.0
    assert config.control.demand.low_margin_a == 1.0
    assert config.control.wake.attempts == 2 and isinstance(config.control.wake.attempts, int)


def test_port_machine_keys_follow_portconfig_fields(tmp_path: Path) -> None:
    # Every PortConfig field is settable, so a field added later works without loader changes.
    settings = "".join(
        f"  {f.name}: {1 if f.type in ('int', int) else 1.5}\n"
        for f in dataclasses.fields(PortConfig)
    )
    config = load_station(str(_station(tmp_path, "port_machine:\n" + settings)))
    for f in dataclasses.fields(PortConfig):
        assert getattr(config.port_config, f.name) in (1, 1.5)


def test_sim_evs_are_read_with_durations(tmp_path: Path) -> None:
    config = load_station(
        str(
            _station(
                tmp_path,
                "sim:\n  evs:\n"
                "    - {port: 1, arrive: 30s, leave: 1.5h, max_a: 32, phases: 1, battery_kwh: 60,\n"
                "       soc: 0.2, target_soc: 0.9, response_s: 2, min_a: 6, wakes: false,\n"
                "       overdraw_a: 3}\n"
                "    - {port: '1', arrive: 90m}\n"
                "    - {port: 2, arrive: 0}\n",
            )
        )
    )
    first, second, third = _sim(config).evs
    assert (first.arrive_s, first.leave_s, first.wakes, first.overdraw_a) == (
        30.0,
        5400.0,
        False,
        3,
    )
    assert (second.port, second.arrive_s, second.leave_s) == ("1", 5400.0, None)
    assert third.port == "2"


def test_the_hardwares_own_meter_is_builtin_and_sim_is_no_meter(tmp_path: Path) -> None:
    base = BASE.replace('{id: "1", group: feed}', '{id: "1", group: feed, meter: builtin}')
    config = load_station(str(_station(tmp_path, base=base)))
    assert config.meter_url("1") == "builtin"
    # sim:// used to double as "the hardware's own meter"; it is the simulated hardware.
    with pytest.raises(ConfigError) as caught:
        load_station(str(_station(tmp_path, base=base.replace("meter: builtin", "meter: sim://"))))
    error = caught.value
    assert (error.line, error.field) == (7, "ports[1].meter")
    assert error.message == (
        "'sim://' names hardware, not a meter: write builtin for the meter that comes with "
        "the hardware"
    )
    with pytest.raises(ConfigError, match="neither builtin nor a meter URL"):
        load_station(str(_station(tmp_path, base=base.replace("meter: builtin", "meter: ct"))))


def test_a_sim_section_needs_sim_hardware(tmp_path: Path) -> None:
    extra = "hardware: serial:///dev/ttyAMA0\nsim:\n  evs: [{port: 1}]\n"
    with pytest.raises(ConfigError) as caught:
        load_station(str(_station(tmp_path, extra)))
    assert caught.value.field == "sim"
    assert caught.value.message.startswith(
        "configures the sim:// backend, but this station's hardware is serial:///dev/ttyAMA0"
    )


def test_jumper_defaults_to_false(tmp_path: Path) -> None:
    base = BASE.replace("jumper: true\n", "").replace(
        "groups:\n  - {id: feed, breaker_a: 40}\n",
        "groups:\n  - {id: feed, breaker_a: 40}\n  - {id: f2, breaker_a: 40}\n",
    )
    base = base.replace('{id: "2", group: feed,', '{id: "2", group: f2,')
    config = load_station(str(_station(tmp_path, base=base)))
    assert not config.jumper and len(config.site.groups) == 3


def test_power_select_lets_a_ct4000_sit_on_a_20a_breaker(tmp_path: Path) -> None:
    # The guide, Power Select: "CT4000 installed for 16A service (20A breaker) per port".
    text = """\
station: s
model: ct4000
groups:
  - {id: b1, breaker_a: 20}
  - {id: b2, breaker_a: 20}
ports:
  - {id: "1", group: b1, power_select_a: 16}
  - {id: 2, group: b2, power_select_a: 16, min_a: 6, fallback_a: 0}
"""
    config = load_station(str(_station(tmp_path, base=text)))
    assert [p.cap_a for p in config.site.ports] == [16, 16]
    assert config.site.ports[1].min_a == 6


def test_single_port_model_without_jumper_loads(tmp_path: Path) -> None:
    text = (
        "station: s\nmodel: cpf50\ngroups: [{id: c, breaker_a: 80}]\nports: [{id: '1', group: c}]\n"
    )
    config = load_station(str(_station(tmp_path, base=text)))
    assert config.port_ids == ("1",) and not config.jumper


# ---- site files ------------------------------------------------------------------------------


def test_design_site_example_loads() -> None:
    site = load_site(str(SITE_OK))
    assert site.id == "hq" and site.policy is Policy.EQUAL
    assert [g.id for g in site.groups] == ["site", "panel1", "c1"]
    panel = site.groups[1]
    assert (panel.parent, panel.breaker_a, panel.phases, panel.limit_a) == ("site", 400, 3, 320)
    assert site.groups[0].limit_kw == 500
    p1, p2 = site.ports
    assert (p1.id, p1.max_a, p1.phases, p1.voltage_v, p1.min_a) == (
        "st1.1",
        80,
        Phases.L1_L2,
        208,
        8,
    )
    assert (p2.cap_a, p2.fallback_a) == (32, 16)


def _guide_panel(tmp_path: Path, fallback_a: float) -> Path:
    # The guide's 400 A / 208 V 3-phase panel: 10 CP6000s, 20 ports on 100 A 2-pole breakers,
    # spread over the three line pairs.
    pairs = ["L1-L2", "L2-L3", "L3-L1"]
    lines = [
        "site: panel-400a",
        "groups:",
        "  - {id: panel, breaker_a: 400, phases: 3}",
    ]
    lines += [f"  - {{id: st{n}, parent: panel, breaker_a: 100}}" for n in range(1, 11)]
    lines.append("ports:")
    for n in range(20):
        station = n // 2 + 1
        lines.append(
            f"  - {{id: st{station}.{n % 2 + 1}, group: st{station}, max_a: 80, "
            f"phases: {pairs[station % 3]}, fallback_a: {fallback_a}}}"
        )
    path = tmp_path / "panel.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fallback_sum_uses_per_line_phasors(tmp_path: Path) -> None:
    # 20 ports x 24 A = 480 A summed, but spread over three line pairs no line carries more
    # than about 320 A: accepted. A plain sum would refuse it; 28 A each is refused.
    site = load_site(str(_guide_panel(tmp_path, 24)))
    assert len(site.ports) == 20
    with pytest.raises(ConfigError, match=r"on L\d, above the group's 80 % limit of 320 A"):
        load_site(str(_guide_panel(tmp_path, 28)))


def test_site_anchors_and_merge_keys(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        "site: s\ngroups:\n  - {id: c1, breaker_a: 100}\n"
        "ports:\n  - &p {id: a, group: c1, max_a: 40}\n  - {<<: *p, id: b}\n"
    )
    site = load_site(str(path))
    assert [(p.id, p.max_a) for p in site.ports] == [("a", 40), ("b", 40)]


def test_malformed_meter_group_is_refused_not_ignored(tmp_path: Path) -> None:
    # Issue 7 reads schedule: and meter: (tests/test_dynamic_limits.py); a malformed one is
    # still refused at its line, never ignored.
    path = tmp_path / "site.yaml"
    path.write_text(
        "site: s\ngroups:\n  - {id: c1, breaker_a: 100, meter: 'modbus-tcp://x'}\n"
        "ports:\n  - {id: a, group: c1, max_a: 40}\n"
    )
    with pytest.raises(ConfigError, match="expected a mapping") as caught:
        load_site(str(path))
    assert (caught.value.line, caught.value.field) == (3, "groups[c1].meter")


# ---- state files -----------------------------------------------------------------------------


def test_state_yaml_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "state.yaml"
    path.write_text(
        "time: 2026-11-23T10:00:00\nsite_load_kw: 120\nports:\n"
        "  st1.1: {demand_a: 32, since: 1}\n  st1.2: {since: 2}\n"
    )
    state = load_state(str(path), load_site(str(SITE_OK)))
    assert state.time == datetime(2026, 11, 23, 10, 0, 0)
    assert state.site_load_kw == 120
    assert state.ports["st1.1"].demand_a == 32 and state.ports["st1.1"].since == 1
    assert state.ports["st1.2"].demand_a is None and state.ports["st1.2"].since == 2


def test_state_json_loads(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(
        '{\n\t"time": "2026-11-23T10:00:00",\n\t"ports": {"st1.1": {"demand_a": 10.5}, '
        '"st1.2": null}\n}\n'
    )
    state = load_state(str(path), load_site(str(SITE_OK)))
    assert state.time == datetime(2026, 11, 23, 10)
    assert state.ports["st1.1"].demand_a == 10.5
    assert state.ports["st1.2"].since is None
    assert state.site_load_kw is None


def test_empty_state_means_all_idle(tmp_path: Path) -> None:
    path = tmp_path / "state.yaml"
    path.write_text("ports: {}\n")
    assert load_state(str(path), load_site(str(SITE_OK))).ports == {}


# ---- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("30s", 30.0),
        ("2h", 7200.0),
        ("1.5h", 5400.0),
        ("90m", 5400.0),
        ("50ms", 0.05),
        (" 12 ", 12.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 fortnights", "1h30", True, None, math.inf])
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_config_error_is_one_line() -> None:
    exc = ConfigError("a.yaml", 7, "ports[2].min_a", "5 is below the J1772 minimum of 6 A")
    assert str(exc) == "a.yaml:7: ports[2].min_a: 5 is below the J1772 minimum of 6 A"
    assert (exc.path, exc.line, exc.field) == ("a.yaml", 7, "ports[2].min_a")
    assert str(ConfigError("a.yaml", None, "", "cannot read")) == "a.yaml: cannot read"


def test_control_is_controlsettings_nested_as_it_is(tmp_path: Path) -> None:
    # A typo, a nested key at the top, or a value the settings refuse is a ConfigError with
    # a line, not a TypeError at start-up.
    with pytest.raises(ConfigError, match="unknown key") as caught:
        load_station(str(_station(tmp_path, "control: {no_such_setting: 1}\n")))
    assert "demand" in caught.value.message and "offer_window_s" in caught.value.message
    with pytest.raises(ConfigError, match="unknown key"):
        load_station(str(_station(tmp_path, "control: {low_window_s: 1}\n")))
    with pytest.raises(ConfigError, match="near_a") as refused:
        load_station(str(_station(tmp_path, "control:\n  demand: {near_a: 2, headroom_a: 1}\n")))
    assert refused.value.field == "control.demand"
    config = load_station(str(_station(tmp_path, "control: {rotation: {period_s: 5m}}\n")))
    assert config.control.rotation.period_s == 300.0
    assert config.control.demand == ControlSettings().demand


# ---- what the loader accepts, the limit tree accepts -------------------------------------------


@pytest.mark.parametrize(
    "path",
    [*SHIPPED, SITE_OK, *sorted((ROOT / "configs" / "sites").glob("*.yaml"))],
    ids=lambda p: p.name,
)
def test_accepted_configs_compile_into_a_limit_tree(path: Path) -> None:
    from controller.limits import LimitTree

    text = path.read_text()
    site = load_site(str(path)) if text.startswith("site:") or "\nsite:" in text else None
    spec = site if site is not None else load_station(str(path)).site
    tree = LimitTree.from_spec(spec)
    assert set(tree.ports) == {p.id for p in spec.ports}


# ---- ampshare config check -------------------------------------------------------------------


def test_config_check_station_summary(capsys: pytest.CaptureFixture[str]) -> None:
    from tools.config_cmd import config_check

    assert config_check(str(ROOT / "configs" / "ct4000-jumper.yaml")) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "jumper installed" in out
    assert "feed: breaker 40 A -> 80 % limit 32 A; ports 1, 2" in out
    assert "1: group feed, cap 30 A, min 8 A" in out


def test_config_check_site_summary(capsys: pytest.CaptureFixture[str]) -> None:
    from tools.config_cmd import config_check

    assert config_check(str(SITE_OK)) == 0
    out = capsys.readouterr().out
    assert out.startswith("site hq: 3 groups, 2 ports")
    assert "    panel1: breaker 400 A -> 80 % limit 320 A per phase" in out
    assert "st1.2: group c1, cap 32 A (Power Select 32 A)" in out


def test_config_check_refusal_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    from tools.config_cmd import config_check

    bad = FIXTURES / "station-min-below-6.yaml"
    assert config_check(str(bad)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"{bad}:5: min_a: 5 is below the J1772 minimum of 6 A (allowed: 6..port max)\n")
    assert config_check(str(FIXTURES / "site-orphan.yaml")) == 2
    assert capsys.readouterr().err.count("\n") == 1


# ---- never a traceback; accepted means safe --------------------------------------------------


_SCALARS = st.one_of(
    st.integers(-200, 200).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).replace("nan", ".nan")),
    st.sampled_from(["true", "null", "''", "[]", "{}", "x", "30s", "-1", "1e3", ".inf", '"1"']),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    breaker=st.integers(1, 60),
    select=st.one_of(st.none(), st.integers(0, 40)),
    fallback=st.one_of(st.none(), st.integers(0, 40)),
    jumper=st.booleans(),
    min_a=st.integers(0, 40),
)
def test_accepted_station_never_exceeds_its_breaker(
    tmp_path: Path, breaker: int, select: int | None, fallback: int | None, jumper: bool, min_a: int
) -> None:
    extra = ""
    if select is not None:
        extra += f", power_select_a: {select}"
    if fallback is not None:
        extra += f", fallback_a: {fallback}"
    groups = f"  - {{id: g1, breaker_a: {breaker}}}\n"
    if not jumper:
        groups += f"  - {{id: g2, breaker_a: {breaker}}}\n"
    text = (
        f"station: s\nmodel: ct4000\njumper: {str(jumper).lower()}\nmin_a: {min_a}\n"
        f"groups:\n{groups}ports:\n"
        f"  - {{id: '1', group: g1{extra}}}\n"
        f"  - {{id: '2', group: {'g1' if jumper else 'g2'}{extra}}}\n"
    )
    try:
        config = load_station(str(_station(tmp_path, base=text)))
    except ConfigError as exc:
        assert "\n" not in str(exc) and exc.line is not None
        return
    limits = {g.id: g.limit_a for g in config.site.groups if g.limit_a is not None}
    for port in config.site.ports:
        assert 6 <= port.min_a <= port.cap_a <= 30
        assert port.cap_a <= limits[port.group] + 1e-9
    for gid, limit in limits.items():
        fallbacks = sum(p.fallback_a or 0 for p in config.site.ports if p.group == gid)
        assert fallbacks <= limit + 1e-9


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_edited_value_is_accepted_or_refused_cleanly(
    tmp_path: Path, data: st.DataObject
) -> None:
    # Replace one value of the demo config with a random scalar: ConfigError or success only.
    lines = (ROOT / "configs" / "demo-jumper.yaml").read_text().splitlines()
    candidates = [i for i, ln in enumerate(lines) if ": " in ln and not ln.lstrip().startswith("#")]
    index = data.draw(st.sampled_from(candidates))
    scalar = data.draw(_SCALARS)
    line = lines[index]
    key_end = line.index(": ") + 2
    rest = line[key_end:]
    cut = min((rest.index(c) for c in ",}" if c in rest), default=len(rest))
    lines[index] = line[:key_end] + scalar + rest[cut:]
    path = _station(tmp_path, base="\n".join(lines) + "\n")
    try:
        load_station(str(path))
    except ConfigError as exc:
        assert "\n" not in str(exc)
