"""The ``modbus-tcp://`` and ``modbus-rtu://`` meter backend: poll real meters, never block.

One job: keep the latest reading of each Modbus meter in memory for the station loop. A
``ModbusMeter`` is a HAL ``Meter`` (``latest()``, synchronous, no I/O) and a ``Service``
(``start()`` / ``stop()``): started, it joins a ``Line`` - one pymodbus client per TCP server
or RS485 device, shared by every meter on it and polling them in turn, since a half-duplex
line carries one request at a time (Modbus over Serial Line V1.02, 2.2: one master, one
transaction at a time). A line connects and reconnects by itself; a poll that times out,
returns an exception response, a short or garbled frame or absurd values publishes nothing,
and the meter ages into staleness (the station then counts the port at its full effective
offer). Each failure episode is logged once when it starts and once when it ends.

URLs::

    modbus-tcp://HOST[:PORT]?unit=N&model=M
    modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N&unit=N&model=M

Optional query keys: ``timeout`` (s per request, default 1), ``retries`` (extra tries of a
request while the meter is healthy, default 1), ``interval`` (s between polls of a line,
default 0.5), ``stale`` (s without an answer before ``is_stale``, default 10); RTU also
``bytesize`` (8), ``stopbits`` (1). ``model`` is a map name in configs/meters/ or a .yaml path.

Lines are shared through ``POOL``, a module-level, reference-counted table keyed by the
running event loop and the bus (TCP host:port, or serial device): the first meter started on
a bus opens it, the last one stopped closes it. ``open_meter`` accepts ``pool=`` to use
another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from hal.interfaces import MeterReading
from hal.modbus import codec
from hal.modbus.maps import Block, MapError, MeterMap, load_map
from hal.modbus.values import AbsurdReading, to_reading
from hal.registry import BackendError

__all__ = [
    "POOL",
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

DEFAULT_TCP_PORT = 502  # MODBUS Messaging on TCP/IP Implementation Guide V1.0b, 4.1
DEFAULT_TIMEOUT_S = 1.0
DEFAULT_RETRIES = 1
# Twice a second: the loop ticks every 50 ms, but what the readings feed (confirming a lowered
# offer within the 5 s window, demand windows of 15 s and more) needs a fresh reading within
# a second; and an SDM630 read at 9600 baud takes ~0.2 s, so two meters fit on one RS485 line.
DEFAULT_INTERVAL_S = 0.5
DEFAULT_STALE_S = 10.0  # the station's own default (firmware.port.PortConfig.meter_stale_s)
# A line that cannot connect retries after one poll interval, doubling up to 5 s: an unplugged
# adapter or a rebooting gateway is found again within seconds, without a connect attempt on
# every poll while it is away.
RECONNECT_MAX_S = 5.0
# pymodbus's own timeout is set this much above ours, so that ours decides.
_GUARD_S = 1.0

# MODBUS Application Protocol Specification V1.1b3, 7 "MODBUS Exception Responses".
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

_PARITIES = ("N", "E", "O")
_COMMON_KEYS = ("unit", "model", "timeout", "retries", "interval", "stale")
_RTU_KEYS = (*_COMMON_KEYS, "baud", "parity", "bytesize", "stopbits")


def quiet_pymodbus() -> None:
    """Raise pymodbus's log threshold to CRITICAL unless someone configured it.

    pymodbus logs an ERROR for every request that times out and a WARNING for every failed
    connect; against a dead meter polled twice a second that is the per-poll noise this
    backend replaces with one line per episode.
    """
    logger = logging.getLogger("pymodbus")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


# ---- URLs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeterUrl:
    """A parsed meter URL."""

    url: str
    transport: str  # "tcp" | "rtu"
    host: str  # TCP host, or the serial device
    port: int  # TCP port (0 for RTU)
    unit: int
    model: str
    baud: int = 9600
    parity: str = "N"
    bytesize: int = 8
    stopbits: int = 1
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


def _seconds(key: str, text: str) -> float:
    value = text.strip().lower()
    scale = 1.0
    if value.endswith("ms"):
        value, scale = value[:-2], 0.001
    elif value.endswith("s"):
        value = value[:-1]
    try:
        seconds = float(value) * scale
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise BackendError(f"{key}={text!r}: expected seconds > 0 (e.g. 1, 0.5, 500ms)")
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
        raise BackendError(f"{url}: model= is missing (a map in configs/meters/ or a .yaml path)")
    common: dict[str, Any] = {
        "url": url,
        "model": query["model"],
        "timeout_s": _seconds("timeout", query.get("timeout", str(DEFAULT_TIMEOUT_S))),
        "retries": _integer("retries", query.get("retries", str(DEFAULT_RETRIES)), 0, 10),
        "interval_s": _seconds("interval", query.get("interval", str(DEFAULT_INTERVAL_S))),
        "stale_s": _seconds("stale", query.get("stale", str(DEFAULT_STALE_S))),
    }
    if tcp:
        try:
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise BackendError(f"{url}: {exc}") from None
        if not host:
            raise BackendError(f"{url}: no host (modbus-tcp://HOST:PORT?unit=N&model=M)")
        # TCP unit identifiers 0..255 (Messaging on TCP/IP Implementation Guide V1.0b, 4.4.1.2)
        unit = _integer("unit", query.get("unit", "1"), 0, 255)
        return MeterUrl(
            transport="tcp", host=host, port=port or DEFAULT_TCP_PORT, unit=unit, **common
        )
    if parts.netloc or not parts.path or parts.path == "/":
        raise BackendError(f"{url}: expected modbus-rtu:///dev/DEVICE?... (three slashes)")
    parity = query.get("parity", "N").upper()
    if parity not in _PARITIES:
        raise BackendError(f"parity={parity!r}: expected N, E or O")
    return MeterUrl(
        transport="rtu",
        host=parts.path,
        port=0,
        # Serial line addresses 1..247 (Modbus over Serial Line V1.02, 2.2)
        unit=_integer("unit", query.get("unit", "1"), 1, 247),
        baud=_integer("baud", query.get("baud", "9600"), 300, 4_000_000),
        parity=parity,
        bytesize=_integer("bytesize", query.get("bytesize", "8"), 7, 8),
        stopbits=_integer("stopbits", query.get("stopbits", "1"), 1, 2),
        **common,
    )


# ---- one bus -------------------------------------------------------------------------------


class PollError(Exception):
    """A poll that produced no reading. ``reset``: the connection is suspect (a timeout, a
    garbled or mismatched frame) and is closed before the next request; ``connect``: the bus
    itself could not be opened (every meter on it fails this round)."""

    def __init__(self, reason: str, *, reset: bool = False, connect: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reset = reset
        self.connect = connect


class Polled(NamedTuple):
    """One meter's quantities from one poll, and when its currents were read."""

    values: dict[str, float | None]
    # The clock just before the request holding the first current register was sent (the
    # oldest current of the poll): a poll of several requests takes time, and a reading is
    # as old as its currents, not as its last request.
    current_at: float


