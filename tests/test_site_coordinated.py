"""Sites of stations under a coordinator in virtual time (`ampshare sim` with coordinator:):
every station its own loop and link, the in-process transport, the independent checker over
the whole site tree. Link loss and return, one station cut off, a coordinator restart, time of
use and a site meter; random arrivals and link drops never breach."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.config import ConfigError
from firmware.link.station_link import DEFAULT_RISE_DELAY_S
from tools.scenario import load_scenario
from tools.simulate import SimResult, simulate

ROOT = Path(__file__).resolve().parent.parent
SITES = ROOT / "configs" / "sites"
SCENARIOS = ROOT / "configs" / "scenarios"
CIRCUIT = SITES / "ten-ports-100a.yaml"  # five stations, one 100 A circuit (80 A)


def run(tmp_path: Path, text: str, name: str = "s.yaml", **kwargs: Any) -> SimResult:
    path = tmp_path / name
    path.write_text(text)
    return simulate(load_scenario(path), **kwargs)


def fallback_times(summary: dict[str, Any]) -> dict[str, list[tuple[float, str]]]:
    out: dict[str, list[tuple[float, str]]] = {}
    for t in summary["link"]["transitions"]:
        out.setdefault(t["station"], []).append((t["t_s"], t["status"]))
    return out


def no_breach(summary: dict[str, Any]) -> None:
    assert summary["breaches"] == 0, summary["first_breach"]
    assert summary["overshoot_as"] == 0.0
    assert summary["faults"] == []
    for lid, peak in summary["peak_a"].items():
        assert peak <= summary["limit_a"][lid] + 1e-6


OUTAGE = f"""\
site: {CIRCUIT}
coordinator: {{valid_s: 30, period_s: 5, latency: 200ms}}
duration: 6m
evs:
  - {{port: st1.1, arrive: 0s, max_a: 32}}
  - {{port: st1.2, arrive: 10s, max_a: 48}}
  - {{port: st2.1, arrive: 20s, max_a: 32}}
  - {{port: st3.1, arrive: 30s, max_a: 40}}
  - {{port: st5.2, arrive: 40s, max_a: 48}}
  - {{port: st4.1, arrive: 150s, max_a: 32}}
events:
  - {{at: 2m, link: down}}
  - {{at: 4m, link: up}}
