"""The ``serial://`` URL's link settings, and the checks they must pass before a board opens.

This module's one job is the configuration of the host end of the link: parse and check the
URL's query parameters (``LinkSettings``, ``parse_url``; docs/serial-protocol.md, "Backend
URL"), and say whether a baud rate can carry the heartbeat-and-poll schedule
(``check_line_capacity``; docs, "Physical layer"). It does no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hal.durations import parse_duration
from hal.registry import BackendError
from hal.serial.protocol import (
    GAP_S,
    LOW_NONE,
    MIN_WATCHDOG_S,
    Ack,
    AckCode,
    Heartbeat,
    Output,
    PortStatus,
    ReadStatus,
    Status,
    encode,
)

__all__ = [
    "BITS_PER_BYTE",
    "HEARTBEAT_BYTES",
    "MAX_SCHEDULE_SHARE",
    "MAX_WATCHDOG_S",
    "RENEW_PERIODS",
    "WATCHDOG_MARGIN_S",
    "WELD_DETECT_DEFAULT_S",
    "LinkSettings",
    "check_line_capacity",
    "parse_url",
    "schedule_bytes",
]

# Heartbeats are sent only while a status was received within this many heartbeat periods.
# It bounds how long a board the host cannot hear stays armed (docs: "Board lost").
RENEW_PERIODS = 3
# Added to "last heartbeat on the wire + watchdog" before the host trusts that the board has
# opened: the board's own watchdog tick and frame handling (design margin).
WATCHDOG_MARGIN_S = 0.05
# The port machine's default weld detection time (firmware.port.PortConfig.weld_detect_s; this
# backend may not import firmware, so the value is repeated and a test keeps the two equal):
# a "maybe closed" window longer than this makes a lost board look like a weld (docs).
WELD_DETECT_DEFAULT_S = 0.5
# 8N1: a start bit, 8 data bits and a stop bit per byte (docs: "Physical layer").
BITS_PER_BYTE = 10
# The heartbeat-and-poll schedule may fill at most this share of the line in either direction;
# the rest is for events, commands and retries (design margin).
MAX_SCHEDULE_SHARE = 0.5
# The longest watchdog time the host asks for (docs: "Backend URL"); the heartbeat's u16 of
# milliseconds could carry 65.5 s.
MAX_WATCHDOG_S = 60.0

# A heartbeat frame's length on the line (its payload is fixed: a u16 timeout).
HEARTBEAT_BYTES = len(encode(Heartbeat(1), 0))


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """The URL's query parameters (docs/serial-protocol.md, "Backend URL")."""

    device: str
    baud: int = 115200
    heartbeat_s: float = 0.1  # heartbeat and status poll period
    watchdog_s: float = 0.5  # asked of the board in every heartbeat
    lost_s: float = 0.5  # no status for this long: board lost
    ack_s: float = 0.05  # a command not acknowledged within this is sent again
    retries: int = 5  # resends of one command before giving up on it
    gap_s: float = GAP_S  # an idle line ends a partial frame (it will never complete)
    reopen_s: float = 1.0  # retry period for a device that cannot be opened
    weld_detect_s: float = WELD_DETECT_DEFAULT_S  # the station port machine's weld_detect_s

    @property
    def renew_s(self) -> float:
        return RENEW_PERIODS * self.heartbeat_s

    @property
    def byte_s(self) -> float:
        """Line time of one byte at the configured baud (8N1)."""
        return BITS_PER_BYTE / self.baud

    @property
    def maybe_closed_window_s(self) -> float:
        """The longest time a lost board's contactor reads "maybe closed" after the port
        machines see the board lost (docs/serial-protocol.md, "Board lost")."""
        return self.renew_s + self.watchdog_s + WATCHDOG_MARGIN_S - self.lost_s


