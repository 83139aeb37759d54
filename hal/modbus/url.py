"""Meter URLs: ``modbus-tcp://HOST[:PORT]?unit=N&model=M``, ``modbus-rtu:///DEV?baud=...``.

One job: check and split a meter URL into a ``MeterUrl`` (``parse_url``; every refusal a
``BackendError``), with the defaults and ranges of its keys written once here, and say which
meters share a bus (``line_key``) and may share it (``check_same_line``). No pymodbus and no
I/O here. The keys are documented in docs/meters.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from hal.durations import parse_duration
from hal.registry import BackendError

__all__ = [
    "DEFAULT_BAUD",
    "DEFAULT_BYTESIZE",
    "DEFAULT_INTERVAL_S",
    "DEFAULT_PARITY",
    "DEFAULT_RETRIES",
    "DEFAULT_STALE_S",
    "DEFAULT_STOPBITS",
    "DEFAULT_TCP_PORT",
    "DEFAULT_TIMEOUT_S",
    "RTU_UNITS",
    "TCP_UNITS",
    "MeterUrl",
    "parse_url",
]

DEFAULT_TCP_PORT = 502  # MODBUS Messaging on TCP/IP Implementation Guide V1.0b, 4.1
DEFAULT_TIMEOUT_S = 1.0
DEFAULT_RETRIES = 1
# Twice a second: the loop ticks every 50 ms, but what the readings feed (confirming a lowered
# offer within the 5 s window, demand windows of 15 s and more) needs a fresh reading within
# a second; and an SDM630 read at 9600 baud takes ~0.2 s, so two meters fit on one RS485 line.
DEFAULT_INTERVAL_S = 0.5
# The station's own default (firmware.port.PortConfig.meter_stale_s; hal may not import
# firmware, so the value is repeated and a test keeps the two equal).
DEFAULT_STALE_S = 10.0
# An RS485 line's settings unless the URL says otherwise (docs/meters.md); the simulated
# meter server (hal.modbus.server.SerialPort) listens with the same ones.
DEFAULT_BAUD = 9600
DEFAULT_PARITY = "N"
DEFAULT_BYTESIZE = 8
DEFAULT_STOPBITS = 1
DEFAULT_UNIT = 1
# Unit identifiers, (lowest, highest): on a serial line 1..247 (Modbus over Serial Line V1.02,
# 2.2); on TCP 0..255 (Messaging on TCP/IP Implementation Guide V1.0b, 4.4.1.2).
RTU_UNITS = (1, 247)
TCP_UNITS = (0, 255)

_PARITIES = ("N", "E", "O")
_COMMON_KEYS = ("unit", "model", "timeout", "retries", "interval", "stale")
_RTU_KEYS = (*_COMMON_KEYS, "baud", "parity", "bytesize", "stopbits")


@dataclass(frozen=True, slots=True)
class MeterUrl:
    """A parsed meter URL."""

    url: str
    transport: str  # "tcp" | "rtu"
    host: str  # TCP host, or the serial device
    port: int  # TCP port (0 for RTU)
    unit: int
    model: str
    baud: int = DEFAULT_BAUD
    parity: str = DEFAULT_PARITY
    bytesize: int = DEFAULT_BYTESIZE
    stopbits: int = DEFAULT_STOPBITS
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    interval_s: float = DEFAULT_INTERVAL_S
    stale_s: float = DEFAULT_STALE_S

    @property
    def line_key(self) -> tuple[str, str, int]:
        """What identifies the bus: meters with the same key share one client."""
        return (self.transport, self.host, self.port)

    @property
    def serial_settings(self) -> tuple[int, str, int, int]:
        return (self.baud, self.parity, self.bytesize, self.stopbits)

    @property
    def where(self) -> str:
        if self.transport == "tcp":
            return f"{self.host}:{self.port}"
        return f"{self.host} {self.baud} {self.bytesize}{self.parity}{self.stopbits}"

    @property
    def name(self) -> str:
        return f"{self.model}@{self.where}#{self.unit}"

    def check_same_line(self, other: MeterUrl, other_is: str) -> None:
        """Refuse this meter (``BackendError``) if ``other``, on the same RS485 device, asks for
        other serial settings: one line runs at one speed and character format. ``other_is``
        says how ``other`` holds the device ("open as", "used as") in the message."""
        if self.serial_settings != other.serial_settings:
            raise BackendError(
                f"{self.url}: {self.host} is already {other_is} {other.where}; all meters "
                "on one RS485 line must use the same serial settings"
            )


def _seconds(key: str, text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise BackendError(f"{key}={text!r}: {exc}") from None
    if seconds <= 0:
        raise BackendError(f"{key}={text!r}: expected a duration > 0 (e.g. 1, 0.5, 500ms)")
    return seconds


def _integer(key: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise BackendError(f"{key}={text!r}: expected an integer {low}..{high}") from None
    if not low <= value <= high:
        raise BackendError(f"{key}={value}: out of range (allowed: {low}..{high})")
    return value


def parse_url(url: str) -> MeterUrl:
    """Check and split a ``modbus-tcp://`` or ``modbus-rtu://`` URL (``BackendError`` if bad)."""
    parts = urlsplit(url)
    if parts.scheme not in ("modbus-tcp", "modbus-rtu") or "://" not in url:
        raise BackendError(f"{url!r}: expected modbus-tcp://HOST:PORT?... or modbus-rtu:///DEV?...")
    tcp = parts.scheme == "modbus-tcp"
    allowed = _COMMON_KEYS if tcp else _RTU_KEYS
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in allowed:
            raise BackendError(f"{url}: unknown option {key!r} (allowed: {', '.join(allowed)})")
        if key in query:
            raise BackendError(f"{url}: {key} given twice")
        query[key] = value
    if "model" not in query or not query["model"]:
        raise BackendError(
            f"{url}: model= is missing (a shipped model such as sdm630, or a .yaml path)"
        )
    common: dict[str, Any] = {
        "url": url,
        "model": query["model"],
        "timeout_s": _seconds("timeout", query.get("timeout", str(DEFAULT_TIMEOUT_S))),
        "retries": _integer("retries", query.get("retries", str(DEFAULT_RETRIES)), 0, 10),
        "interval_s": _seconds("interval", query.get("interval", str(DEFAULT_INTERVAL_S))),
        "stale_s": _seconds("stale", query.get("stale", str(DEFAULT_STALE_S))),
    }
    unit = query.get("unit", str(DEFAULT_UNIT))
    if tcp:
        try:
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise BackendError(f"{url}: {exc}") from None
        if not host:
            raise BackendError(f"{url}: no host (modbus-tcp://HOST:PORT?unit=N&model=M)")
        return MeterUrl(
            transport="tcp",
            host=host,
            port=port or DEFAULT_TCP_PORT,
            unit=_integer("unit", unit, *TCP_UNITS),
            **common,
        )
    if parts.netloc or not parts.path or parts.path == "/":
        raise BackendError(f"{url}: expected modbus-rtu:///dev/DEVICE?... (three slashes)")
    parity = query.get("parity", DEFAULT_PARITY).upper()
    if parity not in _PARITIES:
        raise BackendError(f"parity={parity!r}: expected N, E or O")
    return MeterUrl(
        transport="rtu",
        host=parts.path,
        port=0,
        unit=_integer("unit", unit, *RTU_UNITS),
        baud=_integer("baud", query.get("baud", str(DEFAULT_BAUD)), 300, 4_000_000),
        parity=parity,
        bytesize=_integer("bytesize", query.get("bytesize", str(DEFAULT_BYTESIZE)), 7, 8),
        stopbits=_integer("stopbits", query.get("stopbits", str(DEFAULT_STOPBITS)), 1, 2),
        **common,
    )
