"""Simulated Modbus meters served by pymodbus's own server, over TCP or a serial line.

One job: answer Modbus reads the way a meter of a given model would, from values a test, the
simulator or ``ampshare meter serve`` sets. Each unit's registers are encoded with the same
construct declaration the backend decodes with (``hal.modbus.codec``), laid out per the model's
map; reads outside the map's register span get the exception response a real meter gives
(illegal data address). Knobs for fault tests: ``delay_s`` (answer late) and ``exception``
(answer every read of a unit with that exception code).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from hal.interfaces import MeterReading
from hal.listen import cannot_listen
from hal.modbus import codec
from hal.modbus.line import quiet_pymodbus
from hal.modbus.maps import FUNCTIONS, MeterMap, load_map
from hal.modbus.url import (
    DEFAULT_BAUD,
    DEFAULT_BYTESIZE,
    DEFAULT_PARITY,
    DEFAULT_STOPBITS,
    RTU_UNITS,
)

__all__ = ["MeterServer", "SerialPort"]

NOMINAL_VOLTS = 230.0  # IEC 60038 nominal L-N voltage, the default a served meter shows
NOMINAL_HZ = 50.0


@dataclass(frozen=True, slots=True)
class SerialPort:
    """Where an RTU server listens: a serial device and its settings."""

    device: str
    baud: int = DEFAULT_BAUD
    parity: str = DEFAULT_PARITY
    bytesize: int = DEFAULT_BYTESIZE
    stopbits: int = DEFAULT_STOPBITS


class MeterServer:
    """Units of one meter model on one Modbus TCP port (or one serial line)."""

    def __init__(
        self,
        model: str | MeterMap,
        units: Iterable[int] = (1,),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        serial: SerialPort | None = None,
    ) -> None:
        self.map = load_map(model) if isinstance(model, str) else model
        self.units = tuple(units)
        if not self.units or len(set(self.units)) != len(self.units):
            raise ValueError(f"units must be distinct and at least one: {self.units}")
        low, high = RTU_UNITS  # a serial line's addresses, which TCP gateways also use
        for unit in self.units:
            if not low <= unit <= high:
                raise ValueError(f"unit {unit} out of range ({low}..{high})")
        self.host = host
        self.port = port
        self.serial = serial
        self.delay_s = 0.0  # answer every read this late
        self.exception: dict[int, int] = {}  # unit -> exception code to answer with
        self.requests = 0
        # The register span of each function the map uses: [first, end).
        self._spans: dict[int, tuple[int, int]] = {}
        for block in self.map.blocks:
            fc = block.function_code
            lo, hi = self._spans.get(fc, (block.address, block.address + block.count))
            self._spans[fc] = (min(lo, block.address), max(hi, block.address + block.count))
        self._values: dict[int, dict[str, float | None]] = {}
        self._images: dict[int, dict[int, list[int]]] = {}
        for unit in self.units:
            self._images[unit] = {fc: [0] * (hi - lo) for fc, (lo, hi) in self._spans.items()}
            self.set(unit)
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    # --- values ---------------------------------------------------------------------------

    def set(
        self,
        unit: int,
        *,
        amps: float | Sequence[float] = 0.0,
        volts: float | Sequence[float] = NOMINAL_VOLTS,
        watts: float | None = None,
        kwh_import: float = 0.0,
        kwh_export: float = 0.0,
        hz: float = NOMINAL_HZ,
    ) -> dict[str, float | None]:
        """Serve these figures (per-phase power V x A at unity power factor unless ``watts``
        is given, spread over the phases by their current); returns the quantities served."""
        phases = self.map.phases
        a = _per_phase(amps, phases)
        v = _per_phase(volts, phases)
        per_phase = [x * y for x, y in zip(a, v, strict=True)]
        if watts is not None:
            total_a = sum(a)
            per_phase = [watts * x / total_a if total_a else watts / phases for x in a]
        values: dict[str, float | None] = {"kwh_import": kwh_import, "kwh_export": kwh_export}
        values["hz"] = hz
        values["watts"] = sum(per_phase) if watts is None else watts
        for n in range(phases):
            values[f"amps_l{n + 1}"] = a[n]
            values[f"volts_l{n + 1}"] = v[n]
            values[f"watts_l{n + 1}"] = per_phase[n]
        return self.set_values(unit, values)

    def set_reading(self, unit: int, reading: MeterReading) -> dict[str, float | None]:
        """Serve what a HAL meter reads (the simulator's port meters)."""
        return self.set(
            unit,
            amps=reading.amps or 0.0,
            # a single-phase reading's voltage is on every phase of a three-phase meter
            volts=reading.volts[0] if len(reading.volts) == 1 else reading.volts or NOMINAL_VOLTS,
            watts=reading.power_w,
            kwh_import=reading.energy_wh / 1000.0,
        )

    def set_values(self, unit: int, values: Mapping[str, float | None]) -> dict[str, float | None]:
        """Serve these quantities (names of the map; others are ignored, missing ones kept).

        Raises ``ValueError`` for a value the map's type cannot hold (and changes nothing).
        """
        current = dict(self._values.get(unit, {}))
        current.update({k: v for k, v in values.items() if k in self.map.by_name})
        image = self._images[unit]
        encoded = [(block, codec.encode(block, current)) for block in self.map.blocks]
        for block, words in encoded:
            lo, _ = self._spans[block.function_code]
            start = block.address - lo
            image[block.function_code][start : start + block.count] = words
        self._values[unit] = current
        return {q.name: current.get(q.name) for q in self.map.quantities}

    def set_registers(self, unit: int, function: str, address: int, words: Sequence[int]) -> None:
        """Overwrite raw registers (to serve what no encoder would: NaN patterns, garbage)."""
        fc = FUNCTIONS[function]
        lo, hi = self._spans[fc]
        if not (lo <= address and address + len(words) <= hi):
            raise ValueError(f"0x{address:04X}+{len(words)} is outside 0x{lo:04X}..0x{hi - 1:04X}")
        self._images[unit][fc][address - lo : address - lo + len(words)] = list(words)

    def values(self, unit: int) -> dict[str, float | None]:
        """The quantities a unit serves."""
        return {q.name: self._values[unit].get(q.name) for q in self.map.quantities}

    # --- serving ------------------------------------------------------------------------

    async def _action(
        self,
        unit: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this on every access: copy the unit's image into its registers."""
        del address, count
        self.requests += 1
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        code = self.exception.get(unit)
        if code is not None:
            return ExcCodes(code)
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # a meter's measurements are read-only
        span = self._spans.get(function_code)
        image = self._images[unit].get(function_code)
        if span is not None and image is not None and start_address == span[0]:
            registers[: len(image)] = image
        return None

    def _device(self, unit: int) -> SimDevice:
        holding, inputs = FUNCTIONS["holding"], FUNCTIONS["input"]
        blocks: dict[int, list[SimData]] = {}
        for fc in (holding, inputs):
            span = self._spans.get(fc)
            if span is None:
                # A function the model does not use: one invalid register, so every read of
                # it is refused with "illegal data address".
                blocks[fc] = [SimData(0, datatype=DataType.INVALID)]
            else:
                lo, hi = span
                blocks[fc] = [SimData(lo, count=hi - lo, values=0, datatype=DataType.REGISTERS)]
        bits = [SimData(0, values=False, datatype=DataType.BITS)]
        return SimDevice(
            unit,
            simdata=(bits, list(bits), blocks[holding], blocks[inputs]),
            action=functools.partial(self._action, unit),
        )

    async def start(self) -> None:
        """Listen (TCP: ``port`` 0 picks a free one, then ``port`` says which)."""
        if self._server is not None:
            return
        quiet_pymodbus()
        devices = [self._device(unit) for unit in self.units]
        server: ModbusTcpServer | ModbusSerialServer
        if self.serial is None:
            server = ModbusTcpServer(devices, address=(self.host, self.port))
        else:
            server = ModbusSerialServer(
                devices,
                port=self.serial.device,
                baudrate=self.serial.baud,
                parity=self.serial.parity,
                bytesize=self.serial.bytesize,
                stopbits=self.serial.stopbits,
            )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            if self.serial is None:
                raise cannot_listen(self.host, self.port, "Modbus meter server") from exc
            raise OSError(
                f"Modbus meter server: cannot serve on {self.serial.device} (in use, or no "
                "permission)"
            ) from exc
        if self.serial is None:
            sockets = getattr(server.transport, "sockets", None)
            if sockets:
                self.port = int(sockets[0].getsockname()[1])
        self._server = server

    async def stop(self) -> None:
        """Stop listening and drop every connection (``start`` serves again, same port)."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]

    @property
    def serving(self) -> bool:
        return self._server is not None

    @property
    def url_base(self) -> str:
        return f"modbus-tcp://{self.host}:{self.port}"


def _per_phase(value: float | Sequence[float], phases: int) -> list[float]:
    """A scalar on every phase; a sequence per phase (missing phases carry 0)."""
    if isinstance(value, int | float):
        return [float(value)] * phases
    return ([float(x) for x in value] + [0.0] * phases)[:phases]
