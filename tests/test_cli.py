"""The ampshare command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def _ampshare(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=ROOT,
    )


def test_version() -> None:
    proc = _ampshare("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("ampshare ")


def test_config_check_accepts_every_shipped_station_config() -> None:
    for name in ("ct4000", "ct4000-jumper", "cp6000", "cp6000-jumper", "demo-jumper"):
        proc = _ampshare("config", "check", str(CONFIGS / f"{name}.yaml"))
        assert proc.returncode == 0, proc.stderr


def test_run_for_a_while_on_simulated_hardware_shares_the_feed() -> None:
    proc = _ampshare(
        "run",
        "--config",
        str(CONFIGS / "demo-jumper.yaml"),
        "--for",
        "60s",
        "--speed",
        "20",
        "--no-live",
    )
    assert proc.returncode == 0, proc.stderr
    # Without a terminal: log records on stderr, no table anywhere (journald).
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert any("port 1: C2" in line for line in lines)
    assert any(
        "port 2: C2, offer 16.0 A" in line and line.endswith("limited by breaker feed")
        for line in lines
    ), proc.stderr
    # Sped up, each record also says the station's own time.
    assert all("] port " in line for line in lines if "port 1:" in line or "port 2:" in line)
    assert lines[-1].endswith(
        "stopped (--for elapsed): every port left safe (PWM off, contactor open)"
    )


def test_run_refuses_speed_on_real_hardware(tmp_path: Path) -> None:
    config = (CONFIGS / "ct4000-jumper.yaml").read_text()
    path = tmp_path / "serial.yaml"
    path.write_text(config.replace("hardware: sim://", "hardware: serial:///dev/ttyAMA0"))
    proc = _ampshare("run", "--config", str(path), "--for", "1s", "--speed", "5")
    assert proc.returncode == 2 and "--speed needs simulated hardware" in proc.stderr


def test_run_with_a_broken_config_is_one_line_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("station: x\nmodel: ct4000\ngroups: [{id: g}]\nports: []\n")
    proc = _ampshare("run", "--config", str(path), "--for", "1s")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert str(path) + ":" in proc.stderr


def test_ctrl_c_stops_cleanly() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "run",
            "--config",
            str(CONFIGS / "demo-jumper.yaml"),
            "--no-live",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    # Wait until the loop runs (its first port record), then interrupt it like a user would.
    while "port 1:" not in (line := proc.stderr.readline()):
        assert line, "the station ended before its first port record"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.endswith("stopped by SIGINT: every port left safe (PWM off, contactor open)")


@pytest.mark.parametrize(
    "args", [["nonsense"], ["run"], ["sim"], ["run", "--config", "x", "--for", "5 parsecs"]]
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    proc = _ampshare(*args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
