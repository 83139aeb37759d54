"""Imports point one way: ``firmware`` -> ``controller`` -> ``hal``; ``tools`` may use all.

docs/design.md, "Layers": ``hal`` is what the hardware can do and knows nothing of policy,
``controller`` decides currents and knows nothing of the station program, ``firmware`` is the
station program and knows nothing of the command line. And the simulator is not part of the
station: nothing in ``firmware`` imports ``hal.sim`` (the ``sim:`` section of a station file
is read by the sim backend, through ``hal.registry``, only when a file has one). Checked on
the source (every import statement, also those inside functions or ``TYPE_CHECKING``, and
``importlib.import_module`` of a literal name) and, for ``hal.sim``, on what importing every
firmware module really loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hal", "controller", "firmware", "tools")
# What each package must not import (tools may import everything).
FORBIDDEN = {
    "hal": ("controller", "firmware", "tools"),
    "controller": ("firmware", "tools"),
    "firmware": ("tools", "hal.sim"),
    "tools": (),
}


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = _module_name(path, root)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield node.lineno, name
            for alias in node.names:  # `from hal import sim` imports hal.sim
                yield node.lineno, f"{name}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, name in _imports(path):
            for banned in FORBIDDEN[package]:
                if _within(name, banned):
                    found.append(f"{path.relative_to(ROOT)}:{line}: imports {name}")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_from_firmware_to_controller_to_hal(package: str) -> None:
    assert _violations(package) == []


def test_the_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    path = tmp_path / "firmware" / "x.py"
    path.parent.mkdir()
    path.write_text(
        "import tools.cli\n"
        "from hal import sim\n"
        "def f():\n"
        "    from hal.sim.bus import SimBus\n"
        "    importlib.import_module('hal.sim.config')\n"
        "    from ..hal import sim\n"
    )
    names = [name for _, name in _imports(path, tmp_path)]
    assert {"tools.cli", "hal.sim", "hal.sim.bus", "hal.sim.config"} <= set(names)
    assert names.count("hal.sim") == 2  # also the relative one


def test_importing_all_of_firmware_loads_nothing_of_the_simulator() -> None:
    modules = sorted(
        _module_name(path)
        for path in (ROOT / "firmware").rglob("*.py")
        if _module_name(path) != "firmware"
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'hal.sim' or m.startswith('hal.sim.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"
