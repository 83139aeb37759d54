"""The simulated pilot bus: N ports with contactors, meters, ground monitors and EVs.

It is the ``sim://`` hardware backend, first-class like python-can's virtual bus or gpiozero's
MockFactory: the station loop drives it through the same HAL interfaces as real hardware, and
tests inspect it (a timestamped history of duty, contactor and current per port) and inject
faults into it. Time is whatever the caller says it is: ``advance(now)`` moves the physics to
``now``, and ``next_change(now)`` says when something will change by itself, so a virtual-time
runner can jump from event to event.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from hal.interfaces import (
    BackendContext,
    MeterReading,
    PilotSample,
    PortHardware,
    Service,
    leave_safe,
)
from hal.pilot import duty_to_amps
from hal.sim.config import SimSection
from hal.sim.ev import EvSpec, SimEv

# Pilot plateau voltages the EVSE's sense circuit sees (SAE J1772 Table 3 nominal values).
_V_A, _V_B, _V_C, _V_E, _V_F = 12.0, 9.0, 6.0, 0.0, -12.0

# More events than this at one instant means a model is stuck (a plug, a handshake, a lag
# and a target for every port of a big site are far fewer).
_MAX_EVENTS_AT_ONE_INSTANT = 10_000

FAULT_KINDS = ("weld", "gfci", "diode", "ground", "overdraw", "meter", "short")


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One change on a simulated port (recorded only when something changed)."""

    t: float
    pilot: str  # "steady" | "pwm" | "F"
    duty_pct: float | None
    contactor: bool  # sensed (feedback)
    amps: float  # drawn by the vehicle
    ev_state: str  # pilot state the vehicle shows: A, B, C, E


class SimPort:
    """One simulated port: pilot driver, contactor, ground monitor and meter in one object."""

    # Its meter counts energy itself, as a real meter's register does (hal.interfaces.Meter).
    has_energy_register = True

    def __init__(self, bus: SimBus, port_id: str, voltage_v: float, rng: random.Random) -> None:
        self._bus = bus
        self.id = port_id
        self.voltage_v = voltage_v
        self._rng = rng
        self.pilot_out = "steady"
        self.duty_pct: float | None = None
        self.commanded_closed = False
        self.welded = False
        self.weld_pending = False
        self.gfci = False
        self.ground = True
        self.diode_missing = False
        self.pilot_shorted = False
        self.meter_frozen = False
        self.ev: SimEv | None = None
        self.energy_wh = 0.0
        self.history: list[HistoryEntry] = []
        self._reading: MeterReading | None = None

    # --- PilotDriver ----------------------------------------------------------------

    def pwm(self, duty_pct: float) -> None:
        self._set_pilot("pwm", duty_pct)

    def steady(self) -> None:
        self._set_pilot("steady", None)

    def state_f(self) -> None:
        self._set_pilot("F", None)

    def sample(self) -> PilotSample:
        if self.pilot_out == "F":
            return PilotSample(_V_F, _V_F)
        high = self.ev_high_v()
        if self.pilot_out != "pwm":
            return PilotSample(high, None)
        # The EV's diode blocks the negative half: without it the EV's resistors load it too.
        low = -high if self.diode_missing and self.ev is not None else _V_F
        return PilotSample(high, low)

    # --- Contactor --------------------------------------------------------------------

    def command(self, closed: bool) -> None:
        if closed == self.commanded_closed:
            return
        self.commanded_closed = closed
        if closed and self.weld_pending:
            self.welded, self.weld_pending = True, False
        self._bus.changed(self)

    def feedback(self) -> bool:
        return self.commanded_closed or self.welded

    # --- GroundMonitor ------------------------------------------------------------------

    def gfci_tripped(self) -> bool:
        return self.gfci

    def ground_ok(self) -> bool:
        return self.ground

    def reset_gfci(self) -> None:
        self.gfci = False

    # --- Meter ------------------------------------------------------------------------

    def latest(self) -> MeterReading | None:
        if self._reading is None or (
            not self.meter_frozen and self._reading.timestamp != self._bus.now
        ):
            amps = self.metered_amps()
            phases = self.ev.spec.phases if self.ev is not None else 1
            self._reading = MeterReading(
                amps=(amps,) * phases,
                volts=(self.voltage_v,) * phases,
                power_w=amps * self.voltage_v * phases,
                energy_wh=self.energy_wh,
                timestamp=self._bus.now,
            )
        return self._reading

    # --- simulation -------------------------------------------------------------------

    @property
    def energised(self) -> bool:
        """Current can flow: contacts closed (or welded) and no ground-fault trip."""
        return self.feedback() and not self.gfci

    @property
    def drawn_a(self) -> float:
        if self.ev is None or not self.energised:
            return 0.0
        return self.ev.draw_a

    def metered_amps(self) -> float:
        drawn = self.drawn_a
        if drawn <= 0.0:
            return 0.0
        return max(0.0, drawn + self._rng.uniform(-self._bus.noise_a, self._bus.noise_a))

    def ev_high_v(self) -> float:
        if self.pilot_shorted:
            return _V_E
        if self.ev is None:
            return _V_A
        return _V_C if self.ev.in_c else _V_B

    def ev_state(self) -> str:
        if self.pilot_shorted:
            return "E"
        if self.ev is None:
            return "A"
        return "C" if self.ev.in_c else "B"

    def offer_seen(self) -> tuple[bool, float]:
        """Whether the EV sees PWM and the current it reads from it (IEC 61851-1 Table A.8)."""
        if self.pilot_out != "pwm" or self.duty_pct is None:
            return False, 0.0
        return True, duty_to_amps(self.duty_pct)

    def _set_pilot(self, out: str, duty: float | None) -> None:
        if out == self.pilot_out and duty == self.duty_pct:
            return
        self.pilot_out, self.duty_pct = out, duty
        self._bus.changed(self)

    def record(self, t: float) -> None:
        entry = HistoryEntry(
            t, self.pilot_out, self.duty_pct, self.feedback(), self.drawn_a, self.ev_state()
        )
        last = self.history[-1] if self.history else None
        if last is None or (
            last.pilot,
            last.duty_pct,
            last.contactor,
            last.amps,
            last.ev_state,
        ) != (entry.pilot, entry.duty_pct, entry.contactor, entry.amps, entry.ev_state):
            self.history.append(entry)


