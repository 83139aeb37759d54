"""One bus of Modbus meters: its pymodbus client, its requests, and the task that polls it.

One job: a ``Line`` is one TCP server or one RS485 device with the meters on it. It owns the
pymodbus client (connecting, and reconnecting with a back-off, by itself), sends one read
request at a time, since a half-duplex line carries one transaction at a time (Modbus over
Serial Line V1.02, 2.2: one master, one transaction at a time), turns every way a request can
fail into a ``PollError``, and polls its meters in turn, handing each poll's quantities (or its
failure) to the meter (``hal.modbus.meter.ModbusMeter``). ``LinePool`` (and the module's
``POOL``) shares lines among the meters started on one event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from hal.modbus import codec
from hal.modbus.maps import Block, MeterMap
from hal.modbus.url import MeterUrl
from hal.tasks import cancel_and_wait

if TYPE_CHECKING:
    from hal.modbus.meter import ModbusMeter

__all__ = [
    "EXCEPTION_NAMES",
    "POOL",
    "RECONNECT_MAX_S",
    "Line",
    "LinePool",
    "PollError",
    "Polled",
    "quiet_pymodbus",
]

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


def quiet_pymodbus() -> None:
    """Raise pymodbus's log threshold to CRITICAL unless someone configured it.

    pymodbus logs an ERROR for every request that times out and a WARNING for every failed
    connect; against a dead meter polled twice a second that is the per-poll noise this
    backend replaces with one line per episode.
    """
    logger = logging.getLogger("pymodbus")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


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
        if meter.url.transport == "rtu":
            meter.url.check_same_line(self.url, "open as")
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
        await cancel_and_wait(task)
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
