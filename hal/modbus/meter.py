"""The ``modbus-tcp://`` and ``modbus-rtu://`` meter backend: poll real meters, never block.

One job: keep the latest reading of each Modbus meter in memory for the station loop. A
``ModbusMeter`` is a HAL ``Meter`` (``latest()``, synchronous, no I/O) and a ``Service``
(``start()`` / ``stop()``): started, it joins a ``Line`` (``hal.modbus.line``: one pymodbus
client per TCP server or RS485 device, shared by every meter on it and polling them in turn).
A poll that times out, returns an exception response, a short or garbled frame or absurd values
publishes nothing, and the meter ages into staleness (the station then counts the port at its
full effective offer). Each failure episode is logged once when it starts and once when it
ends. ``open_meter`` is the registry's entry point; ``read_once`` is ``ampshare meter probe``.

URLs (``hal.modbus.url``)::

    modbus-tcp://HOST[:PORT]?unit=N&model=M
    modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N&unit=N&model=M

Optional query keys: ``timeout`` (s per request, default 1), ``retries`` (extra tries of a
request while the meter is healthy, default 1), ``interval`` (s between polls of a line,
default 0.5), ``stale`` (s without an answer before ``is_stale``, default 10); RTU also
``bytesize`` (8), ``stopbits`` (1). ``model`` is a shipped map (hal/modbus/meters/) or a .yaml path.

Lines are shared through ``POOL``, a module-level, reference-counted table keyed by the
running event loop and the bus (TCP host:port, or serial device): the first meter started on
a bus opens it, the last one stopped closes it. ``open_meter`` accepts ``pool=`` to use
another.

The names that lived here before the split (``parse_url``, ``MeterUrl``, ``Line``,
``LinePool``, ``POOL``, ``PollError``...) are still importable from here.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hal.interfaces import MeterReading
from hal.modbus.line import (
    EXCEPTION_NAMES,
    POOL,
    RECONNECT_MAX_S,
    Line,
    LinePool,
    Polled,
    PollError,
    quiet_pymodbus,
)
from hal.modbus.maps import MapError, MeterMap, load_map
from hal.modbus.url import (
    DEFAULT_INTERVAL_S,
    DEFAULT_RETRIES,
    DEFAULT_STALE_S,
    DEFAULT_TCP_PORT,
    DEFAULT_TIMEOUT_S,
    MeterUrl,
    parse_url,
)
from hal.modbus.values import AbsurdReading, to_reading
from hal.registry import BackendError

__all__ = [
    "DEFAULT_INTERVAL_S",
    "DEFAULT_RETRIES",
    "DEFAULT_STALE_S",
    "DEFAULT_TCP_PORT",
    "DEFAULT_TIMEOUT_S",
    "EXCEPTION_NAMES",
    "POOL",
    "RECONNECT_MAX_S",
    "Line",
    "LinePool",
    "MeterUrl",
    "ModbusMeter",
    "PollError",
    "Polled",
    "open_meter",
    "parse_url",
    "quiet_pymodbus",
    "read_once",
]

log = logging.getLogger(__name__)


class ModbusMeter:
    """One Modbus meter: a HAL ``Meter`` and ``Service`` (see the module docstring)."""

    def __init__(
        self,
        url: MeterUrl,
        meter_map: MeterMap,
        *,
        clock: Callable[[], float] = time.monotonic,
        pool: LinePool = POOL,
    ) -> None:
        self.url = url
        self.map = meter_map
        # The meter's own import energy register (hal.interfaces.Meter): if its map reads one.
        self.has_energy_register = any(q.name == "kwh_import" for q in meter_map.quantities)
        self.clock = clock
        self.pool = pool
        self.name = url.name
        self.values: dict[str, float | None] = {}  # the quantities of the latest good poll
        self.polls = 0
        self.failures = 0  # in the present episode
        self.last_error: str | None = None
        self._reading: MeterReading | None = None
        self._line: Line | None = None
        self._episode_start: float | None = None  # station time of the episode's first failure

    # --- Meter ------------------------------------------------------------------------

    def latest(self) -> MeterReading | None:
        return self._reading

    @property
    def healthy(self) -> bool:
        """The last poll succeeded (or none failed yet)."""
        return self._episode_start is None

    def is_stale(self, now: float | None = None) -> bool:
        """No good reading within ``stale_s`` (station seconds) of ``now``."""
        if self._reading is None:
            return True
        t = self.clock() if now is None else now
        return t - self._reading.timestamp > self.url.stale_s

    # --- Service -------------------------------------------------------------------------

    async def start(self) -> None:
        quiet_pymodbus()
        if self._line is None:
            self._line = self.pool.acquire(self)

    async def stop(self) -> None:
        line, self._line = self._line, None
        if line is not None:
            await self.pool.release(self, line)

    # --- what the line reports --------------------------------------------------------------

    def poll_done(self, values: dict[str, float | None], current_at: float | None = None) -> None:
        """A poll's quantities; ``current_at``: when its currents were read (default now)."""
        try:
            reading = to_reading(
                self.map, values, self.clock() if current_at is None else current_at
            )
        except AbsurdReading as exc:
            self.poll_failed(f"absurd values refused: {exc}")
            return
        self.polls += 1
        self.values = values
        self._reading = reading
        if self._episode_start is not None:
            lasted = self.clock() - self._episode_start
            log.info(
                "meter %s answering again after %d failed polls (%.1f s)",
                self.name,
                self.failures,
                lasted,
            )
            self._episode_start = None
        self.failures = 0
        self.last_error = None

    def poll_failed(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        if self._episode_start is None:
            self._episode_start = self.clock()
            log.warning(
                "meter %s: %s; no new reading until it answers: the last one keeps its time "
                "and ages (the station stops using it after its port_machine meter_stale_s); "
                "retrying, logged once",
                self.name,
                reason,
            )
        else:
            log.debug("meter %s: still failing (%d): %s", self.name, self.failures, reason)


# Meters opened on RS485 devices, to refuse a second meter asking other serial settings.
_OPEN_RTU: weakref.WeakSet[ModbusMeter] = weakref.WeakSet()


def _url_and_map(url: str) -> tuple[MeterUrl, MeterMap]:
    """The parsed URL and its model's register map (``BackendError`` for either)."""
    parsed = parse_url(url)
    try:
        return parsed, load_map(parsed.model)
    except MapError as exc:
        raise BackendError(str(exc)) from exc


def open_meter(url: str, **context: Any) -> ModbusMeter:
    """The registry's entry point: ``ModbusMeter`` for a URL (``BackendError`` if it is bad).

    Context: ``clock`` (station seconds to stamp readings with; default time.monotonic),
    ``pool`` (a ``LinePool``; default the module's ``POOL``).
    """
    parsed, meter_map = _url_and_map(url)
    if parsed.transport == "rtu":
        for other in _OPEN_RTU:
            if other.url.host == parsed.host:
                parsed.check_same_line(other.url, "used as")
    clock = context.get("clock")
    pool = context.get("pool")
    meter = ModbusMeter(
        parsed,
        meter_map,
        clock=time.monotonic if clock is None else clock,
        pool=POOL if pool is None else pool,
    )
    if parsed.transport == "rtu":
        _OPEN_RTU.add(meter)
    return meter


async def read_once(url: str, timeout_s: float | None = None) -> tuple[MeterMap, dict[str, Any]]:
    """Read every quantity of a meter once, on a line of its own (``ampshare meter probe``).

    Raises ``BackendError`` for a bad URL or map, ``PollError`` if the meter does not answer
    (or answers with an exception or a garbled frame). The values are not judged: that is
    ``hal.modbus.values.to_reading``'s job, so a probe can show what an absurd meter says.
    """
    quiet_pymodbus()
    parsed, meter_map = _url_and_map(url)
    timeout = parsed.timeout_s if timeout_s is None else timeout_s
    # The line's client takes its backstop timeout from its URL: the requested one, not the
    # URL's, or pymodbus would give up first.
    line = Line(replace(parsed, timeout_s=timeout))
    try:
        polled = await line.poll(parsed.unit, meter_map, timeout, parsed.retries)
    finally:
        await line.close()
    return meter_map, polled.values
