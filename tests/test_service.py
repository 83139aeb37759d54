"""The station as a systemd service: the shipped unit (deploy/ampshare.service) passes
``systemd-analyze verify`` and stays hardened, and the installer (deploy/install.sh) puts the
venv, the unit and the config into a root folder, keeps an installer's config, edits the boot
config.txt only when told to, and with --dry-run changes nothing.

systemd-analyze verify checks that ExecStart's program exists and is executable, and
/opt/ampshare/venv is not on this machine: it verifies a copy of the unit whose ExecStart names
a program that exists (a stub, or the venv the installer made in the root), every other line
as shipped. It reports unknown keys and bad values as warnings with exit status 0, so any line
it prints about the unit counts as a failure too.

The install runs offline: ``--pip-args "--no-deps --no-index"`` installs only the wheel, and the
runtime dependencies come from the dev venv (PYTHONPATH names a folder of links to its
packages, ampshare and pip excluded), as tests/test_wheel.py does with a .pth file."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "ampshare.service"
INSTALL = ROOT / "deploy" / "install.sh"
TEMPLATE = ROOT / "deploy" / "station.template.yaml"
EXEC = "/opt/ampshare/venv/bin/ampshare"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
GPIO_LINES = ["dtparam=spi=on", "dtoverlay=pwm-2chan,pin=12,func=4,pin2=13,func2=4"]
# A Bookworm config.txt ends in a model filter: lines appended after it would apply to a CM5
# only, unless the installer resets the filter.
CONFIG_TXT = "dtparam=audio=on\n#dtparam=spi=on\n\n[cm5]\ndtoverlay=dwc2,dr_mode=host\n"
# Generous for 2 shared cores: a venv with pip and two pip runs.
_TIMEOUT_S = 300.0
# The build copies the checkout without what is not source (tests/test_wheel.py does the same).
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "out"
)


# --- systemd-analyze --------------------------------------------------------------------


def _verify(unit: Path) -> list[str]:
    """What ``systemd-analyze verify`` finds wrong with ``unit``: its exit status if not 0,
    and every line it prints about it (warnings included)."""
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--recursive-errors=no", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if unit.name in line]
    if proc.returncode != 0:
        problems.append(f"exit status {proc.returncode}: {proc.stderr.strip()}")
    return problems


def _with_program(unit_text: str, program: Path) -> str:
    """The unit with ExecStart's program replaced, and nothing else."""
    changed = unit_text.replace(f"ExecStart={EXEC} ", f"ExecStart={program} ")
    assert changed.count("\n") == unit_text.count("\n")
    assert (
        sum(a != b for a, b in zip(changed.splitlines(), unit_text.splitlines(), strict=True)) == 1
    )
    return changed


@pytest.fixture
def stub_program(tmp_path: Path) -> Path:
    program = tmp_path / "bin" / "ampshare"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    return program


