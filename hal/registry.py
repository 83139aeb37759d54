"""Backends by URL scheme, imported only when chosen (python-can's interface table).

A station config names its hardware and meters with URL-like strings (``sim://``,
``serial:///dev/ttyAMA0``, ``modbus-tcp://127.0.0.1:5020?unit=1&model=sdm630``). This module
maps each scheme to the function that opens it, as a dotted path, so that a station on a
Raspberry Pi never imports pymodbus unless one of its meters is a Modbus meter.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

from hal.interfaces import Hardware, Meter

# scheme -> "module:function". A function receives (url, **context) and returns the object.
HARDWARE_BACKENDS: dict[str, str] = {
    "sim": "hal.sim.bus:open_hardware",
    "serial": "hal.serial.backend:open_hardware",
}
METER_BACKENDS: dict[str, str] = {
    "modbus-tcp": "hal.modbus.meter:open_meter",
    "modbus-rtu": "hal.modbus.meter:open_meter",
}


class BackendError(ValueError):
    """A backend URL that names no known backend, or that its backend refused."""


def scheme_of(url: str) -> str:
    """The scheme of a backend URL (``"sim"`` for ``sim://``), refusing URLs without one."""
    scheme = urlsplit(url).scheme
    if not scheme or "://" not in url:
        raise BackendError(f"{url!r} is not a backend URL (expected scheme://...)")
    return scheme


def _load(table: dict[str, str], kind: str, url: str) -> Callable[..., Any]:
    scheme = scheme_of(url)
    target = table.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(table)) or "none"
        raise BackendError(f"no {kind} backend for {scheme}:// (known: {known})")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"{kind} backend {scheme}:// cannot be loaded: {exc}") from exc
    return cast(Callable[..., Any], getattr(module, attr))


def open_hardware(url: str, **context: Any) -> Hardware:
    """Open the pilot/contactor hardware of a station from its URL."""
    return cast(Hardware, _load(HARDWARE_BACKENDS, "hardware", url)(url, **context))


def open_meter(url: str, **context: Any) -> Meter:
    """Open an energy meter from its URL."""
    return cast(Meter, _load(METER_BACKENDS, "meter", url)(url, **context))
