"""The Raspberry Pi station as the HAL: ``gpio://?board=reference``.

One job: join the parts of a Pi station into the station's ``Hardware``: per port, the pilot
(``hal.gpio.sysfs_pwm.PilotPwm`` out, the MCP3008 in), the contactor and the GFCI
(``hal.gpio.pins``); the jumper sense; the keepalive, toggled on every control tick
(``advance``) and stilled at stop. Nothing here waits in the control tick: the pilot is sampled
by a background task whose bursts of SPI conversions run in a thread (``PilotSampler``), and
the tick reads the latest sample; PWM and GPIO writes are single register or sysfs writes.

With ``nohw=1`` the Pi's side is simulated (``hal.gpio.nohw``): gpiozero's MockFactory for the
pins, ``Mcp3008Sim`` for the ADC, ``SimPwmKernel`` laying out ``pwm_root`` as the kernel would,
and the simulated pilot bus's vehicles behind them. Only the pin factory, the SPI device and the
sysfs root differ; every line of this module runs the same.

Pilot samples: a port's sample is taken with the pilot output it had when the burst began; a
burst during which the output changed is thrown away (its samples mix two waveforms). A sample
older than ``SAMPLE_STALE_S`` reads as NaN volts (outside every J1772 band), so the port machine
opens and stops offering, as for a lost board. A burst that fails the diode check or finds no
plateau is taken again before it is believed (``hal.gpio.adc``: at 96 % duty a burst locked to
the PWM can land its low samples on edges). ``start`` returns only once every port has a sample.
Meters: the reference board has none of its own; ``meter: builtin`` reads nothing (the port
counts at its full offer), and a Modbus meter per port gives the controller what EVs draw.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from hal.clock import Clock
from hal.gpio.adc import ClosableSpiDevice, Mcp3008, open_spidev, plateaus, sample_burst
from hal.gpio.board import ADC_CHANNELS, Board, BoardError, PortPins, load_board, port_count_problem
from hal.gpio.config import GpioSection, parse_url
from hal.gpio.pins import GpioContactor, GpioGround, GpioJumper, Keepalive
from hal.gpio.sysfs_pwm import PilotPwm, PwmError, SysfsPwm, find_chip
from hal.interfaces import (
    BackendContext,
    MeterReading,
    PilotSample,
    PortHardware,
    Service,
    leave_safe,
)
from hal.pilot import PilotError, diode_ok
from hal.registry import BackendError
from hal.tasks import cancel_and_wait

__all__ = [
    "PILOT_SETTLE_S",
    "SAMPLE_PERIOD_S",
    "SAMPLE_STALE_S",
    "GpioPilot",
    "GpioStation",
    "open_hardware",
]

log = logging.getLogger("ampshare.gpio")

# Every port's pilot is sampled about this often: a state change is seen within a tick or two
# of the 50 ms loop (J1772's 100 ms to open on leaving C is met with room).
SAMPLE_PERIOD_S = 0.02
# A sample older than this is no sample: the sampler has stopped, and the port must open. Ten
# sampling periods: far beyond a burst's few milliseconds, near the 100 ms in which a contactor
# must open after the pilot leaves C (docs/design.md), which a stalled sampler would hide.
SAMPLE_STALE_S = 0.2
# After an output change the pilot stage and the ADC input's filter settle before a burst is
# taken (microseconds on the reference board; 5 ms is far beyond them, and beyond the
# no-hardware world's 2 ms step).
PILOT_SETTLE_S = 0.005
_NO_SAMPLE = PilotSample(math.nan, math.nan)


class NoMeter:
    """``meter: builtin`` on a board without current transformers: never a reading."""

    def latest(self) -> MeterReading | None:
        return None


class GpioPilot:
    """One port's pilot: the hardware PWM out, the latest sample in."""

    def __init__(self, pwm: PilotPwm, clock: Callable[[], float]) -> None:
        self._pwm = pwm
        self._clock = clock
        self.epoch = 0  # changes with every output change: a burst across one is thrown away
        self.pwm_on = False
        self.changed_at = clock()
        self._sample: tuple[PilotSample, float] | None = None

    def pwm(self, duty_pct: float) -> None:
        self._pwm.pwm(duty_pct)
        self._changed(True)

    def steady(self) -> None:
        self._pwm.steady()
        self._changed(False)

    def state_f(self) -> None:
        self._pwm.state_f()
        self._changed(False)

    def _changed(self, pwm_on: bool) -> None:
        self.epoch += 1
        self.pwm_on = pwm_on
        self.changed_at = self._clock()

    def sample(self) -> PilotSample:
        if self._sample is None:
            return _NO_SAMPLE
        sample, at = self._sample
        return sample if self._clock() - at <= SAMPLE_STALE_S else _NO_SAMPLE

    def store(self, sample: PilotSample, at: float) -> None:
        self._sample = (sample, at)


