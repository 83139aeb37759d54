"""`ampshare config check` on every kind of file, typo suggestions, and scenario refusals.

Issue 12 ("Ready for installers"): every file the project ships is checked by the loader the
program uses for its kind (station, site, state, scenario, meter map); a typo in a key names
the key it probably meant; a scenario that would silently do nothing (an EV arriving after
the end, a link cut on a station with no link) is refused at its line; the shipped state file
gives the allocation its comments describe.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.config import ConfigError
from hal.modbus.maps import MAPS_DIR
from hal.yamlnodes import load_document
from tools.config_cmd import check_config, config_check, file_kind
from tools.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
STATION = CONFIGS / "ct4000-jumper.yaml"
LINKED_STATION = CONFIGS / "site-demo" / "st1.yaml"
SITE = CONFIGS / "sites" / "ten-ports-100a.yaml"
MAPS = sorted(Path(str(MAPS_DIR)).glob("*.yaml"))


def _expected_kind(path: Path) -> str:
    """The kind a shipped file is, by where it lives."""
    if path.parent == Path(str(MAPS_DIR)):
        return "meter map"
    folder = path.relative_to(CONFIGS).parts[0] if path.is_relative_to(CONFIGS) else ""
    return {"sites": "site", "states": "state", "scenarios": "scenario"}.get(folder, "station")


SHIPPED = sorted(CONFIGS.rglob("*.yaml")) + MAPS


def test_the_shipped_files_have_every_kind() -> None:
    kinds = {_expected_kind(p) for p in SHIPPED}
    assert kinds == {"station", "site", "state", "scenario", "meter map"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_check_accepts_every_shipped_file_as_its_kind(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kind = _expected_kind(path)
    assert file_kind(load_document(path)) == kind
    code = config_check(str(path))
    out, err = capsys.readouterr()
    assert code == 0, err
    first = out.splitlines()[0]
    # The first line says what was checked: the kind, then what the program understood.
    assert first.startswith((f"{kind} ", f"{kind}:")), first


@pytest.mark.parametrize(
    "path",
    [
        STATION,
        SITE,
        CONFIGS / "states" / "office-evening.yaml",
        CONFIGS / "scenarios" / "weld-fault.yaml",
        *MAPS[:1],
    ],
    ids=_expected_kind,
)
def test_the_command_exits_0_and_names_the_kind(path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "config", "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    kind = _expected_kind(path)
    assert proc.stdout.startswith((f"{kind} ", f"{kind}:")), proc.stdout


# ---- a bad file of each kind: file:line: field: message, exit 2 -----------------------------

_MAP = (MAPS_DIR / "sdm120.yaml").read_text(encoding="utf-8")
_SITE_OK = (ROOT / "tests" / "fixtures" / "config" / "site-ok.yaml").read_text(encoding="utf-8")
_STATION_TEXT = STATION.read_text(encoding="utf-8")


def _edit(text: str, old: str, new: str) -> str:
    """``text`` with its last ``old`` replaced: the first may be in the file's comments."""
    before, found, after = text.rpartition(old)
    assert found, old
    return before + new + after


def _line_of(text: str, needle: str) -> int:
    return text[: text.rindex(needle)].count("\n") + 1


