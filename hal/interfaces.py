"""The HAL boundary: what a station's hardware can do, as small typing.Protocol classes.

Every backend (``sim://``, ``serial://``, ``modbus-tcp://`` ...) provides these. They are
deliberately synchronous and non-blocking: a real backend keeps the latest sample of every
input in memory (its own asyncio tasks poll or receive them) and queues commands, so the
station loop never waits on I/O. That is what lets one loop run on a Raspberry Pi, on a bench,
and in virtual time against the simulated pilot bus.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from hal.clock import Clock


@dataclass(frozen=True, slots=True)
class PilotSample:
    """One measurement of the control pilot line, in volts at the EVSE's pilot sense point.

    ``high_v`` is the positive plateau (the J1772 state voltage). ``low_v`` is the negative
    plateau while PWM runs (-12 V when the EV's diode is present) and ``None`` when PWM is off,
    since a steady pilot has no negative half to measure.
    """

    high_v: float
    low_v: float | None


@runtime_checkable
class PilotDriver(Protocol):
    """Drives one port's control pilot and measures it."""

    def pwm(self, duty_pct: float) -> None:
        """Oscillate +-12 V at 1 kHz with this duty cycle (percent, 0.1 % resolution)."""

    def steady(self) -> None:
        """PWM off: steady +12 V (EVSE present but not offering current; a pause)."""

    def state_f(self) -> None:
        """Steady -12 V: EVSE not available (fault or lockout)."""

    def sample(self) -> PilotSample:
        """The latest pilot measurement."""
        ...


@runtime_checkable
class Contactor(Protocol):
    """One port's AC contactor (relay) with its feedback (auxiliary contact or voltage sense)."""

    def command(self, closed: bool) -> None:
        """Ask for the contactor closed (True) or open (False)."""

    def feedback(self) -> bool:
        """True when the contactor is sensed closed, whatever was commanded (a weld shows here)."""
        ...


@runtime_checkable
class GroundMonitor(Protocol):
    """One port's ground-fault interrupter (GFCI / CCID) and ground continuity monitor."""

    def gfci_tripped(self) -> bool:
        """True while a ground fault trip is latched."""
        ...

    def ground_ok(self) -> bool:
        """True while the protective earth is continuous."""
        ...

    def reset_gfci(self) -> None:
        """Clear a latched trip (self-test and re-arm), before an automatic retry."""


@runtime_checkable
class JumperInput(Protocol):
    """The sense input of the power-sharing jumper (both ports on one feed)."""

    def installed(self) -> bool:
        """True when the hardware reports the jumper fitted."""
        ...


@dataclass(frozen=True, slots=True)
class MeterReading:
    """One reading of an energy meter: per-phase values, totals and when it was taken.

    ``timestamp`` is on the station's clock (seconds; virtual in the simulator), so staleness is
    ``now - timestamp``.
    """

    amps: tuple[float, ...]
    volts: tuple[float, ...]
    power_w: float
    energy_wh: float
    timestamp: float

    @property
    def max_amps(self) -> float:
        """The largest phase current: what a port's offer is compared with."""
        return max(self.amps, default=0.0)


@runtime_checkable
class Meter(Protocol):
    """An energy meter (a port's or the site's).

    Optional: ``has_energy_register`` (bool attribute), True when ``energy_wh`` is the meter's
    own energy register (a Modbus meter's import kWh, the simulated meter's) rather than an
    integration by the host (a board's current transformer); session records say which
    (``firmware.sessions``). Absent: False.
    """

    def latest(self) -> MeterReading | None:
        """The newest reading, or None if the meter has never answered."""
        ...


@runtime_checkable
class Service(Protocol):
    """A backend object with background work of its own: a polling Modbus meter, a serial
    link, a simulated meter server. The real-time runner starts every service of a station
    after its hardware and stops them after the ports are safe; in virtual time nothing is
    started (simulated objects compute their state when asked)."""

    async def start(self) -> None:
        """Open the device or connection and start the background tasks. Must not block for
        long: a peer that is not there yet is retried in the background, not waited for."""

    async def stop(self) -> None:
        """Stop the background tasks and release the device."""


@dataclass(frozen=True, slots=True)
class PortHardware:
    """Everything the station loop touches for one port."""

    pilot: PilotDriver
    contactor: Contactor
    ground: GroundMonitor
    meter: Meter


@runtime_checkable
class Hardware(Protocol):
    """What a backend opens for a whole station: its ports and the jumper input.

    ``advance`` and ``next_change`` are how a backend takes part in time. A real backend's
    state changes on its own (its tasks receive data), so ``advance`` does nothing and
    ``next_change`` returns None. The simulated pilot bus computes its state for the time it is
    given, and tells the virtual-time runner when it will next change by itself (an EV
    following a PWM change, a battery reaching its target), so that virtual time can jump
    straight there.

    Optional: a backend that hears of input changes as they happen (a board's unsolicited
    pilot event) may have a settable ``on_input_change`` callback attribute; the real-time
    runner sets it to tick at once instead of at the next period. A backend with background
    work of its own beside its ports (the sim backend's meter server) may have a ``services``
    sequence of ``Service``: the station starts them first, before its meters poll, and stops
    them last.
    """

    @property
    def ports(self) -> Sequence[PortHardware]: ...

    @property
    def jumper(self) -> JumperInput: ...

    async def start(self) -> None:
        """Open devices and start background tasks."""

    async def stop(self) -> None:
        """Leave every port safe (``leave_safe``) and release devices."""

    def advance(self, now: float) -> None:
        """Bring the hardware's state up to station time ``now``."""

    def next_change(self, now: float) -> float | None:
        """The next time after ``now`` the hardware changes by itself, or None."""
        ...


def leave_safe(ports: Iterable[PortHardware]) -> None:
    """Every port safe: PWM off (steady +12 V) and its contactor open.

    What a station leaves behind when it stops, whatever the backend (``Station.shutdown``,
    every backend's ``Hardware.stop``). PWM off first, then open: a vehicle (or a board) sees
    its offer end no later than its contactor opens.
    """
    failures: list[Exception] = []
    for port in ports:
        # Every port, and each contactor even when its pilot write failed: one failed write
        # must not leave another port offering or a contactor closed.
        for action in (port.pilot.steady, lambda p=port: p.contactor.command(False)):
            try:
                action()
            except Exception as exc:
                failures.append(exc)
    if failures:
        raise failures[0]


@dataclass(frozen=True, slots=True)
class BackendContext:
    """What a hardware backend opens with (``hal.registry.open_hardware``): the station's side.

    ``port_ids``: the station's ports in order (a board's wire port i is the i-th).
    ``voltage_v``: each port's voltage, for the power and energy a backend computes from its
    currents. ``jumper``: the Power Sharing jumper as configured (a board reports it until its
    own sense input has spoken; ``sim://?jumper=`` overrides it to simulate a miswired
    station). ``weld_detect_s``: the port machine's weld detection time, which a board checks
    it cannot lose sight of a contactor for longer than; None: the backend's own default.
    ``section``: the backend's own section of the station file (``sim:``) as its parser
    returned it (``hal.registry.parse_section``), None without one. ``clock``: the station
    clock of a real-time run, for stamping what arrives in the background (``hal.clock``);
    None in virtual time, where a backend is told the time.
    """

    port_ids: tuple[str, ...]
    voltage_v: tuple[float, ...]
    jumper: bool = False
    weld_detect_s: float | None = None
    section: object = None
    clock: Clock | None = None

    def __post_init__(self) -> None:
        if len(self.voltage_v) != len(self.port_ids):
            raise ValueError(
                f"{len(self.port_ids)} ports but {len(self.voltage_v)} voltages: one per port"
            )