def _doubtful(sample: PilotSample) -> bool:
    """A burst worth taking again before it is believed: no plateau found, or a diode check
    that fails (a missing diode is a fault that ends the session: be sure of it)."""
    if not math.isfinite(sample.high_v):
        return True
    return sample.low_v is not None and not (math.isfinite(sample.low_v) and diode_ok(sample.low_v))


class PilotSampler:
    """The background task that samples every port's pilot, one burst at a time, in a thread."""

    def __init__(
        self,
        adc: Mcp3008,
        board: Board,
        pilots: Sequence[GpioPilot],
        clock: Callable[[], float],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.adc = adc
        self.board = board
        self.pilots = pilots
        self.clock = clock
        self.on_change = on_change
        self.bursts = 0
        self._task: asyncio.Task[None] | None = None

    async def sample_all(self) -> None:
        """One sample of every port (a burst each; again for a doubtful one)."""
        for pins, pilot in zip(self.board.ports, self.pilots, strict=True):
            sample = await self._burst(pins, pilot)
            if sample is not None and _doubtful(sample):
                sample = await self._burst(pins, pilot)
            if sample is None:
                continue  # the output changed meanwhile: the next round samples it
            before = pilot.sample()
            pilot.store(sample, self.clock())
            if self.on_change is not None and _band(before) != _band(sample):
                self.on_change()

    async def _burst(self, pins: PortPins, pilot: GpioPilot) -> PilotSample | None:
        settled_in = pilot.changed_at + PILOT_SETTLE_S - self.clock()
        if settled_in > 0.0:
            await asyncio.sleep(settled_in)
        epoch, pwm_on = pilot.epoch, pilot.pwm_on
        codes = await asyncio.to_thread(sample_burst, self.adc, pins.adc_channel, self.board.burst)
        self.bursts += 1
        if pilot.epoch != epoch:
            return None
        divider = self.board.divider
        return plateaus([divider.counts_to_pilot_v(c) for c in codes], pwm_on=pwm_on)

    async def start(self) -> None:
        if self._task is None:
            await self.sample_all()
            self._task = asyncio.create_task(self._run(), name="ampshare:gpio-pilot")

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self.sample_all()
            except Exception as exc:  # the ADC stopped answering: samples go stale, ports open
                if not failing:  # once per episode: not 50 lines a second into the journal
                    log.error("pilot ADC failing, every port reads no pilot: %s", exc)
                failing = True
            else:
                if failing:
                    log.warning("pilot ADC answers again")
                failing = False
            await asyncio.sleep(SAMPLE_PERIOD_S)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)


def _band(sample: PilotSample) -> str | None:
    from hal.pilot import state_from_high_voltage

    try:
        return state_from_high_voltage(sample.high_v).value
    except PilotError:
        return None