def _holds_current(block: Block) -> bool:
    return any(q.name.startswith("amps_") for q in block.quantities)


class Line:
    """One bus (a TCP server or an RS485 device), its pymodbus client and its meters."""

    def __init__(self, url: MeterUrl) -> None:
        self.url = url
        self.meters: list[ModbusMeter] = []
        self.loop: asyncio.AbstractEventLoop | None = None  # where its polling task runs
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._backoff_s: float | None = None  # while the bus cannot be opened

    def usable_on(self, loop: asyncio.AbstractEventLoop) -> bool:
        """This line can take a meter on ``loop``: it runs there and its task is not dead (a
        line left by a loop that ended, or whose task was cancelled, would never poll)."""
        return self.loop is loop and self._task is not None and not self._task.done()

    # --- membership ---------------------------------------------------------------------

    def add(self, meter: ModbusMeter) -> None:
        if meter.url.transport == "rtu" and meter.url.serial_settings != self.url.serial_settings:
            raise BackendError(
                f"{meter.url.url}: {self.url.host} is already open as {self.url.where}; "
                "all meters on one RS485 line must use the same serial settings"
            )
        self.meters.append(meter)
        if self._task is None:
            self.loop = asyncio.get_running_loop()
            self._task = self.loop.create_task(self._run(), name=f"modbus line {self.url.where}")

    async def remove(self, meter: ModbusMeter) -> None:
        if meter in self.meters:
            self.meters.remove(meter)
        if not self.meters:
            await self.close()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._reset()

    # --- requests -----------------------------------------------------------------------

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        # pymodbus's own retries and reconnects are off: this class bounds retries and paces
        # reconnects itself, and closes a suspect connection so no late answer is mistaken for
        # the next one's (RTU frames carry no transaction id). Each request's own timeout is
        # ours (``read``); pymodbus's is only a backstop above every meter's on the line.
        timeout_s = max((m.url.timeout_s for m in self.meters), default=self.url.timeout_s)
        timeout_s += _GUARD_S
        if self.url.transport == "tcp":
            return AsyncModbusTcpClient(
                self.url.host, port=self.url.port, timeout=timeout_s, retries=0, reconnect_delay=0
            )
        return AsyncModbusSerialClient(
            self.url.host,
            baudrate=self.url.baud,
            parity=self.url.parity,
            bytesize=self.url.bytesize,
            stopbits=self.url.stopbits,
            timeout=timeout_s,
            retries=0,
            reconnect_delay=0,
        )

    def _reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _connected(self, timeout_s: float) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        if self._client is not None and self._client.connected:
            return self._client
        self._reset()
        client = self._make_client()
        try:
            ok = await asyncio.wait_for(client.connect(), timeout_s)
        except (TimeoutError, OSError) as exc:
            ok = False
            detail = f": {exc}" if str(exc) else ""
        except BaseException:
            client.close()  # cancelled (stop() during a connect) or worse: leave nothing open
            raise
        else:
            detail = ""
        if not ok:
            client.close()
            what = "connect to" if self.url.transport == "tcp" else "open"
            raise PollError(f"cannot {what} {self.url.where}{detail}", connect=True)
        self._client = client
        return client

    async def read(self, unit: int, block: Block, timeout_s: float) -> list[int]:
        """One read request; its registers, or PollError."""
        client = await self._connected(timeout_s)
        what = (
            f"read of {block.count} {block.function} registers at 0x{block.address:04X} "
            f"from unit {unit}"
        )
        reader = (
            client.read_input_registers
            if block.function == "input"
            else client.read_holding_registers
        )
        try:
            response = await asyncio.wait_for(
                reader(block.address, count=block.count, device_id=unit), timeout_s
            )
        except TimeoutError as exc:
            raise PollError(f"no answer within {timeout_s:g} s to a {what}", reset=True) from exc
        except ConnectionException as exc:
            raise PollError(f"connection lost during a {what}", reset=True) from exc
        except ModbusException as exc:
            text = str(exc)
            if "No response" in text:
                raise PollError(
                    f"no answer within {timeout_s:g} s to a {what}", reset=True
                ) from exc
            raise PollError(f"bad answer to a {what}: {text}", reset=True) from exc
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            name = EXCEPTION_NAMES.get(code, "unknown")
            raise PollError(f"exception response {code} ({name}) to a {what}")
        registers = getattr(response, "registers", None)
        if response.function_code != block.function_code or registers is None:
            raise PollError(
                f"answer with function {response.function_code} to a {what}", reset=True
            )
        if len(registers) != block.count:
            raise PollError(f"short answer: {len(registers)} registers to a {what}", reset=True)
        return list(registers)

    async def poll(
        self,
        unit: int,
        meter_map: MeterMap,
        timeout_s: float,
        retries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> Polled:
        """Every block of one meter, each tried at most ``1 + retries`` times; ``clock`` is
        read just before (each try of) the first request that holds a current."""
        values: dict[str, float | None] = {}
        current_at: float | None = None
        for block in meter_map.blocks:
            stamp = current_at is None and _holds_current(block)
            for attempt in range(retries + 1):
                if stamp:
                    current_at = clock()
                try:
                    registers = await self.read(unit, block, timeout_s)
                    break
                except PollError as exc:
                    if exc.reset:
                        self._reset()
                    # an exception response is the meter's considered answer: asking again
                    # would get the same one; a connect failure is retried by the line
                    if attempt == retries or not exc.reset or exc.connect:
                        raise
            values.update(codec.decode(block, registers))
        return Polled(values, clock() if current_at is None else current_at)

    # --- the polling task ---------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.meters:
            started = loop.time()
            delay = min(m.url.interval_s for m in self.meters)
            for meter in list(self.meters):
                if meter not in self.meters:
                    continue
                try:
                    polled = await self.poll(
                        meter.url.unit,
                        meter.map,
                        meter.url.timeout_s,
                        meter.url.retries if meter.healthy else 0,
                        meter.clock,
                    )
                    self._backoff_s = None
                    meter.poll_done(polled.values, polled.current_at)
                except PollError as exc:
                    meter.poll_failed(exc.reason)
                    if exc.connect:
                        for other in self.meters:
                            if other is not meter:
                                other.poll_failed(exc.reason)
                        delay = max(delay, self._backoff_s or delay)
                        self._backoff_s = min(2 * delay, RECONNECT_MAX_S)
                        break
                except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # a library surprise must not end the polling
                    self._reset()
                    meter.poll_failed(f"unexpected {type(exc).__name__}: {exc}")
            await asyncio.sleep(max(0.0, started + delay - loop.time()))


class LinePool:
    """Lines by (running event loop, bus), reference-counted by the meters started on them.

    A line found under the key is used only if it runs on this very loop and its task is
    alive; otherwise (a line left by a loop that ended without stopping its meters, a task
    cancelled from outside) it is treated as absent and replaced by a new one."""

    def __init__(self) -> None:
        self._lines: dict[tuple[int, tuple[str, str, int]], Line] = {}

    def acquire(self, meter: ModbusMeter) -> Line:
        loop = asyncio.get_running_loop()
        for key, old in list(self._lines.items()):
            if old.loop is not None and old.loop.is_closed():
                del self._lines[key]  # nothing can run or close it any more
        key = (id(loop), meter.url.line_key)
        line = self._lines.get(key)
        if line is None or not line.usable_on(loop):
            line = self._lines[key] = Line(meter.url)
        line.add(meter)
        return line

    async def release(self, meter: ModbusMeter, line: Line) -> None:
        await line.remove(meter)
        if not line.meters:
            for key, value in list(self._lines.items()):
                if value is line:
                    del self._lines[key]

    def __len__(self) -> int:
        return len(self._lines)


POOL = LinePool()


# ---- one meter ------------------------------------------------------------------------------


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


def open_meter(url: str, **context: Any) -> ModbusMeter:
    """The registry's entry point: ``ModbusMeter`` for a URL (``BackendError`` if it is bad).

    Context: ``clock`` (station seconds to stamp readings with; default time.monotonic),
    ``pool`` (a ``LinePool``; default the module's ``POOL``).
    """
    parsed = parse_url(url)
    try:
        meter_map = load_map(parsed.model)
    except MapError as exc:
        raise BackendError(str(exc)) from exc
    if parsed.transport == "rtu":
        for other in _OPEN_RTU:
            if (
                other.url.host == parsed.host
                and other.url.serial_settings != parsed.serial_settings
            ):
                raise BackendError(
                    f"{url}: {parsed.host} is already used as {other.url.where}; all meters "
                    "on one RS485 line must use the same serial settings"
                )
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
    parsed = parse_url(url)
    try:
        meter_map = load_map(parsed.model)
    except MapError as exc:
        raise BackendError(str(exc)) from exc
    timeout = parsed.timeout_s if timeout_s is None else timeout_s
    # The line's client takes its backstop timeout from its URL: the requested one, not the
    # URL's, or pymodbus would give up first.
    line = Line(replace(parsed, timeout_s=timeout))
    try:
        polled = await line.poll(parsed.unit, meter_map, timeout, parsed.retries)
    finally:
        await line.close()
    return meter_map, polled.values
