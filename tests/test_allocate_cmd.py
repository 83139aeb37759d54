"""`ampshare allocate SITE STATE`: the guide's worked numbers, the JSON shape, the refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.allocate_cmd import allocate_command

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "config"
SITES = sorted((ROOT / "configs" / "sites").glob("*.yaml"))

JUMPER_SITE = """\
site: ct4000-jumper
groups:
  - {id: feed, breaker_a: 40}
ports:
  - {id: "1", group: feed, max_a: 30}
  - {id: "2", group: feed, max_a: 30}
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _run(capsys: pytest.CaptureFixture[str], site: str, state: str) -> dict[str, object]:
    assert allocate_command(site, state) == 0
    out, err = capsys.readouterr()
    assert err == ""
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


def _amps(result: dict[str, object]) -> dict[str, float]:
    ports = result["ports"]
    assert isinstance(ports, dict)
    return {k: float(v) for k, v in ports.items()}


def test_jumper_one_vehicle_takes_its_port_max(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The guide, "Power Sharing Jumper": one vehicle takes up to 80 % of the breaker (32 A),
    # here limited by the CT4000's 30 A port rating.
    site = _write(tmp_path, "site.yaml", JUMPER_SITE)
    result = _run(capsys, site, _write(tmp_path, "state.yaml", "ports: {'1': {since: 1}}\n"))
    assert _amps(result) == {"1": 30.0, "2": 0.0}
    assert result["binding"] == {"1": "port"}
    assert result["groups"] == {"feed": {"limit": 32, "load": 30}}


def test_jumper_two_vehicles_share_50_50(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _write(tmp_path, "site.yaml", JUMPER_SITE)
    state = _write(tmp_path, "state.yaml", "ports:\n  '1': {since: 1}\n  '2': {since: 2}\n")
    result = _run(capsys, site, state)
    assert _amps(result) == {"1": 16.0, "2": 16.0}
    assert result["binding"] == {"1": "feed", "2": "feed"}
    assert result["paused"] == []


def test_jumper_what_one_does_not_take_goes_to_the_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The guide: "If one vehicle cannot take as much power as 50% ... the second vehicle may
    # receive a higher charge".
    site = _write(tmp_path, "site.yaml", JUMPER_SITE)
    state = _write(tmp_path, "state.json", '{"ports": {"1": {"demand_a": 10}, "2": {}}}')
    result = _run(capsys, site, state)
    assert _amps(result) == {"1": 10.0, "2": 22.0}
    assert result["binding"] == {"1": "demand", "2": "feed"}


def _panel(tmp_path: Path) -> str:
    # The guide's 400 A / 208 V 3-phase panel, "Power Sharing Through the Panel": 20 CP6000
    # ports, each on its own 100 A 2-pole breaker ("two home runs from each dual-port
    # breaker, indicating a dedicated feed per port"), spread evenly over the line pairs.
    pairs = ["L1-L2", "L2-L3", "L3-L1"]
    lines = ["site: panel-400a", "groups:", "  - {id: panel, breaker_a: 400, phases: 3}"]
    lines += [f"  - {{id: c{n}, parent: panel, breaker_a: 100}}" for n in range(20)]
    lines.append("ports:")
    lines += [
        f"  - {{id: p{n:02}, group: c{n}, max_a: 80, phases: {pairs[n % 3]}}}" for n in range(20)
    ]
    return _write(tmp_path, "panel.yaml", "\n".join(lines) + "\n")


def _first_ports(tmp_path: Path, site: str, count: int) -> str:
    from firmware.config import load_site

    ports = load_site(site).ports[:count]
    text = "ports:\n" + "".join(f"  {p.id}: {{since: {i}}}\n" for i, p in enumerate(ports, 1))
    return _write(tmp_path, f"state{count}.yaml", text)


def test_guide_400a_panel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The guide: "any six vehicles can plug into any port on the panel and receive the full
    # 80 A"; a seventh makes them throttle; twenty get "27 A in this example".
    site = _panel(tmp_path)
    six = _amps(_run(capsys, site, _first_ports(tmp_path, site, 6)))
    assert sorted(a for a in six.values() if a > 0) == [80.0] * 6
    seven = _amps(_run(capsys, site, _first_ports(tmp_path, site, 7)))
    charging = [a for a in seven.values() if a > 0]
    assert len(charging) == 7 and min(charging) < 80.0
    twenty = list(_amps(_run(capsys, site, _first_ports(tmp_path, site, 20))).values())
    # Max-min fairness: ports on the two busiest lines get 26.4 A, the others rise to 30.8 A.
    assert all(25.0 <= a <= 32.0 for a in twenty), twenty
    assert sum(twenty) / 20 == pytest.approx(27, abs=1.0)


def test_design_example_site_and_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = _write(
        tmp_path,
        "state.yaml",
        "time: 2026-11-23T10:00:00\nsite_load_kw: 120\nports:\n"
        "  st1.1: {demand_a: 32, since: 1}\n  st1.2: {since: 2}\n",
    )
    result = _run(capsys, str(FIXTURES / "site-ok.yaml"), state)
    assert _amps(result) == {"st1.1": 32.0, "st1.2": 32.0}
    assert result["binding"] == {"st1.1": "demand", "st1.2": "port"}
    groups = result["groups"]
    assert isinstance(groups, dict)
    assert groups["c1"] == {"limit": 80, "load": 64}
    # DLM: the 500 kW site maximum less 120 kW of unmanaged load.
    assert groups["site:kW"]["limit"] == 380


def test_site_load_throttles_below_the_site_maximum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _write(
        tmp_path,
        "site.yaml",
        "site: s\ngroups:\n  - {id: site, limit_kw: 20}\n"
        "  - {id: c1, parent: site, breaker_a: 100}\n"
        "ports:\n  - {id: a, group: c1, max_a: 80}\n  - {id: b, group: c1, max_a: 80}\n",
    )
    state = _write(tmp_path, "state.yaml", "site_load_kw: 11.68\nports: {a: {}, b: {}}\n")
    amps = _amps(_run(capsys, site, state))
    # 20 - 11.68 = 8.32 kW left at 208 V: 40 A, 20 A each.
    assert amps == pytest.approx({"a": 20.0, "b": 20.0}, abs=0.11)


def test_fcfs_follows_since(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Port 2 came first and takes its 30 A; the 2 A left are under port 1's 8 A floor: paused.
    text = JUMPER_SITE.replace("site: ct4000-jumper", "site: s\npolicy: fcfs")
    site = _write(tmp_path, "site.yaml", text)
    state = _write(tmp_path, "state.yaml", "ports:\n  '1': {since: 5}\n  '2': {since: 2}\n")
    result = _run(capsys, site, state)
    assert _amps(result) == {"1": 0.0, "2": 30.0}
    assert result["paused"] == ["1"]


def test_bad_state_is_one_line_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = str(FIXTURES / "site-ok.yaml")
    state = str(FIXTURES / "state-unknown-port.yaml")
    assert allocate_command(site, state) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert (
        err == f"{state}:5: ports.st9.9: unknown port 'st9.9' (ports of site 'hq': st1.1, st1.2)\n"
    )


def test_bad_site_is_one_line_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = str(FIXTURES / "site-cycle.yaml")
    assert allocate_command(site, str(tmp_path / "missing.yaml")) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"{site}:6: groups[a].parent: the groups form a cycle")


def test_missing_state_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "missing.yaml")
    assert allocate_command(str(FIXTURES / "site-ok.yaml"), missing) == 2
    assert capsys.readouterr().err.startswith(f"{missing}: cannot read the file")


@pytest.mark.parametrize("site", SITES, ids=lambda p: p.name)
def test_shipped_sites_allocate_with_all_ports_charging(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from firmware.config import load_site

    spec = load_site(str(site))
    state = _write(
        tmp_path, "state.yaml", "ports:\n" + "".join(f"  '{p.id}': {{}}\n" for p in spec.ports)
    )
    result = _run(capsys, str(site), state)
    groups = result["groups"]
    assert isinstance(groups, dict)
    for entry in groups.values():
        assert entry["load"] <= entry["limit"] + 1e-6


def test_end_to_end_subprocess(tmp_path: Path) -> None:
    site = _write(tmp_path, "site.yaml", JUMPER_SITE)
    state = _write(tmp_path, "state.yaml", "ports: {'1': {}, '2': {demand_a: 10}}\n")
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "allocate", site, state],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ports"] == {"1": 22, "2": 10}
    assert set(result) >= {"ports", "groups", "binding"}

    bad = subprocess.run(
        [sys.executable, "-m", "tools.cli", "allocate", site, str(FIXTURES / "state-nan.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
