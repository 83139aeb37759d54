"""Every shipped scenario runs through the real firmware loop and tells its story.

Assertions are on the summary, which is computed from what the simulated hardware did. Long
scenarios run shortened where the story is told early enough.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tools.scenario import load_scenario
from tools.simulate import simulate

SCENARIOS = Path(__file__).resolve().parent.parent / "configs" / "scenarios"


def _run(name: str, duration_s: float | None = None) -> dict[str, Any]:
    result = simulate(load_scenario(SCENARIOS / name), duration_s=duration_s)
    return result.summary


def _compliant(summary: dict[str, Any]) -> None:
    """What must hold for compliant cars: no overshoot, no breach, no fault, >= 8 A."""
    assert summary["overshoot_as"] == 0.0
    assert summary["breaches"] == 0, summary["first_breach"]
    assert summary["faults"] == []
    assert summary["min_charging_a"] >= 8.0
    for lid, peak in summary["peak_a"].items():
        assert peak <= summary["limit_a"][lid] + 1e-6


def test_every_shipped_scenario_loads() -> None:
    names = sorted(p.name for p in SCENARIOS.glob("*.yaml"))
    assert len(names) >= 7
    for name in names:
        load_scenario(SCENARIOS / name)


def test_jumper_two_cars_share_then_one_takes_all() -> None:
    s = _run("jumper-two-cars.yaml")
    _compliant(s)
    assert s["peak_a"]["feed"] == pytest.approx(32.0, abs=0.2)  # 50/50 used the whole 80 %
    # After car 1 is full (still plugged in), car 2 takes its port's whole 30 A.
    assert s["peak_drawn_a"]["2"] == pytest.approx(30.0, abs=0.2)
    assert s["utilization"] >= 0.99


def test_small_onboard_charger_leaves_the_rest_to_the_other_car() -> None:
    s = _run("small-onboard-charger.yaml")
    _compliant(s)
    assert s["peak_drawn_a"]["2"] == pytest.approx(12.0, abs=0.2)
    # A static 50/50 split would cap car 1 at 16 A; the shared remainder lifts it above.
    assert s["utilization"] >= 0.95


def test_ten_ports_on_100a_circuit_through_an_evening() -> None:
    s = _run("ten-ports-evening.yaml", duration_s=4 * 3600.0)
    _compliant(s)
    assert s["peak_a"]["c1"] == pytest.approx(80.0, abs=0.2)
    assert s["min_charging_a"] == pytest.approx(8.0, abs=0.1)  # the guide: 8 A with all ten
    assert s["utilization"] >= 0.98
    assert all(e > 0 for e in s["energy_kwh"].values())


def test_round_robin_rotates_12_cars_on_80a() -> None:
    s = _run("round-robin-12-cars.yaml")
    _compliant(s)
    paused = s["paused_s"]
    assert all(v > 0 for v in paused.values()), paused  # everybody waited in turn
    energy = list(s["energy_kwh"].values())
    mean = sum(energy) / len(energy)
    assert (max(energy) - min(energy)) / mean < 0.10, energy  # averages even out


def test_non_compliant_ev_is_stopped_and_reported() -> None:
    s = _run("non-compliant-ev.yaml")
    assert [(f["port"], f["kind"]) for f in s["faults"]] == [("1", "overdraw")]
    assert s["deliberate"] is True
    # Stopped within the overdraw window: the overshoot is bounded by (38 - 32) A x ~12 s.
    assert 0.0 < s["overshoot_as"] <= 6.0 * 13.0


def test_weld_fault_locks_out_the_port() -> None:
    s = _run("weld-fault.yaml")
    assert [(f["port"], f["kind"]) for f in s["faults"]] == [("1", "weld")]
    assert s["overshoot_as"] == 0.0
    assert s["energy_kwh"]["2"] > 5.0  # the other port kept charging


def test_car_that_does_not_wake_is_marked_not_responding() -> None:
    s = _run("no-wake-after-pause.yaml")
    assert s["not_responding"] == ["st2.2"]
    assert s["overshoot_as"] == 0.0 and s["breaches"] == 0


def test_sim_command_json_trace_and_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "trace"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "sim",
            str(SCENARIOS / "jumper-two-cars.yaml"),
            "--json",
            "--out",
            str(out),
            "--for",
            "1h",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    for key in (
        "energy_kwh",
        "peak_a",
        "limit_a",
        "overshoot_as",
        "utilization",
        "min_charging_a",
        "faults",
        "sim_s",
        "wall_s",
    ):
        assert key in summary
    header = (out / "ports.csv").read_text().splitlines()[0]
    assert header.startswith("t_s,port,pilot,mode,duty_pct,offer_a,effective_a,drawn_a")
    assert (out / "limits.csv").exists() and (out / "summary.json").exists()


def test_plot_is_written(tmp_path: Path) -> None:
    png = tmp_path / "plot.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "sim",
            str(SCENARIOS / "jumper-two-cars.yaml"),
            "--plot",
            str(png),
            "--for",
            "2h",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("station: ../ct4000-jumper.yaml\nduration: 1h\nevs:\n  - {port: 7}\n", ":4: evs[0].port"),
        ("station: ../ct4000-jumper.yaml\nduration: -1h\n", ":2: duration"),
        ("station: ../ct4000-jumper.yaml\nduration: 1h\nspeed: 3\n", ":3: speed"),
        ("station: ../nope.yaml\nduration: 1h\n", ":1: station"),
        (
            "station: ../ct4000-jumper.yaml\nduration: 2h\nevs:\n"
            "  - {port: 1, arrive: 0s, leave: 1h}\n  - {port: 1, arrive: 30m}\n",
            ":5:",
        ),
    ],
)
def test_bad_scenarios_fail_with_file_line_field(body: str, where: str, tmp_path: Path) -> None:
    path = SCENARIOS / f"_bad_{abs(hash(body))}.yaml"
    path.write_text(body)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tools.cli", "sim", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        path.unlink()
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(path) + where in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_checker_fails_a_controller_that_does_not_sequence(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The invariant checker is independent of the controller: the naive baseline of the
    benchmark (new offers applied at once) breaches the safe-offer invariant, and the command
    says so loudly with the tick and the limit."""
    sys.path.insert(0, str(SCENARIOS.parent.parent / "bench"))
    from baselines import NaiveReallocator

    from tools.sim_cmd import sim_command

    def naive(tree: Any, _scenario: Any) -> NaiveReallocator:
        return NaiveReallocator(tree)

    path = str(SCENARIOS / "jumper-two-cars.yaml")
    result = simulate(load_scenario(path), duration_s=3600.0, controller_factory=naive)
    assert result.breaches and result.breaches[0].kind == "invariant"
    assert result.breaches[0].limit == "feed"
    assert sim_command(path, None, None, False, 3600.0, controller_factory=naive) == 3
    err = capsys.readouterr().err
    assert "LIMIT BREACH" in err and "limit feed" in err and "t=" in err
