"""Config files that are damaged or hostile get a one-line ``FILE:LINE: FIELD: message``.

A fixed-seed mutation fuzz of every shipped station, site and scenario file (tests/configfuzz.py;
thousands more cases: scripts/fuzz-config) must end in 0 crashes and 0 hangs, and each crash
the fuzzer once found has its own regression test below, on the smallest file that showed it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from configfuzz import CONFIGS, Fuzzer, Outcome, Tally, fuzz, shipped_sources

from firmware.config import ConfigError, load_site, load_station
from tools.config_cmd import check_config
from tools.scenario import load_scenario

# CI's share of the fuzz: a few hundred cases (seconds); the same seed always makes the same
# cases, so a failure here is reproduced by `scripts/fuzz-config --seed 2024 --case N`.
CI_SEED = 2024
CI_CASES = 500


def test_fixed_seed_fuzz_has_no_crash_and_no_hang() -> None:
    tally = Tally()
    for result in fuzz(CI_CASES, CI_SEED):
        tally.add(result)
    reports = "\n".join(r.report() for r in tally.failures[:5])
    assert not tally.failures, f"{tally.summary()}\n{reports}"
    # The fuzz is only worth something if its cases reach both answers.
    assert tally.counts[Outcome.REFUSED] > CI_CASES // 2, tally.summary()
    assert tally.counts[Outcome.OK] > 0, tally.summary()


def test_the_fuzzer_starts_from_every_kind_of_shipped_file_and_is_reproducible() -> None:
    kinds = {s.kind for s in shipped_sources()}
    assert kinds == {"station", "site", "scenario"}
    assert not any(s.rel.startswith("meters/") for s in shipped_sources())
    first, again, other = Fuzzer(7), Fuzzer(7), Fuzzer(8)
    cases = [first.mutant(case) for case in range(20)]
    assert cases == [again.mutant(case) for case in range(20)]
    assert [m.data for m in cases] != [other.mutant(case).data for case in range(20)]


# ---- regressions: each crash the fuzzer found, as the smallest file that shows it ---------


def _write(tmp_path: Path, text: str | bytes, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _refusal(path: Path, load: str = "check") -> ConfigError:
    """The ConfigError of loading ``path`` the way `config check` (or `ampshare sim`) does."""
    with pytest.raises(ConfigError) as caught:
        if load == "scenario":
            load_scenario(str(path))
        else:
            check_config(str(path))
    error = caught.value
    text = str(error)
    assert error.line is not None, text
    assert text.startswith(f"{path}:{error.line}: "), text
    assert "\n" not in text and "\r" not in text, text
    return error


def _shipped(rel: str, old: str, new: str) -> str:
    """A shipped file with one edit: the last ``old`` (the first may be in its comments)."""
    text = (CONFIGS / rel).read_text(encoding="utf-8")
    before, found, after = text.rpartition(old)
    assert found, old
    return before + new + after


def _line_of(text: str, needle: str) -> int:
    return text[: text.rindex(needle)].count("\n") + 1


STATION = """\
station: s
model: ct4000
jumper: true
groups:
  - {id: feed, breaker_a: 40}
ports:
  - {id: "1", group: feed}
  - {id: "2", group: feed}
