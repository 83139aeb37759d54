"""The installed program works away from the checkout: a wheel built from it, installed into a
fresh venv (how a station is deployed), serves and probes a shipped meter model and checks a
station config that names shipped models, with its working directory outside the checkout."""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The build writes build/ and *.egg-info into the folder it builds, and the checkout is shared,
# so it builds a copy: the checkout without its venv, VCS data, caches and earlier builds.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "out"
)
# Generous for 2 shared cores; the whole test takes a few seconds when the machine is idle.
_STEP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Installed:
    """A fresh venv with only the wheel installed; ``run`` is where its commands run."""

    venv: Path
    site_packages: Path
    run: Path
    env: dict[str, str]

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def ampshare(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([self.bin("ampshare"), *args], cwd=self.run, env=self.env)


def _run(
    argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=_STEP_TIMEOUT_S
    )


def _checked(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _outside_env() -> dict[str, str]:
    """This environment without anything that could put the checkout on the fresh venv's path
    (PYTHONPATH and friends, a user site-packages, the dev venv being active)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env.pop("VIRTUAL_ENV", None)
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    assert not tmp.resolve().is_relative_to(ROOT), "the temp folder must be outside the checkout"
    env = _outside_env()

    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE, symlinks=True)
    dist = tmp / "dist"
    # No build isolation and no index: the dev venv has setuptools (pyproject's dev extra), and
    # a download per run would make the test slow and dependent on the network.
    pip = [sys.executable, "-m", "pip"]
    build = ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist)]
    _checked(_run([*pip, *build, str(source)], cwd=tmp, env=env))
    (wheel,) = dist.glob("ampshare-*.whl")

    venv = tmp / "venv"
    _checked(_run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp, env=env))
    python = str(venv / "bin" / "python")
    # The dev venv's pip installs into the fresh venv's interpreter (pip's --python), so the
    # fresh venv needs no pip of its own. Installed before the .pth below exists: with the dev
    # venv's editable ampshare visible, pip would call the wheel already installed.
    install = ["--python", python, "install", "--no-deps", "--no-index", str(wheel)]
    _checked(_run([*pip, *install], cwd=tmp, env=env))
    site_packages = Path(
        _checked(
            _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp)
        ).stdout.strip()
    )
    # The runtime dependencies come from the dev venv rather than PyPI (seconds, not minutes).
    # A plain path line in a .pth is only appended to sys.path: the dev venv's own .pth files,
    # among them the editable install's finder that maps hal/ and tools/ to the checkout, are
    # not run, and the fresh venv's site-packages stays ahead of it.
    paths = sysconfig.get_paths()
    dev_site = sorted({paths["purelib"], paths["platlib"]})
    (site_packages / "_ampshare_test_dev_deps.pth").write_text("\n".join(dev_site) + "\n")

    run = tmp / "elsewhere"
    run.mkdir()
    return Installed(venv, site_packages, run, env)


@pytest.fixture
def served(installed: Installed) -> Iterator[str]:
    """`ampshare meter serve` of the installed program, on a free loopback port: its base URL."""
    serve = "meter serve --model sdm630 --host 127.0.0.1 --port 0 --unit 1"
    values = "--amps 12.5 --volts 231 --kwh 4321 --hz 49.5"
    proc = subprocess.Popen(
        [installed.bin("ampshare"), *serve.split(), *values.split()],
        cwd=installed.run,
        env=installed.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=_STEP_TIMEOUT_S)
        first = proc.stdout.readline() if ready else ""
        # Port 0 lets the server bind a free port itself (no race with another process), and
        # it says which one on its first line.
        match = re.search(r"on (modbus-tcp://127\.0\.0\.1:\d+)", first)
        if match is None:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"meter serve did not start: {first!r}\n{err}")
        yield match.group(1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


@pytest.mark.slow
def test_the_installed_wheel_runs_from_its_own_site_packages(installed: Installed) -> None:
    proc = _checked(
        _run(
            [
                installed.bin("python"),
                "-c",
                "import hal, hal.modbus, tools.cli; print(hal.__file__); print(tools.cli.__file__)",
            ],
            cwd=installed.run,
            env=installed.env,
        )
    )
    files = proc.stdout.splitlines()
    assert len(files) == 2, proc.stdout
    for file in files:
        assert Path(file).resolve().is_relative_to(installed.site_packages.resolve()), file


@pytest.mark.slow
def test_the_installed_wheel_serves_and_probes_a_shipped_meter_model(
    installed: Installed, served: str
) -> None:
    proc = _checked(installed.ampshare("meter", "probe", f"{served}?unit=1&model=sdm630", "--json"))
    result = json.loads(proc.stdout)
    assert result["model"] == "sdm630"
    assert result["amps"] == [12.5, 12.5, 12.5]
    assert result["volts"] == [231.0, 231.0, 231.0]
    assert result["kw"] == pytest.approx(3 * 12.5 * 231.0 / 1000.0)
    # The served meter's energy grows with its draw (8.7 kW: a whole kWh takes 7 minutes).
    assert 4321.0 <= result["kwh_import"] < 4322.0
    assert result["hz"] == pytest.approx(49.5)


@pytest.mark.slow
def test_the_installed_wheel_checks_a_station_config_with_shipped_models(
    installed: Installed,
) -> None:
    config = ROOT / "configs" / "ct4000-jumper-modbus.yaml"
    assert "model=sdm120" in config.read_text()
    proc = installed.ampshare("config", "check", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_the_installed_wheel_ships_every_map_of_the_checkout(installed: Installed) -> None:
    # A model that does not exist: the refusal lists what the installed package has.
    proc = installed.ampshare("meter", "probe", "modbus-tcp://127.0.0.1:9?unit=1&model=nosuch")
    assert proc.returncode == 2, proc.stderr
    shipped = sorted(p.stem for p in (ROOT / "hal" / "modbus" / "meters").glob("*.yaml"))
    assert {"sdm630", "sdm120"} <= set(shipped)
    assert f"(known: {', '.join(shipped)};" in proc.stderr


@pytest.mark.slow
def test_the_installed_wheel_ships_the_pi_boards(installed: Installed) -> None:
    """A Pi station names its board by name (``gpio://?board=reference``): package data."""
    config = ROOT / "configs" / "pi-jumper-nohw.yaml"
    assert "board=reference" in config.read_text()
    proc = installed.ampshare("config", "check", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "board reference: Raspberry Pi 4, 2 ports" in proc.stdout