class SimJumper:
    """The jumper sense input of a simulated station."""

    def __init__(self, installed: bool) -> None:
        self.value = installed

    def installed(self) -> bool:
        return self.value


class SimBus:
    """A simulated station: its ports, their EVs (plugged in and out on schedule) and time."""

    def __init__(
        self,
        port_ids: Sequence[str],
        evs: Iterable[EvSpec] = (),
        *,
        voltage_v: float | Sequence[float] = 208.0,
        jumper: bool = False,
        noise_a: float = 0.05,
        seed: int = 0,
    ) -> None:
        volts = (
            [float(voltage_v)] * len(port_ids)
            if isinstance(voltage_v, int | float)
            else [float(v) for v in voltage_v]
        )
        rng = random.Random(seed)
        self.now = 0.0
        self.noise_a = noise_a
        self._ports = {
            pid: SimPort(self, pid, v, rng) for pid, v in zip(port_ids, volts, strict=True)
        }
        self._hardware = tuple(PortHardware(p, p, p, p) for p in self._ports.values())
        self._jumper = SimJumper(jumper)
        # Background work beside the ports (open_hardware: a Modbus server for the meters).
        self.services: tuple[Service, ...] = ()
        self._schedule: list[tuple[float, int, str, EvSpec]] = []  # (t, order, plug|unplug, ev)
        for spec in evs:
            self.schedule(spec)
        self._dirty: set[str] = set()

    # --- Hardware protocol ------------------------------------------------------------

    @property
    def ports(self) -> Sequence[PortHardware]:
        return self._hardware

    @property
    def jumper(self) -> SimJumper:
        return self._jumper

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        leave_safe(self._hardware)
        self.advance(self.now)

    def advance(self, now: float) -> None:
        """Run the physics from the bus's present time to ``now``, event by event."""
        if now < self.now:
            raise ValueError(f"time went backwards: {now} < {self.now}")
        self._react_to_commands()
        stuck = 0
        while True:
            due = self._next_due()
            if due is None or due > now:
                break
            # Events due at the present instant must resolve in a few rounds; a model whose
            # next event never moves past the clock would hang a run, so fail loudly instead.
            stuck = stuck + 1 if due <= self.now else 0
            if stuck > _MAX_EVENTS_AT_ONE_INSTANT:
                raise RuntimeError(f"simulated bus makes no progress at t={self.now}")
            self._integrate_to(due)
            self._fire(due)
        self._integrate_to(now)
        for port in self._ports.values():
            port.record(self.now)

    def next_change(self, now: float) -> float | None:
        self._react_to_commands()
        due = self._next_due()
        return None if due is None else max(due, now)

    # --- inspection and injection (like gpiozero's mock pins) ---------------------------

    def port(self, port_id: str) -> SimPort:
        return self._ports[port_id]

    def history(self, port_id: str) -> list[HistoryEntry]:
        return self._ports[port_id].history

    def schedule(self, spec: EvSpec) -> None:
        """Plug ``spec`` in at its arrival time and out at its leave time."""
        if spec.port not in self._ports:
            raise ValueError(f"EV for unknown port {spec.port!r} (ports: {', '.join(self._ports)})")
        order = len(self._schedule)
        self._schedule.append((spec.arrive_s, order * 2, "plug", spec))
        if spec.leave_s is not None:
            self._schedule.append((spec.leave_s, order * 2 + 1, "unplug", spec))
        self._schedule.sort(key=lambda item: (item[0], item[1]))

    def inject(self, port_id: str, kind: str, *, active: bool = True) -> None:
        """Inject (or, with active=False, clear) a fault on a port at the present time."""
        port = self._ports[port_id]
        if kind == "weld":
            if port.commanded_closed:
                port.welded = active
            else:
                port.weld_pending = active
            if not active:
                port.welded = port.weld_pending = False
        elif kind == "gfci":
            port.gfci = active
        elif kind == "diode":
            port.diode_missing = active
        elif kind == "ground":
            port.ground = not active
        elif kind == "overdraw":
            if port.ev is not None:
                port.ev.overdraw_a = 6.0 if active else port.ev.spec.overdraw_a
        elif kind == "meter":
            port.meter_frozen = active
        elif kind == "short":
            port.pilot_shorted = active
        else:
            raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(FAULT_KINDS)})")
        self.changed(port)

    def changed(self, port: SimPort) -> None:
        self._dirty.add(port.id)
        port.record(self.now)

    # --- internals --------------------------------------------------------------------

    def _react_to_commands(self) -> None:
        for pid in sorted(self._dirty):
            port = self._ports[pid]
            if port.ev is not None:
                pwm_on, offer = port.offer_seen()
                port.ev.react(self.now, pwm_on, offer, port.energised)
        self._dirty.clear()

    def _next_due(self) -> float | None:
        times = [self._schedule[0][0]] if self._schedule else []
        for port in self._ports.values():
            if port.ev is not None:
                t = port.ev.next_change(self.now)
                if t is not None:
                    times.append(t)
        return min(times) if times else None

    def _integrate_to(self, t: float) -> None:
        dt = t - self.now
        if dt > 0.0:
            for port in self._ports.values():
                if port.ev is not None and port.energised:
                    port.energy_wh += port.ev.integrate(dt)
        self.now = max(self.now, t)

    def _fire(self, t: float) -> None:
        while self._schedule and self._schedule[0][0] <= t:
            _, _, what, spec = self._schedule.pop(0)
            port = self._ports[spec.port]
            if what == "plug":
                port.ev = SimEv(spec, port.voltage_v)
            elif port.ev is not None and port.ev.spec is spec:
                port.ev = None
            self.changed(port)
        for port in self._ports.values():
            if port.ev is not None:
                pwm_on, offer = port.offer_seen()
                port.ev.fire(t, pwm_on, offer, port.energised)
        self._react_to_commands()