"""


def test_issue_breaker_a_null_is_file_line_field(tmp_path: Path) -> None:
    # The issue: `groups: [{id: feed, breaker_a: null}]` was an AssertionError traceback.
    text = _shipped(
        "ct4000-jumper.yaml", "{id: feed, breaker_a: 40}", "{id: feed, breaker_a: null}"
    )
    path = _write(tmp_path, text)
    line = _line_of(text, "breaker_a: null")
    with pytest.raises(ConfigError) as caught:
        load_station(str(path))
    assert str(caught.value) == (
        f"{path}:{line}: groups[feed].breaker_a: must not be empty (a required key)"
    )
    assert _refusal(path).field == "groups[feed].breaker_a"


def test_a_site_ports_required_max_a_written_null_is_refused(tmp_path: Path) -> None:
    # The same root (a required key present but null) was an AssertionError for a site port.
    text = _shipped(
        "sites/ten-ports-100a.yaml", "st1.1, group: c1, max_a: 80", "st1.1, group: c1, max_a: ~"
    )
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_site(str(path))
    error = caught.value
    assert (error.line, error.field) == (_line_of(text, "max_a: ~"), "ports[st1.1].max_a")
    assert error.message == "must not be empty (a required key)"


@pytest.mark.parametrize("deep", ["[" * 5000 + "]" * 5000, "{a: " * 3000 + "1" + "}" * 3000])
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path, deep: str) -> None:
    path = _write(tmp_path, STATION + f"control: {deep}\n")
    error = _refusal(path)
    assert error.line == 9
    assert error.message == "malformed YAML: nested more than 64 levels deep"


def test_an_integer_too_large_for_a_float_is_refused(tmp_path: Path) -> None:
    # OverflowError in Value.number().
    path = _write(tmp_path, STATION.replace("breaker_a: 40", "breaker_a: " + "9" * 400))
    error = _refusal(path)
    assert (error.line, error.field) == (5, "groups[feed].breaker_a")
    assert error.message.endswith("is not allowed (must be a finite number)")
    assert len(str(error)) < 200  # the number is cut, not printed whole


def test_an_integer_too_large_for_a_duration_is_refused(tmp_path: Path) -> None:
    # OverflowError in parse_duration().
    text = _shipped("scenarios/weld-fault.yaml", "duration: 2h", "duration: " + "9" * 400)
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (tmp_path / "ct4000-jumper.yaml").write_text((CONFIGS / "ct4000-jumper.yaml").read_text())
    path = _write(scenarios, text)
    error = _refusal(path, "scenario")
    assert (error.line, error.field) == (_line_of(text, "duration: 9"), "duration")
    assert "too large to be a duration" in error.message


def test_a_huge_hex_integer_is_refused_without_printing_it(tmp_path: Path) -> None:
    # Printing a 5000-digit int raised ValueError (Python's int-to-str digit limit).
    path = _write(
        tmp_path, STATION.replace("breaker_a: 40}", "breaker_a: 40, phases: 0x" + "f" * 5000 + "}")
    )
    error = _refusal(path)
    assert (error.line, error.field) == (5, "groups[feed].phases")
    assert "too large" in error.message


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("min_a", "!!int ''", "'' is not an integer (tagged tag:yaml.org,2002:int)"),  # IndexError
        (
            "min_a",
            "!!float ''",
            "'' is not a number (tagged tag:yaml.org,2002:float)",
        ),  # IndexError
        (
            "jumper",
            "!!bool maybe",
            "'maybe' is not a boolean (tagged tag:yaml.org,2002:bool)",
        ),  # KeyError
    ],
)
def test_an_explicit_tag_on_a_value_that_is_not_one_is_refused(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    text = STATION.replace("jumper: true\n", "") + f"{key}: {value}\n"
    error = _refusal(_write(tmp_path, text))
    assert (error.line, error.field, error.message) == (8, key, message)


def test_an_explicit_timestamp_tag_on_nonsense_is_refused(tmp_path: Path) -> None:
    # AttributeError inside yaml's timestamp constructor (its regex did not match).
    text = _shipped(
        "scenarios/office-tou.yaml", "start: 2026-11-23T00:00:00", "start: !!timestamp x"
    )
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "office-tou.yaml").write_text((CONFIGS / "sites" / "office-tou.yaml").read_text())
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    path = _write(scenarios, text)
    error = _refusal(path, "scenario")
    assert (error.line, error.field) == (_line_of(text, "start: !!"), "start")
    assert error.message == "'x' is not a date/time (tagged tag:yaml.org,2002:timestamp)"


def test_merge_key_billion_laughs_is_expanded_once(tmp_path: Path) -> None:
    # Not a crash with PyYAML 6.0.4, but pyproject.toml accepts releases whose merge expansion
    # copies 9**8 pairs here (yaml/pyyaml#897): the loader expands merges itself, once each.
    levels = ["l0: &l0 {id: lol}"]
    for n in range(1, 9):
        refs = ", ".join([f"*l{n - 1}"] * 9)
        levels.append(f"l{n}: &l{n} {{<<: [{refs}], k{n}: 1}}")
    text = "control:\n" + "".join(f"  {line}\n" for line in levels)
    text += STATION.replace("{id: feed, breaker_a: 40}", "{<<: *l8, id: feed, breaker_a: 40}")
    error = _refusal(_write(tmp_path, text))
    # The group's keys: the deepest merged first (the first merged wins), its own last.
    assert (error.line, error.field) == (3, "groups[feed].k1")
    assert error.message.startswith("unknown key")


def test_a_mapping_that_merges_itself_is_refused(tmp_path: Path) -> None:
    # yaml's in-place flatten makes a self-merge a no-op; expanding without editing the
    # nodes, the loader must notice the loop instead of following it.
    path = _write(tmp_path, STATION.replace("{id: feed, breaker_a: 40}", "&g {<<: *g, id: feed}"))
    error = _refusal(path)
    assert (error.line, error.field) == (5, "groups[0]")
    assert error.message == "a merge key (<<) includes the mapping it is part of"


def _scenario_naming(tmp_path: Path, station: str) -> Path:
    text = _shipped("scenarios/weld-fault.yaml", "station: ../ct4000-jumper.yaml", station)
    return _write(tmp_path, text)


def test_a_scenario_naming_dev_zero_is_refused_not_read_forever(tmp_path: Path) -> None:
    # MemoryError: the loader read a file with no end.
    error = _refusal(_scenario_naming(tmp_path, "station: /dev/zero"), "scenario")
    assert error.field == "station"
    assert error.message.startswith("cannot use the station file: /dev/zero: cannot read the file")


def test_a_scenario_naming_a_path_with_nul_is_refused(tmp_path: Path) -> None:
    # ValueError ("embedded null byte") from open().
    error = _refusal(_scenario_naming(tmp_path, 'station: "a\\0b.yaml"'), "scenario")
    assert error.field == "station"
    assert error.message.endswith("cannot read the file: its name contains a NUL")


def test_a_password_file_that_is_not_text_is_refused(tmp_path: Path) -> None:
    # UnicodeDecodeError reading the password.
    (tmp_path / "pw.bin").write_bytes(b"\xff\xfe\x00binary")
    (tmp_path / "site.key").write_text((CONFIGS / "site-demo" / "demo.key").read_text())
    (tmp_path / "site.key").chmod(0o600)
    link = (
        "link: {broker: 'mqtt://127.0.0.1:1883', site: demo, username: u, "
        "password_file: pw.bin, key_file: site.key}\n"
    )
    error = _refusal(_write(tmp_path, STATION + link))
    assert (error.line, error.field) == (9, "link.password_file")
    assert error.message.endswith("cannot read a password from it (not text)")


# ---- refusals that did not say where: now a line, and one line ----------------------------


def test_a_byte_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, STATION.encode().replace(b"model: ct4000", b"model: ct\xff4000"))
    error = _refusal(path)
    assert (error.line, error.message) == (2, "cannot read the file: byte 0xff is not UTF-8")


def test_a_control_character_names_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, STATION.replace("jumper: true", "jumper: tr\x07ue"))
    error = _refusal(path)
    assert (error.line, error.message) == (3, "malformed YAML: character U+0007 is not allowed")


def test_a_key_with_a_line_break_is_refused_on_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, STATION + '"con\\ntrol": 1\n')
    error = _refusal(path)
    assert (error.line, error.field) == (9, "'con\\ntrol'")
    assert error.message.startswith("unknown key")


def test_an_id_with_a_line_break_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, STATION.replace("{id: feed,", '{id: "fe\\ned",'))
    error = _refusal(path)
    assert (error.line, error.field) == (5, "groups[0].id")
    assert "an id is printable text" in error.message


# ---- the real command --------------------------------------------------------------------


def test_config_check_on_a_mutated_file_exits_2_without_a_traceback(tmp_path: Path) -> None:
    text = _shipped(
        "ct4000-jumper.yaml", "{id: feed, breaker_a: 40}", "{id: feed, breaker_a: null}"
    )
    path = _write(tmp_path, text)
    script = Path(sys.executable).with_name("ampshare")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tools.cli"]
    proc = subprocess.run(
        [*command, "config", "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    line = _line_of(text, "breaker_a: null")
    assert proc.stderr == (
        f"{path}:{line}: groups[feed].breaker_a: must not be empty (a required key)\n"
    )
    assert proc.stdout == ""