"""


def test_link_down_every_station_falls_back_within_valid_s_and_resumes(tmp_path: Path) -> None:
    result = run(tmp_path, OUTAGE, keep_series=True)
    s = result.summary
    no_breach(s)
    assert s["peak_a"]["c1"] == pytest.approx(80.0, abs=0.2)  # shared the whole circuit
    times = fallback_times(s)
    assert set(times) == {"st1", "st2", "st3", "st4", "st5"}
    for station, changes in times.items():
        down = [t for t, status in changes if status == "fallback" and t > 1.0]
        up = [t for t, status in changes if status == "sharing" and t > 1.0]
        assert down and 120.0 < down[0] <= 120.0 + 30.0, (station, changes)
        assert up and 240.0 <= up[0] <= 241.0, (station, changes)  # the next message
    series = result.series
    assert series is not None
    # In fallback every charging port offers 8 A, the fallback level (5 cars: 40 A).
    k = next(i for i, t in enumerate(series.t) if t >= 200.0)
    offers = {p: o[k] for p, o in series.offer.items()}
    assert {p: a for p, a in offers.items() if a > 0} == {
        "st1.1": 8.0,
        "st1.2": 8.0,
        "st2.1": 8.0,
        "st3.1": 8.0,
        "st4.1": 8.0,
        "st5.2": 8.0,
    }
    # Sharing again: the circuit is used, not just 8 A each.
    k = next(i for i, t in enumerate(series.t) if t >= 300.0)
    assert sum(o[k] for o in series.offer.values()) > 60.0


def test_a_port_below_fallback_rises_only_after_the_rise_delay(tmp_path: Path) -> None:
    # Five cars share 80 A (16 A each) when the link goes at 100 s; st4.2 is idle (limit 0).
    # At expiry the running ports come down to their 8 A fallback at once; a car plugging
    # into st4.2 during the transition gets nothing until rise_delay_s after expiry.
    evs = "".join(f"  - {{port: {p}, arrive: 0s, max_a: 32}}\n" for p in CARS)
    text = (
        f"site: {CIRCUIT}\n"
        "coordinator: {valid_s: 30, period_s: 5, latency: 200ms}\n"
        f"duration: 180s\nevs:\n{evs}  - {{port: st4.2, arrive: 128s, max_a: 32}}\n"
        "events:\n  - {at: 100s, link: down}\n"
    )
    result = run(tmp_path, text, keep_series=True)
    no_breach(result.summary)
    series = result.series
    assert series is not None
    before = next(i for i, t in enumerate(series.t) if t >= 99.0)
    assert all(series.offer[p][before] == 16.0 for p in CARS)
    expiry = min(t["t_s"] for t in result.summary["link"]["transitions"] if t["t_s"] > 90.0)
    assert 100.0 < expiry <= 130.0
    for i, t in enumerate(series.t):
        if expiry <= t < expiry + DEFAULT_RISE_DELAY_S - 0.01:
            assert series.offer["st4.2"][i] == 0.0, t
            assert all(series.offer[p][i] == 8.0 for p in CARS), t
    last = len(series.t) - 1
    assert series.offer["st4.2"][last] == 8.0
    assert all(series.offer[p][last] == 8.0 for p in CARS)


CARS = ("st1.1", "st2.1", "st3.1", "st4.1", "st5.1")


def test_one_station_cut_off_is_reserved_before_it_can_rise(tmp_path: Path) -> None:
    # st3 has an idle port (limit 0) when its link goes: it will rise to 8 A by itself, so
    # the coordinator must have made room on the circuit before that.
    text = OUTAGE.replace(
        "  - {at: 2m, link: down}\n  - {at: 4m, link: up}\n",
        "  - {at: 2m, link: down, station: st3}\n  - {at: 4m, link: up, station: st3}\n",
    ).replace("  - {port: st4.1, arrive: 150s, max_a: 32}\n", "")
    text = text.replace(
        "  - {port: st3.1", "  - {port: st4.2, arrive: 45s, max_a: 32}\n  - {port: st3.1"
    )
    s = run(tmp_path, text).summary
    no_breach(s)
    times = fallback_times(s)
    assert [status for t, status in times["st3"] if t > 1.0] == ["fallback", "sharing"]
    for other in ("st1", "st2", "st4", "st5"):
        assert [status for t, status in times[other] if t > 1.0] == []
    assert s["link"]["fallback_s"]["st3"] == pytest.approx(120.0 - 25.2, abs=1.0)


def test_a_restarted_coordinator_takes_over_without_a_breach(tmp_path: Path) -> None:
    text = OUTAGE.replace(
        "  - {at: 2m, link: down}\n  - {at: 4m, link: up}\n",
        "  - {at: 2m, coordinator: restart}\n  - {at: 4m, coordinator: restart}\n",
    )
    s = run(tmp_path, text).summary
    no_breach(s)
    assert s["link"]["coordinator_restarts"] == 2
    assert all(v < 1.0 for v in s["link"]["fallback_s"].values())  # nobody fell back
    assert s["utilization"] > 0.9


def test_time_of_use_boundaries_move_the_site_limit(tmp_path: Path) -> None:
    evs = "\n".join(
        f"  - {{port: st{k}.{j}, arrive: 0s, max_a: 32}}" for k in (1, 2, 3) for j in (1, 2)
    )
    text = (
        f"site: {SITES / 'office-tou.yaml'}\n"
        "coordinator: {valid_s: 30, period_s: 5, latency: 200ms}\n"
        "start: 2026-11-23T05:58:00\n"
        f"duration: 4m\nevs:\n{evs}\n"
    )
    result = run(tmp_path, text, keep_series=True)
    no_breach(result.summary)
    series = result.series
    assert series is not None
    kw = series.load["site:kW"]
    limit = series.limit["site:kW"]
    at_boundary = 120.0  # 06:00
    before = [x for t, x in zip(series.t, kw, strict=True) if 60.0 < t < at_boundary]
    after = [x for t, x in zip(series.t, kw, strict=True) if t > at_boundary + 10.0]
    assert max(before) > 29.0  # three stations' 48 A feeds: 30 kW of the night's 40 kW
    assert max(after) <= 20.0 + 1e-6
    assert limit[0] == 40.0 and limit[-1] == 20.0


def test_time_of_use_at_noon_stops_charging_and_resumes_at_six(tmp_path: Path) -> None:
    text = (
        f"site: {SITES / 'office-tou.yaml'}\n"
        "coordinator: {valid_s: 30, period_s: 5, latency: 200ms}\n"
        "start: 2026-11-23T11:59:00\n"
        "duration: 3m\n"
        "evs:\n  - {port: st1.1, arrive: 0s, max_a: 32}\n  - {port: st2.1, arrive: 0s}\n"
    )
    result = run(tmp_path, text, keep_series=True)
    no_breach(result.summary)
    series = result.series
    assert series is not None
    last = len(series.t) - 1
    assert series.load["site:kW"][last] == 0.0
    assert all(o[last] == 0.0 for o in series.offer.values())


METER_SITE = """\
site: metered
groups:
  - id: site
    limit_kw: 30
    meter: {topic: true, conservative_kw: 5, stale_s: 30}
  - {id: c1, parent: site, breaker_a: 200}