class GpioStation:
    """A Pi station's ``Hardware``: ports, jumper, keepalive, and the pilot sampler."""

    def __init__(
        self,
        board: Board,
        factory: Any,
        pwms: Sequence[SysfsPwm],
        spi: ClosableSpiDevice,
        clock: Callable[[], float],
        *,
        world: Service | None = None,
    ) -> None:
        self.board = board
        self.factory = factory
        self._pwms = pwms
        self._spi = spi
        self.pilots = [
            GpioPilot(PilotPwm(pwm, invert=pins.invert), clock)
            for pwm, pins in zip(pwms, board.ports, strict=True)
        ]
        self._contactors = [GpioContactor(factory, p.contactor, p.feedback) for p in board.ports]
        self._grounds = [GpioGround(factory, p.gfci, p.gfci_test) for p in board.ports]
        meter = NoMeter()
        self._ports = tuple(
            PortHardware(pilot, contactor, ground, meter)
            for pilot, contactor, ground in zip(
                self.pilots, self._contactors, self._grounds, strict=True
            )
        )
        self._jumper = GpioJumper(factory, board.jumper)
        self.keepalive = Keepalive(factory, board.keepalive)
        adc = Mcp3008(spi, ADC_CHANNELS[board.adc_chip])
        self.sampler = PilotSampler(adc, board, self.pilots, clock)
        # The simulated Pi of the no-hardware mode (hal.gpio.nohw): started first and stopped
        # last by the backend itself, since the PWM files and the ADC are its.
        self._world = world
        self.on_input_change: Callable[[], None] | None = None

    @property
    def ports(self) -> Sequence[PortHardware]:
        return self._ports

    @property
    def world(self) -> Service | None:
        """The simulated Pi of the no-hardware mode (``hal.gpio.nohw.NoHardware``), or None."""
        return self._world

    @property
    def jumper(self) -> GpioJumper:
        return self._jumper

    async def start(self) -> None:
        if self._world is not None:
            await self._world.start()
        try:
            for pwm in self._pwms:
                await pwm.open_async()
        except PwmError as exc:
            raise BackendError(f"pilot PWM: {exc}") from exc
        # Before the first tick: no offer on any pilot, every contactor open.
        leave_safe(self._ports)
        self.sampler.on_change = self._input_changed
        await self.sampler.start()

    def _input_changed(self) -> None:
        if self.on_input_change is not None:
            self.on_input_change()

    async def stop(self) -> None:
        # Each step whatever the one before did (a start that failed half way, a sysfs write
        # refused): the relays are released and the keepalive stilled in any case.
        steps: list[Callable[[], object]] = [
            lambda: leave_safe(self._ports),
            self.keepalive.stop,
            # -12 V, "EVSE not available", whatever the stage's inversion:
            *(pilot.state_f for pilot in self.pilots),
            *(contactor.close for contactor in self._contactors),
            *(ground.close for ground in self._grounds),
            self._jumper.close,
            self.keepalive.close,
            self._spi.close,
        ]
        await self.sampler.stop()
        for step in steps:
            try:
                step()
            except Exception as exc:
                log.error("stopping the GPIO station: %s", exc)
        if self._world is not None:
            await self._world.stop()

    def advance(self, now: float) -> None:
        # Called once per control tick: the charge pump's input toggles only while the loop
        # runs (hal.gpio.pins.Keepalive).
        self.keepalive.toggle()

    def next_change(self, now: float) -> float | None:
        return None


def open_hardware(url: str, context: BackendContext) -> GpioStation:
    """``gpio://?board=NAME_OR_PATH[&pwm_root=DIR][&nohw=1]`` (``hal.gpio.config``)."""
    where = parse_url(url)
    try:
        board = load_board(where.board)
    except BoardError as exc:
        raise BackendError(str(exc)) from None
    problem = port_count_problem(board, len(context.port_ids))
    if problem is not None:
        raise BackendError(f"{url}: {problem}")
    section = GpioSection() if context.section is None else context.section
    if not isinstance(section, GpioSection):
        raise TypeError(f"gpio:// opens with a gpio: section, not {type(section).__name__}")
    if section.evs and not where.nohw:
        raise BackendError(f"{url}: gpio: evs: are simulated vehicles, for nohw=1 only")
    clock: Clock | Callable[[], float] = context.clock or time.monotonic
    world = None
    spi: ClosableSpiDevice
    if where.nohw:
        from hal.gpio.nohw import NoHardware

        world = NoHardware(board, where.pwm_root, context, section.evs, clock)
        factory, spi = world.factory, world.adc
    else:
        from gpiozero.pins.lgpio import LGPIOFactory

        factory = LGPIOFactory(chip=board.gpiochip)
        spi = open_spidev(board.spi_bus, board.spi_device, board.max_speed_hz)
    try:
        chip = find_chip(where.pwm_root, board.pwm_device, None)
    except (PwmError, ValueError) as exc:
        raise BackendError(f"{url}: {exc}") from None
    pwms = [SysfsPwm(where.pwm_root, chip, p.pwm_channel) for p in board.ports]
    return GpioStation(board, factory, pwms, spi, clock, world=world)
