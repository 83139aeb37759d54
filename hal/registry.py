"""Backends by URL scheme, imported only when chosen (python-can's interface table).

A station config names its hardware and meters with URL-like strings (``sim://``,
``serial:///dev/ttyAMA0``, ``modbus-tcp://127.0.0.1:5020?unit=1&model=sdm630``; ``builtin``
for the meter that comes with the hardware). This module maps each scheme to the function that
opens it, as a dotted path, so that a station on a Raspberry Pi never imports pymodbus unless
one of its meters is a Modbus meter. A backend may also read a section of the station file of
its own, named after its scheme (``sim:``): the station keeps what the backend's parser
returns without looking inside, and hands it back in the ``BackendContext`` it opens with.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from hal.clock import Clock
from hal.interfaces import BackendContext, Hardware, Meter
from hal.rfid.reader import TagReader
from hal.yamlnodes import Value

# scheme -> "module:function". A hardware function receives (url, BackendContext).
HARDWARE_BACKENDS: dict[str, str] = {
    "sim": "hal.sim.bus:open_hardware",
    "serial": "hal.serial.backend:open_hardware",
    "gpio": "hal.gpio.backend:open_hardware",
}
# scheme -> "module:function". A meter function receives (url, clock=...).
METER_BACKENDS: dict[str, str] = {
    "modbus-tcp": "hal.modbus.meter:open_meter",
    "modbus-rtu": "hal.modbus.meter:open_meter",
}
# scheme -> "module:function". A tag reader function receives (url, clock=...).
TAG_READERS: dict[str, str] = {
    "rdm6300": "hal.rfid.rdm6300:open_reader",
    "sim": "hal.rfid.sim:open_reader",
}
# scheme -> "module:function" reading the station file's section named after the scheme. It
# receives (the section's Value, the station's port ids) and returns the parsed section, or
# refuses it with a ConfigError naming file:line:field.
SECTION_PARSERS: dict[str, str] = {
    "sim": "hal.sim.config:parse_section",
    "gpio": "hal.gpio.config:parse_section",
}
# A port's meter: that names no backend of its own: the meter the hardware comes with (the sim
# bus's simulated meter, a pilot board's current transformer), PortHardware.meter.
BUILTIN_METER = "builtin"


class BackendError(ValueError):
    """A backend URL that names no known backend, or that its backend refused."""


def scheme_of(url: str) -> str:
    """The scheme of a backend URL (``"sim"`` for ``sim://``), refusing URLs without one."""
    scheme = urlsplit(url).scheme
    if not scheme or "://" not in url:
        raise BackendError(f"{url!r} is not a backend URL (expected scheme://...)")
    return scheme


def _resolve(table: dict[str, str], kind: str, scheme: str) -> Callable[..., Any]:
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


def open_hardware(url: str, context: BackendContext) -> Hardware:
    """Open the pilot/contactor hardware of a station from its URL."""
    opener = _resolve(HARDWARE_BACKENDS, "hardware", scheme_of(url))
    return cast(Hardware, opener(url, context))


def open_meter(url: str, *, clock: Clock | None = None) -> Meter:
    """Open an energy meter from its URL; ``clock`` stamps its readings (default: the
    backend's own monotonic clock)."""
    opener = _resolve(METER_BACKENDS, "meter", scheme_of(url))
    return cast(Meter, opener(url, clock=clock))


def open_tag_reader(url: str, *, clock: Clock | None = None) -> TagReader:
    """Open a station's tag reader (``hal.rfid``) from its URL; ``clock`` stamps its reads."""
    opener = _resolve(TAG_READERS, "tag reader", scheme_of(url))
    return cast(TagReader, opener(url, clock=clock))


def parse_section(scheme: str, value: Value, port_ids: Sequence[str]) -> object:
    """The station file's section of the ``scheme`` backend (``sim:``), as its parser reads it.

    Imports the parser only now, when a file has that section. ``ConfigError`` for a section
    the backend refuses; ``BackendError`` if the scheme has no section.
    """
    if scheme not in SECTION_PARSERS:
        with_one = ", ".join(f"{s}://" for s in sorted(SECTION_PARSERS)) or "none"
        raise BackendError(
            f"the {scheme}:// backend has no config section (backends with one: {with_one})"
        )
    parser = _resolve(SECTION_PARSERS, "config section", scheme)
    return parser(value, port_ids)