def open_hardware(url: str, context: BackendContext) -> SimBus:
    """``sim://[?noise=0.05&seed=0&jumper=0|1]``: a simulated station for the station loop.

    ``context`` says the ports, their voltages and the jumper (``?jumper=`` overrides it to
    simulate a miswired installation); its ``section`` is the station file's ``sim:``
    (``hal.sim.config.SimSection``): the EVs, and a meter server that becomes the bus's one
    service.
    """
    section = SimSection() if context.section is None else context.section
    if not isinstance(section, SimSection):
        raise TypeError(f"sim:// opens with a sim: section, not {type(section).__name__}")
    query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    jumper = context.jumper
    if "jumper" in query:
        jumper = query["jumper"] not in ("0", "false", "no")
    bus = SimBus(
        context.port_ids,
        section.evs,
        voltage_v=context.voltage_v,
        jumper=jumper,
        noise_a=float(query.get("noise", 0.05)),
        seed=int(query.get("seed", 0)),
    )
    server = section.meter_server
    if server is not None:
        # Imported only now: pymodbus is loaded for a station that serves its meters.
        from hal.modbus.simfeed import SimMeterFeed

        meters = [port.meter for port in bus.ports]
        bus.services = (SimMeterFeed(meters, server.model, host=server.host, port=server.port),)
    return bus