BAD = {
    # kind: (text, the text on the refused line, field, message)
    "station": (
        _edit(_STATION_TEXT, "{id: feed, breaker_a: 40}", "{id: feed, breakr_a: 40}"),
        "breakr_a: 40",
        "groups[feed].breakr_a",
        "unknown key (allowed: id, breaker_a, phases, limit_kw); did you mean 'breaker_a'?",
    ),
    "site": (
        _edit(_SITE_OK, "policy: equal ", "policy: equl  "),
        "policy: equl",
        "policy",
        "unknown policy 'equl' (allowed: equal, fcfs, proportional)",
    ),
    "state": (
        "time: 2026-11-23T19:00:00\nports:\n  st1.1: {demnd_a: 32}\n",
        "demnd_a",
        "ports.st1.1.demnd_a",
        "unknown key (allowed: demand_a, since); did you mean 'demand_a'?",
    ),
    "scenario": (
        f"station: {STATION}\nduraton: 1h\nevs:\n  - {{port: 1, arrive: 0s}}\n",
        "duraton",
        "duraton",
        "unknown key (allowed: name, description, station, site, duration, evs, events, seed, "
        "control, coordinator, start); did you mean 'duration'?",
    ),
    "meter map": (
        _edit(_MAP, "  amps_l1: 0x0006", "  amp_l1: 0x0006"),
        "amp_l1",
        "quantities.amp_l1",
        "unknown quantity (known: volts_l1, ",
    ),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_file_of_each_kind_is_refused_with_file_line_field(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, on_line, field, message = BAD[kind]
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    assert file_kind(load_document(path)) == kind
    assert config_check(str(path)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{path}:{_line_of(text, on_line)}: {field}: {message}"), err
    assert err.count("\n") == 1


def test_a_map_typo_names_the_quantity_it_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(BAD["meter map"][0], encoding="utf-8")
    assert config_check(str(path)) == 2
    assert capsys.readouterr().err.rstrip().endswith("; did you mean 'amps_l1'?")


def test_a_scenario_is_refused_for_the_station_file_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    station = tmp_path / "station.yaml"
    station.write_text(_edit(_STATION_TEXT, "model: ct4000", "model: ct400"), encoding="utf-8")
    scenario = tmp_path / "s.yaml"
    scenario.write_text("station: station.yaml\nduration: 1h\nevs: []\n", encoding="utf-8")
    assert config_check(str(scenario)) == 2
    err = capsys.readouterr().err
    # The scenario's line that led there, then the station file's own file:line.
    assert err.startswith(f"{scenario}:1: station: cannot use the station file: {station}:"), err


def test_no_suggestion_for_a_key_like_none_allowed(tmp_path: Path) -> None:
    path = tmp_path / "station.yaml"
    path.write_text(_STATION_TEXT + "colour: red\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        check_config(str(path))
    assert caught.value.field == "colour"
    assert caught.value.message.startswith("unknown key (allowed: station, model,")
    assert "did you mean" not in caught.value.message


# ---- scenarios that would silently do nothing ----------------------------------------------


def _scenario(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def _refused(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    error = caught.value
    assert str(error).startswith(f"{path}:{error.line}: "), str(error)
    return error


@pytest.mark.parametrize("arrive", ["2h", "3h"])
def test_an_ev_arriving_at_or_after_the_end_is_refused(tmp_path: Path, arrive: str) -> None:
    body = (
        f"station: {STATION}\nduration: 2h\nevs:\n"
        "  - {port: 1, arrive: 0s}\n"
        f"  - {{port: 2, arrive: {arrive}, max_a: 32}}\n"
    )
    error = _refused(_scenario(tmp_path, body))
    assert (error.line, error.field) == (5, "evs[1].arrive")
    assert error.message.startswith(f"arrives at {arrive}, not before the scenario ends at 2h")


def test_an_ev_arriving_just_before_the_end_is_accepted(tmp_path: Path) -> None:
    body = f"station: {STATION}\nduration: 2h\nevs:\n  - {{port: 1, arrive: 1h59m}}\n"
    assert load_scenario(_scenario(tmp_path, body)).evs[0].arrive_s == 7140.0


def test_an_ev_leaving_before_it_arrives_is_refused(tmp_path: Path) -> None:
    body = f"station: {STATION}\nduration: 2h\nevs:\n  - {{port: 1, arrive: 1h, leave: 30m}}\n"
    error = _refused(_scenario(tmp_path, body))
    assert (error.line, error.field) == (4, "evs[0].leave")


def test_a_link_cut_on_a_station_without_a_link_is_refused(tmp_path: Path) -> None:
    body = (
        f"station: {STATION}\nduration: 1h\nevs:\n  - {{port: 1, arrive: 0s}}\n"
        "events:\n  - {at: 10m, fault: {port: 2, kind: gfci}}\n  - {at: 20m, link: down}\n"
    )
    error = _refused(_scenario(tmp_path, body))
    assert (error.line, error.field) == (7, "events[1].link")
    assert "no link: block" in error.message


@pytest.mark.parametrize(
    "target",
    [
        f"station: {LINKED_STATION}",  # a station with a coordinator to lose
        f"site: {SITE}\ncoordinator: {{valid_s: 30, period_s: 5}}",  # the stations' own links
        f"site: {SITE}",  # the whole site as one controller: its stations fall back together
    ],
    ids=["station-with-link", "coordinated-site", "site"],
)
def test_a_link_cut_where_there_is_a_link_is_accepted(tmp_path: Path, target: str) -> None:
    body = (
        f"{target}\nduration: 1h\nevents:\n  - {{at: 20m, link: down}}\n  - {{at: 30m, link: up}}\n"
    )
    scenario = load_scenario(_scenario(tmp_path, body))
    assert [e.link_up for e in scenario.events] == [False, True]


# ---- the shipped state file ----------------------------------------------------------------


def test_the_shipped_state_file_allocates_as_its_comments_say() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "allocate",
            str(CONFIGS / "sites" / "office-tou.yaml"),
            str(CONFIGS / "states" / "office-evening.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # Monday 19:00: the schedule's 20 kW binds the four full cars; the 12 A car takes its 12 A.
    assert result["groups"]["site:kW"]["limit"] == 20
    assert result["binding"] == {
        "st1.1": "site:kW",
        "st1.2": "site:kW",
        "st2.1": "demand",
        "st3.1": "site:kW",
        "st4.1": "site:kW",
    }
    amps = result["ports"]
    assert amps["st2.1"] == 12
    assert all(20.5 <= amps[p] <= 21.5 for p in ("st1.1", "st1.2", "st3.1", "st4.1")), amps
    assert result["paused"] == []
