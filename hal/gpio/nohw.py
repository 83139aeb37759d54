"""The Pi's side of a GPIO station, simulated: ``gpio://?board=...&nohw=1``.

One job: stand in for the hardware below the GPIO backend, at the interfaces the backend really
uses, so that the backend's every line runs on any machine. The kernel's PWM files are laid out
in ``pwm_root`` (``SimPwmKernel``); the pins are gpiozero's own ``MockFactory``; the ADC is an
``Mcp3008Sim`` answering SPI transactions byte by byte. Behind them, the simulated pilot bus
(``hal.sim.bus.SimBus``) with its vehicles: every few milliseconds the world reads what the
backend wrote (each port's ``duty_cycle`` and ``enable``, each contactor coil's pin), applies
it to the bus, advances the bus to the station's time, and drives back what the hardware would
(the pilot waveform on the ADC's input, contactor feedback, GFCI trip, jumper sense).

Anyone can point ``pwm_root`` at a fresh folder and watch ``pwmchip0/pwm0/duty_cycle`` change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from hal.gpio.adc_sim import Mcp3008Sim, PilotMode, PilotWave, adc_input
from hal.gpio.board import ADC_CHANNELS, PWM_CHANNELS, Board, Input
from hal.gpio.sysfs_sim import SimPwmKernel
from hal.interfaces import BackendContext
from hal.sim.bus import SimBus
from hal.sim.ev import EvSpec
from hal.tasks import cancel_and_wait

__all__ = ["PILOT_NOISE_V", "STEP_S", "NoHardware"]

# How often the world follows the backend: far below the 20 ms pilot sampling and 50 ms tick.
STEP_S = 0.002
# Noise on the simulated pilot at the sense point (volts rms): an op-amp stage's, roughly.
PILOT_NOISE_V = 0.05
_CHIP = 0  # the simulated kernel numbers its one PWM chip 0


class NoHardware:
    """The simulated Pi below a GPIO station: a ``Service`` the backend starts first."""

    def __init__(
        self,
        board: Board,
        pwm_root: Path,
        context: BackendContext,
        evs: Sequence[EvSpec],
        clock: Callable[[], float],
    ) -> None:
        from gpiozero.pins.mock import MockFactory

        self.board = board
        self.clock = clock
        self.factory = MockFactory()
        self.adc = Mcp3008Sim(ADC_CHANNELS[board.adc_chip], vref_v=board.divider.vref_v)
        npwm = max(PWM_CHANNELS[board.pi].values()) + 1
        self.kernel = SimPwmKernel(pwm_root, {_CHIP: (npwm, board.pwm_device)})
        self.bus = SimBus(context.port_ids, evs, voltage_v=context.voltage_v, jumper=context.jumper)
        self._sim_ports = [self.bus.port(pid) for pid in context.port_ids]
        self._waves: list[tuple[PilotMode, float, float, bool] | None] = [None] * len(board.ports)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.kernel.start()
        self.step()
        self._task = asyncio.create_task(self._run(), name="ampshare:gpio-nohw")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self.kernel.stop()

    async def _run(self) -> None:
        while True:
            self.step()
            await asyncio.sleep(STEP_S)

    def step(self) -> None:
        """Follow the backend's outputs, advance the vehicles, drive the inputs."""
        sim_ports = self._sim_ports
        outputs = []
        for pins, port in zip(self.board.ports, sim_ports, strict=True):
            mode, duty = self._pilot_out(pins.pwm_channel, pins.invert)
            if mode == "pwm":
                port.pwm(round(duty * 1000.0) / 10.0)  # the 0.1 % the duty was written in
            elif mode == "high":
                port.steady()
            else:
                port.state_f()
            port.command(bool(self.factory.pin(pins.contactor).state))
            outputs.append((mode, duty))
        self.bus.advance(max(self.clock(), self.bus.now))
        for i, (pins, port, (mode, duty)) in enumerate(
            zip(self.board.ports, sim_ports, outputs, strict=True)
        ):
            self._drive(pins.feedback, port.feedback())
            self._drive(pins.gfci, port.gfci_tripped())
            wave = (mode, duty, port.ev_high_v(), not port.diode_missing)
            if wave != self._waves[i]:
                self._waves[i] = wave
                pilot = PilotWave(
                    mode,
                    duty=duty,
                    ev_high_v=wave[2],
                    diode=wave[3],
                    noise_v=PILOT_NOISE_V,
                    seed=i,
                )
                self.adc.connect(pins.adc_channel, adc_input(pilot, self.board.divider))
        self._drive(self.board.jumper, self.bus.jumper.installed())

    def _pilot_out(self, channel: int, invert: bool) -> tuple[PilotMode, float]:
        """What the op-amp stage puts on the pilot for the PWM channel's state: a disabled
        output idles low (-12 V, state F), a duty of 0 or 100 % is a steady level."""
        enabled, duty = self.kernel.output(_CHIP, channel)
        if not enabled:
            duty = 0.0
        if invert:
            duty = 1.0 - duty
        if duty >= 1.0:
            return "high", 1.0
        if duty <= 0.0:
            return "low", 0.0
        return "pwm", duty

    def _drive(self, spec: Input, active: bool) -> None:
        pin = self.factory.pin(spec.pin)
        if active != spec.active_low:
            pin.drive_high()
        else:
            pin.drive_low()
