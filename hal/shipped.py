"""Data files that ship inside the packages (meter maps, board files), by name or by path.

One job: the rule for a file a config names either as a shipped one (``sdm630``,
``reference``) or as a path of the user's own (anything ending in ``.yaml``/``.yml`` or
holding a ``/``). Shipped files are package data read through ``importlib.resources``, never a
path beside the source tree: a station runs from a wheel installed into a venv, where only the
packages exist (tests/test_wheel.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = ["is_path", "known", "located"]


def is_path(name: str) -> bool:
    """Whether ``name`` is the path of a user's own file rather than a shipped file's name."""
    return name.endswith((".yaml", ".yml")) or "/" in name


def _folder(package: str, folder: str) -> Traversable:
    return resources.files(package).joinpath(folder)


def known(package: str, folder: str) -> list[str]:
    """The names of the shipped files (``<name>.yaml`` in the package's folder)."""
    return sorted(
        p.name.removesuffix(".yaml")
        for p in _folder(package, folder).iterdir()
        if p.name.endswith(".yaml") and p.is_file()
    )


@contextlib.contextmanager
def located(package: str, folder: str, name: str, what: str) -> Iterator[Path]:
    """The file ``name`` names, as a path on disk while the context lasts.

    ``FileNotFoundError`` (its text says what is known) for a user's path that is not a file
    or an unknown shipped name; ``what`` names the kind in that text ("meter model").
    """
    if is_path(name):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: no such {what} file")
        yield path
        return
    shipped = _folder(package, folder).joinpath(f"{name.lower()}.yaml")
    if not shipped.is_file():
        names = ", ".join(known(package, folder)) or "none"
        raise FileNotFoundError(
            f"unknown {what} {name!r} (known: {names}; or give the path of a .yaml file)"
        )
    # as_file is the file itself for an installed package, a temporary copy only for a zip.
    with resources.as_file(shipped) as path:
        yield path