def _seconds(name: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise BackendError(f"serial:// {name}={text!r}: {exc}") from None


def parse_url(url: str) -> LinkSettings:
    """``serial:///dev/ttyAMA0?baud=115200&heartbeat=100ms&watchdog=500ms&lost=500ms...``

    The line's capacity for the heartbeat schedule is checked when the board is opened
    (``SerialBoard``), which knows the port count.
    """
    parts = urlsplit(url)
    if parts.scheme != "serial" or not parts.path or parts.netloc:
        raise BackendError(f"{url!r}: expected serial:///path/to/device[?baud=115200&...]")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    known = {"baud", "heartbeat", "watchdog", "lost", "ack", "retries", "gap", "weld_detect"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise BackendError(
            f"{url!r}: unknown parameter {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
    kwargs: dict[str, Any] = {"device": parts.path}
    if "baud" in query:
        if not query["baud"].isdigit() or int(query["baud"]) <= 0:
            raise BackendError(f"{url!r}: baud={query['baud']!r} is not a positive integer")
        kwargs["baud"] = int(query["baud"])
    if "retries" in query:
        if not query["retries"].isdigit():
            raise BackendError(f"{url!r}: retries={query['retries']!r} is not an integer >= 0")
        kwargs["retries"] = int(query["retries"])
    for key, attr in (("heartbeat", "heartbeat_s"), ("watchdog", "watchdog_s"), ("ack", "ack_s")):
        if key in query:
            kwargs[attr] = _seconds(key, query[key])
    if "gap" in query:
        kwargs["gap_s"] = _seconds("gap", query["gap"])
    if "weld_detect" in query:
        kwargs["weld_detect_s"] = _seconds("weld_detect", query["weld_detect"])
    if "lost" in query:
        kwargs["lost_s"] = _seconds("lost", query["lost"])
    elif "watchdog" in query:
        kwargs["lost_s"] = kwargs["watchdog_s"]  # see the docs: keeps the weld window short
    settings = LinkSettings(**kwargs)
    if not MIN_WATCHDOG_S <= settings.watchdog_s <= MAX_WATCHDOG_S:
        # A board clamps a shorter timeout up to MIN_WATCHDOG_S (docs: "What a board must
        # do"): asking for less would only mislead whoever reads the URL.
        raise BackendError(
            f"{url!r}: watchdog must be within {MIN_WATCHDOG_S * 1000:g}ms..{MAX_WATCHDOG_S:g}s"
        )
    if not 0.01 <= settings.heartbeat_s <= settings.watchdog_s / RENEW_PERIODS:
        raise BackendError(
            f"{url!r}: heartbeat must be within 10ms..watchdog/{RENEW_PERIODS} "
            "(several heartbeats per watchdog time)"
        )
    if not settings.renew_s < settings.lost_s:
        raise BackendError(f"{url!r}: lost must be longer than {RENEW_PERIODS} heartbeats")
    if not 0.001 <= settings.ack_s <= 1.0 or not 0.001 <= settings.gap_s <= 1.0:
        raise BackendError(f"{url!r}: ack and gap must be within 1ms..1s")
    if not 0.01 <= settings.weld_detect_s <= 60.0:
        raise BackendError(f"{url!r}: weld_detect must be within 10ms..60s")
    return settings


def schedule_bytes(ports: int) -> tuple[int, int]:
    """Bytes one heartbeat period puts on the line (host -> board, board -> host): a
    heartbeat and a status request out; their acknowledgement and a status back."""
    out = HEARTBEAT_BYTES + len(encode(ReadStatus(), 0))
    idle = PortStatus(0, LOW_NONE, Output.STEADY, 0, False, False, False, True, 0)
    status = Status(0, False, True, 0, 0, 0, (idle,) * ports)
    back = len(encode(Ack(int(AckCode.OK)), 0)) + len(encode(status, 0))
    return out, back


def check_line_capacity(settings: LinkSettings, ports: int) -> None:
    """Refuse a baud rate too slow for the heartbeat-and-poll schedule (``BackendError``)."""
    need = max(schedule_bytes(ports))
    capacity = settings.heartbeat_s / settings.byte_s  # bytes per heartbeat period
    if need <= MAX_SCHEDULE_SHARE * capacity:
        return
    least = math.ceil(need * BITS_PER_BYTE / (MAX_SCHEDULE_SHARE * settings.heartbeat_s))
    raise BackendError(
        f"serial://{settings.device}: baud={settings.baud} is too slow for a heartbeat and a "
        f"{ports}-port status every {settings.heartbeat_s * 1000:g} ms ({need} bytes of "
        f"{capacity:.0f} per period; at most {MAX_SCHEDULE_SHARE:.0%} of the line): use "
        f"baud >= {least} or a longer heartbeat"
    )