ports:
  - {id: st1.1, group: c1, max_a: 48, fallback_a: 8}
  - {id: st1.2, group: c1, max_a: 48, fallback_a: 8}
  - {id: st2.1, group: c1, max_a: 48, fallback_a: 8}
"""


def test_site_meter_readings_move_the_limit(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(METER_SITE)
    text = (
        "site: site.yaml\n"
        "coordinator: {valid_s: 30, period_s: 5, latency: 200ms}\n"
        "duration: 5m\n"
        "evs:\n"
        + "".join(
            f"  - {{port: {p}, arrive: 0s, max_a: 48}}\n" for p in ("st1.1", "st1.2", "st2.1")
        )
        + "events:\n  - {at: 1m, site_load_kw: 10}\n  - {at: 3m, site_load_kw: 22}\n"
    )
    result = run(tmp_path, text, keep_series=True)
    no_breach(result.summary)
    series = result.series
    assert series is not None

    def limit_at(t: float) -> float:
        return series.limit["site:kW"][next(i for i, x in enumerate(series.t) if x >= t)]

    def load_at(t: float) -> float:
        return series.load["site:kW"][next(i for i, x in enumerate(series.t) if x >= t)]

    assert limit_at(30.0) == 5.0  # no reading yet: conservative
    assert limit_at(150.0) == 20.0  # 30 kW maximum - 10 kW unmanaged
    assert load_at(150.0) == pytest.approx(20.0, abs=0.5)
    assert limit_at(290.0) == 8.0
    assert load_at(290.0) <= 8.0 + 1e-6


_ports = [f"st{k}.{j}" for k in range(1, 6) for j in (1, 2)]


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    arrivals=st.lists(
        st.tuples(st.sampled_from(_ports), st.integers(0, 300), st.sampled_from([16, 32, 48, 80])),
        min_size=1,
        max_size=10,
        unique_by=lambda a: a[0],
    ),
    drops=st.lists(
        st.tuples(
            st.integers(0, 300),
            st.integers(5, 60),
            st.one_of(st.none(), st.sampled_from(["st1", "st2", "st3", "st4", "st5"])),
        ),
        max_size=3,
    ),
    jitter=st.sampled_from(["0ms", "150ms"]),
)
def test_random_arrivals_and_link_drops_never_breach(
    tmp_path: Path,
    arrivals: list[tuple[str, int, int]],
    drops: list[tuple[int, int, str | None]],
    jitter: str,
) -> None:
    # Default EV response (2 s). hal.sim.ev restarts a vehicle's lag on every offer change, so
    # a vehicle that takes 4.5 s may never settle under decreases 4 s apart (with one
    # controller as well as with a coordinator); that is the EV model, not the link.
    evs = "".join(f"  - {{port: {p}, arrive: {t}s, max_a: {a}}}\n" for p, t, a in arrivals)
    events = "".join(
        f"  - {{at: {t}s, link: down{'' if s is None else f', station: {s}'}}}\n"
        f"  - {{at: {t + d}s, link: up{'' if s is None else f', station: {s}'}}}\n"
        for t, d, s in drops
    )
    text = (
        f"site: {CIRCUIT}\n"
        f"coordinator: {{valid_s: 30, period_s: 5, latency: 300ms, jitter: {jitter}}}\n"
        f"duration: 6m\nevs:\n{evs}" + (f"events:\n{events}" if events else "")
    )
    s = run(tmp_path, text).summary
    no_breach(s)


def test_shipped_coordinated_scenario(tmp_path: Path) -> None:
    # Through st3's outage (the restart at 80 min is test_a_restarted_coordinator_...'s).
    s = simulate(load_scenario(SCENARIOS / "site-coordinated.yaml"), duration_s=75 * 60).summary
    no_breach(s)
    assert s["min_charging_a"] >= 8.0
    assert s["utilization"] >= 0.93  # 8 A per port through 40 min of outages
    link = s["link"]
    assert link["rejected_by_stations"] == {} and link["rejected_by_coordinator"] == {}
    times = fallback_times(s)
    for station, changes in times.items():
        down = [t for t, status in changes if status == "fallback" and t > 1.0]
        assert 1800.0 < down[0] <= 1830.0, station  # within valid_s of the link going down
    assert [t for t, status in times["st3"] if t > 3000.0 and status == "fallback"]


def test_shipped_office_scenario_loads_and_its_first_boundary_holds(tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "office-tou.yaml")
    assert scenario.coordinator is not None and scenario.start.hour == 0
    s = simulate(scenario, duration_s=20 * 60).summary
    no_breach(s)


def test_site_scenario_without_coordinator_applies_time_of_use_in_one_controller(
    tmp_path: Path,
) -> None:
    evs = "\n".join(f"  - {{port: st{k}.1, arrive: 0s, max_a: 32}}" for k in (1, 2, 3, 4))
    text = (
        f"site: {SITES / 'office-tou.yaml'}\nstart: 2026-11-23T11:58:00\n"
        f"duration: 4m\nevs:\n{evs}\n"
    )
    result = run(tmp_path, text, keep_series=True)
    no_breach(result.summary)
    assert "link" not in result.summary
    series = result.series
    assert series is not None
    assert series.limit["site:kW"][-1] == 0.0
    assert series.load["site:kW"][-1] == 0.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("station: ../ct4000-jumper.yaml\ncoordinator: {}\nduration: 1m\n", "shares a site"),
        (
            f"site: {CIRCUIT}\ncoordinator: {{latency: 2s, latency_margin: 1s}}\nduration: 1m\n",
            "exceeds the coordinator's latency margin",
        ),
        (
            f"site: {CIRCUIT}\ncoordinator: {{valid_s: 6}}\nduration: 1m\n",
            "valid_s must cover",
        ),
        (
            f"site: {CIRCUIT}\ncoordinator: {{}}\nduration: 1m\n"
            "events:\n  - {at: 1s, link: down, station: st9}\n",
            "no station 'st9'",
        ),
        (
            f"site: {CIRCUIT}\nduration: 1m\nevents:\n  - {{at: 1s, coordinator: restart}}\n",
            "need a coordinated site",
        ),
        (
            f"site: {CIRCUIT}\ncoordinator: {{}}\nduration: 1m\n"
            "events:\n  - {at: 1s, site_load_kw: 5}\n",
            "site_load_kw needs a group with meter",
        ),
        (
            f"site: {CIRCUIT}\ncoordinator: {{}}\nduration: 1m\n"
            "events:\n  - {at: 1s, fault: {port: st1.1, kind: weld}, station: st1}\n",
            "only a link: event names a station",
        ),
    ],
)
def test_bad_coordinated_scenarios_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = SCENARIOS / "_tmp_never_written.yaml"  # relative station: path resolves from here
    del path
    target = tmp_path / "s.yaml"
    target.write_text(
        text.replace("../ct4000-jumper.yaml", str(ROOT / "configs" / "ct4000-jumper.yaml"))
    )
    with pytest.raises(ConfigError, match=message):
        load_scenario(target)


def test_sim_command_prints_the_link_summary(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(OUTAGE.replace("duration: 6m", "duration: 3m"))
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "sim", str(path), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["breaches"] == 0
    assert summary["link"]["stations"] == 5
    assert summary["link"]["dropped"] > 0


def test_a_coordinated_run_lists_every_stations_sessions() -> None:
    """``ampshare sim`` of a site of stations: each station's tracker records its own ports'
    sessions, as each station would."""
    from tools.scenario import load_scenario
    from tools.simulate import simulate

    root = Path(__file__).resolve().parent.parent
    scenario = load_scenario(root / "configs" / "scenarios" / "site-coordinated.yaml")
    summary = simulate(scenario).summary
    sessions = summary["sessions"]
    plugged = {ev.port for ev in scenario.evs}
    assert {x["port"] for x in sessions} == plugged
    for x in sessions:
        # An open one is at most a checkpoint (60 s at 30 A) behind the simulated meter.
        assert 0.0 <= summary["energy_kwh"][x["port"]] - x["energy_kwh"] <= 0.12 or (
            x["stop_s"] is not None
        )