def _unit_copy(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "units"
    folder.mkdir(exist_ok=True)
    path = folder / "ampshare.service"  # the name systemd would know it by
    path.write_text(text)
    return path


def test_the_shipped_unit_passes_systemd_analyze_verify(tmp_path: Path, stub_program: Path) -> None:
    unit = _unit_copy(tmp_path, _with_program(UNIT.read_text(), stub_program))
    assert _verify(unit) == []


@pytest.mark.parametrize(
    ("change", "replacement"),
    [
        ("WatchdogSec=5s", "WatchdogSecs=5s"),  # an unknown key: a warning, exit status 0
        ("Type=notify", "Type=notifyy"),  # a bad value: a warning too
        ("DevicePolicy=closed", "DevicePolicy=shut"),
        ("[Service]", "[Servce]"),  # no [Service] section: no ExecStart
        ("ExecStart={program} ", "ExecStart=/nonexistent/ampshare "),  # not executable
    ],
)
def test_a_broken_unit_fails_that_check(
    tmp_path: Path, stub_program: Path, change: str, replacement: str
) -> None:
    text = _with_program(UNIT.read_text(), stub_program)
    change = change.format(program=stub_program)
    assert change in text
    unit = _unit_copy(tmp_path, text.replace(change, replacement, 1))
    assert _verify(unit) != []


def test_the_unit_stays_hardened(tmp_path: Path, stub_program: Path) -> None:
    """systemd's own exposure score (0 best .. 10): the shipped unit scores under 2.5; dropping
    the sandboxing (ProtectSystem=, the capability and system call filters...) raises it."""
    unit = _unit_copy(tmp_path, _with_program(UNIT.read_text(), stub_program))
    security = [SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=25", "--no-pager"]
    proc = subprocess.run([*security, str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    bare = "\n".join(
        line
        for line in unit.read_text().splitlines()
        if not line.startswith(("Protect", "Capability", "SystemCall", "Restrict", "Private"))
    )
    (tmp_path / "weak").mkdir()
    weak = _unit_copy(tmp_path / "weak", bare)
    proc = subprocess.run([*security, str(weak)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, proc.stdout[-3000:]


def _settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_runs_the_station_as_a_notify_service_that_reaches_its_devices() -> None:
    s = _settings(UNIT.read_text())
    assert s["ExecStart"] == [f"{EXEC} run --config /etc/ampshare/station.yaml --no-live"]
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] == ["5s"] and s["Restart"] == ["on-failure"]
    assert s["DynamicUser"] == ["yes"]
    assert set(s["SupplementaryGroups"][0].split()) == {"gpio", "spi", "dialout"}
    assert s["StateDirectory"] == ["ampshare"] and s["ConfigurationDirectory"] == ["ampshare"]
    assert s["DevicePolicy"] == ["closed"]
    allowed = {rule.split()[0] for rule in s["DeviceAllow"]}
    assert {"char-gpiochip", "char-spi", "char-ttyAMA", "char-ttyUSB"} <= allowed
    # The pilot PWM is written through /sys/class/pwm: /sys must not be made read-only.
    assert s.get("ProtectKernelTunables", ["no"]) == ["no"] or "/sys" in " ".join(
        s.get("ReadWritePaths", [])
    )
    assert s["CapabilityBoundingSet"] == [""]
    assert s["ProtectSystem"] == ["strict"] and s["MemoryDenyWriteExecute"] == ["yes"]


# --- the installer ----------------------------------------------------------------------


def _outside_env(deps: Path | None = None) -> dict[str, str]:
    """This environment without anything that would put the checkout or the dev venv on the
    installed program's path, and with ``deps`` (the dev venv's packages) on it if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env.pop("VIRTUAL_ENV", None)
    env.update(PYTHONNOUSERSITE="1")
    if deps is not None:
        env["PYTHONPATH"] = str(deps)
    return env


def _dev_dependencies(folder: Path) -> Path:
    """A folder of links to the dev venv's installed packages, but ampshare (its editable
    install would be taken for the wheel's), pip, setuptools and .pth files."""
    skip = {"ampshare", "pip", "setuptools", "_distutils_hack", "pkg_resources", "wheel"}
    skip |= {"hal", "controller", "firmware", "tools", "__pycache__"}
    folder.mkdir()
    paths = sysconfig.get_paths()
    for site in sorted({paths["purelib"], paths["platlib"]}):
        for entry in Path(site).iterdir():
            stem = entry.name.split("-")[0].split(".")[0]
            if entry.suffix == ".pth" or entry.name.startswith("__editable__") or stem in skip:
                continue
            link = folder / entry.name
            if not link.exists():
                link.symlink_to(entry)
    return folder


@dataclass(frozen=True)
class Install:
    """A root folder the installer runs into, and how to run it there."""

    root: Path
    wheel: Path
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [
            "bash",
            str(INSTALL),
            "--root",
            str(self.root),
            "--python",
            sys.executable,
            "--wheel",
            str(self.wheel),
            "--pip-args",
            "--no-deps --no-index",
            *args,
        ]
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            env=self.env,
            stdin=subprocess.DEVNULL,  # no terminal to ask on
        )

    @property
    def venv(self) -> Path:
        return self.root / "opt" / "ampshare" / "venv"

    @property
    def config(self) -> Path:
        return self.root / "etc" / "ampshare" / "station.yaml"

    @property
    def config_txt(self) -> Path:
        return self.root / "boot" / "firmware" / "config.txt"

    def ampshare(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "ampshare"), *args],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            env=self.env,
            cwd=self.root,
        )


def _checked(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built once from a copy of the checkout, without network or build isolation."""
    tmp = tmp_path_factory.mktemp("service-wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE, symlinks=True)
    build = ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist")]
    _checked(
        subprocess.run(
            [sys.executable, "-m", "pip", *build, str(source)],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            env=_outside_env(),
            cwd=tmp,
        )
    )
    (built,) = (tmp / "dist").glob("ampshare-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Install:
    """A first install into an empty root with a Bookworm boot folder."""
    tmp = tmp_path_factory.mktemp("service-root")
    deps = _dev_dependencies(tmp / "deps")
    root = tmp / "root"
    (root / "boot" / "firmware").mkdir(parents=True)
    (root / "boot" / "firmware" / "config.txt").write_text(CONFIG_TXT)
    install = Install(root, wheel, _outside_env(deps))
    _checked(install.run())
    return install


def _tree(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every path under ``root``: its kind, mode and content (or link target)."""
    tree: dict[str, tuple[str, int, str]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            tree[str(path.relative_to(root))] = ("link", st.st_mode, os.readlink(path))
        elif path.is_dir():
            tree[str(path.relative_to(root))] = ("dir", st.st_mode, "")
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            tree[str(path.relative_to(root))] = ("file", st.st_mode, f"{digest} {st.st_mtime_ns}")
    return tree


def _gpio(config: str) -> str:
    """A station config on the GPIO backend (its shipped reference board): what needs PWM and
    SPI in config.txt."""
    return re.sub(r"^hardware: .*$", "hardware: gpio://?board=reference", config, flags=re.M)


def test_a_dry_run_prints_every_action_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "boot" / "firmware").mkdir(parents=True)
    (root / "boot" / "firmware" / "config.txt").write_text(CONFIG_TXT)
    (root / "etc" / "ampshare").mkdir(parents=True)
    (root / "etc" / "ampshare" / "station.yaml").write_text(_gpio(TEMPLATE.read_text()))
    before = _tree(root)
    proc = subprocess.run(
        ["bash", str(INSTALL), "--dry-run", "--root", str(root), "--python", sys.executable],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
        env=_outside_env(),
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert _tree(root) == before
    said = proc.stderr
    venv = f"{root}/opt/ampshare/venv"
    for action in (
        f"-m venv {venv}",
        "-m pip wheel --no-deps",  # no --wheel: one is built from the checkout
        "-m pip install",
        "-py3-none-any.whl\\[pi\\]",  # with the pi extra (shell-quoted)
        f"install -D -m 0644 {UNIT} {root}/etc/systemd/system/ampshare.service",
        f"config check {root}/etc/ampshare/station.yaml",
        f"append_boot_lines {root}/boot/firmware/config.txt",
        f"systemctl --root={root} enable ampshare.service",
    ):
        assert action in said, f"{action!r} not in:\n{said}"
    assert "keeping the existing /etc/ampshare/station.yaml" in said
    assert "install -m 0644" not in said  # the config is there: not even shown as replaced


@pytest.mark.slow
def test_install_into_a_root_makes_the_venv_the_unit_and_the_config(
    installed: Install, tmp_path: Path
) -> None:
    # The venv runs the installed wheel, from its own site-packages.
    where = _checked(
        subprocess.run(
            [
                str(installed.venv / "bin" / "python"),
                "-c",
                "import tools.cli; print(tools.cli.__file__)",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=installed.env,
            cwd=installed.root,
        )
    )
    assert Path(where.stdout.strip()).is_relative_to(installed.venv)
    unit = installed.root / "etc" / "systemd" / "system" / "ampshare.service"
    assert unit.read_text() == UNIT.read_text()
    wants = unit.parent / "multi-user.target.wants" / "ampshare.service"
    assert os.readlink(wants) == "/etc/systemd/system/ampshare.service"
    assert installed.config.read_text() == TEMPLATE.read_text()
    # The template's hardware needs nothing in config.txt: it is left as it was.
    assert installed.config_txt.read_text() == CONFIG_TXT
    # The installed program accepts the installed config.
    checked = _checked(installed.ampshare("config", "check", str(installed.config)))
    assert checked.stdout.startswith("station st1:")
    # And the installed unit verifies against the program the installer made.
    copy = _unit_copy(
        tmp_path, _with_program(unit.read_text(), installed.venv / "bin" / "ampshare")
    )
    assert _verify(copy) == []


@pytest.mark.slow
def test_a_second_install_keeps_the_config_and_edits_config_txt_only_with_yes(
    installed: Install,
) -> None:
    # The installer made the station theirs: on the GPIO backend, another id.
    mine = _gpio(TEMPLATE.read_text()).replace("station: st1 ", "station: garage ")
    assert mine != TEMPLATE.read_text()
    installed.config.write_text(mine)

    again = _checked(installed.run())
    assert installed.config.read_text() == mine
    assert "keeping the existing /etc/ampshare/station.yaml" in again.stderr
    assert "reusing the venv" in again.stderr
    # Lines are missing, but nobody said yes (and there is no terminal to ask on).
    assert installed.config_txt.read_text() == CONFIG_TXT
    for line in GPIO_LINES:
        assert line in again.stderr
    assert "--yes" in again.stderr

    _checked(installed.run("--yes"))
    edited = installed.config_txt.read_text()
    assert edited.startswith(CONFIG_TXT)
    added = edited.removeprefix(CONFIG_TXT).splitlines()
    # After an [all] filter (not inside the file's [cm5] section), each line once.
    assert added[added.index("[all]") + 1 :] == GPIO_LINES
    assert (installed.config_txt.parent / "config.txt.ampshare.bak").read_text() == CONFIG_TXT

    third = _checked(installed.run("--yes"))
    assert installed.config_txt.read_text() == edited
    assert "has every line the hardware needs" in third.stderr
    assert installed.config.read_text() == mine
    assert _checked(installed.ampshare("config", "check", str(installed.config))).stdout.startswith(
        "station garage:"
    )


def test_the_installer_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    def install(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(INSTALL), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=_outside_env(),
            stdin=subprocess.DEVNULL,
        )

    cases: Sequence[tuple[list[str], str]] = [
        (["--bogus"], "unknown argument: --bogus"),
        (["--root", str(tmp_path / "nowhere")], "no such directory"),
        (["--root", str(tmp_path), "--wheel", str(tmp_path / "x.whl")], "no such file"),
        (["--root", str(tmp_path), "--python", "/nonexistent/python3"], "no /nonexistent"),
        (["--wheel"], "--wheel needs a value"),
    ]
    for args, message in cases:
        proc = install(*args)
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)
    assert list(tmp_path.iterdir()) == []
