"""Relays and digital inputs of a Pi station through gpiozero: contactors, feedback, GFCI,
jumper sense and the keepalive of the relay supply's charge pump.

One job: the HAL's Contactor, GroundMonitor and JumperInput over gpiozero devices, all made by
one pin factory (lgpio on the Pi; gpiozero's own MockFactory in tests and the no-hardware
mode), so that nothing here knows which. Every call is a register read or write in lgpio (no
waiting), fit for the control tick; the one timed action, the GFCI self-test pulse, runs in
gpiozero's background thread.

The keepalive: a charge pump on the relay supply passes current only while its input toggles
(as in open Pi EVSE designs); ``Keepalive.toggle`` is called once per control tick, so a process
that hangs or dies leaves the pin still and the relays drop without any software. That is the
hardware's half of "the contactor opens when the controller is gone"; docs/raspberry-pi.md
says how to build it.
"""

from __future__ import annotations

from typing import Any

from hal.gpio.board import Input

__all__ = ["GFCI_TEST_PULSE_S", "GpioContactor", "GpioGround", "GpioJumper", "Keepalive"]

# The self-test/reset pulse of a GFCI module's test input (a typical CCID module latches on a
# test current of a few tens of milliseconds; 100 ms leaves margin).
GFCI_TEST_PULSE_S = 0.1


class _SafeInput:
    """A digital input pulled up, whatever its polarity: a wire that comes loose then reads
    high, which for every input of these boards is the safe reading (an active-high GFCI trip
    reads tripped, an active-high contactor feedback reads closed, a jumper sense reads
    fitted and is checked against the config). An active-low input is simply a contact to
    ground."""

    def __init__(self, factory: Any, spec: Input) -> None:
        from gpiozero import DigitalInputDevice

        # gpiozero ties the active level to the pull (pulled up: active when low), so an
        # active-high input's level is the inverse of its device's is_active.
        self._device = DigitalInputDevice(spec.pin, pull_up=True, pin_factory=factory)
        self._low_active = spec.active_low

    @property
    def is_active(self) -> bool:
        low = bool(self._device.is_active)  # pulled up: active means the pin is low
        return low if self._low_active else not low

    def close(self) -> None:
        self._device.close()


def _input(factory: Any, spec: Input) -> _SafeInput:
    return _SafeInput(factory, spec)


def _output(factory: Any, pin: int) -> Any:
    from gpiozero import DigitalOutputDevice

    # Off at construction: a relay never pulls in for the instant before the first command.
    return DigitalOutputDevice(pin, initial_value=False, pin_factory=factory)


class GpioContactor:
    """A contactor's coil (through a relay driver) and its auxiliary contact."""

    def __init__(self, factory: Any, coil: int, feedback: Input) -> None:
        self._coil = _output(factory, coil)
        self._feedback = _input(factory, feedback)

    def command(self, closed: bool) -> None:
        if closed:
            self._coil.on()
        else:
            self._coil.off()

    def feedback(self) -> bool:
        return bool(self._feedback.is_active)

    def close(self) -> None:
        self._coil.off()
        self._coil.close()
        self._feedback.close()


class GpioGround:
    """A GFCI (CCID) module: its latched trip output and its self-test input. Ground continuity
    is the module's own job on these boards (it trips on a lost ground), so ``ground_ok`` is
    True unless the trip says otherwise."""

    def __init__(self, factory: Any, trip: Input, test: int | None) -> None:
        self._trip = _input(factory, trip)
        self._test = None if test is None else _output(factory, test)

    def gfci_tripped(self) -> bool:
        return bool(self._trip.is_active)

    def ground_ok(self) -> bool:
        return True

    def reset_gfci(self) -> None:
        # A module without a test input re-arms by itself (or by hand): nothing to send.
        if self._test is not None:
            self._test.blink(on_time=GFCI_TEST_PULSE_S, off_time=0.0, n=1, background=True)

    def close(self) -> None:
        self._trip.close()
        if self._test is not None:
            self._test.off()
            self._test.close()


class GpioJumper:
    """The jumper sense input."""

    def __init__(self, factory: Any, spec: Input) -> None:
        self._input = _input(factory, spec)

    def installed(self) -> bool:
        return bool(self._input.is_active)

    def close(self) -> None:
        self._input.close()


class Keepalive:
    """The charge pump's input: toggled once per healthy control tick, still otherwise."""

    def __init__(self, factory: Any, pin: int) -> None:
        self._out = _output(factory, pin)
        self.toggles = 0

    def toggle(self) -> None:
        self._out.toggle()
        self.toggles += 1

    def stop(self) -> None:
        """Still and low: the relay supply drops (at shutdown, after the contactors opened)."""
        self._out.off()

    def close(self) -> None:
        self.stop()
        self._out.close()
