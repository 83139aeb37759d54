"""The station control loop: read the HAL, step the port machines, ask the controller for
currents, write PWM and contactors.

``Station.step(now)`` is one tick. It never reads a clock or sleeps: the runners in
``firmware.runner`` decide when ticks happen (every 50 ms in real time; from event to event in
virtual time, using ``next_deadline``). A tick reacts to a pilot change on the tick it is seen,
which is what lets the contactor open within 100 ms of C -> B (J1772; docs/design.md).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from controller.model import Decision, PortObservation, SiteSpec
from firmware import port as pm
from firmware.auth import AuthEvent, Authorizer, AuthSettings
from firmware.portstate import PortRecord, record_of, restore
from hal.clock import StationClock
from hal.interfaces import Hardware, Meter, MeterReading, PortHardware, Service, leave_safe
from hal.pilot import PilotError, PilotState, diode_ok, state_from_high_voltage

log = logging.getLogger("ampshare.auth")


class TagRead(Protocol):
    @property
    def tag(self) -> str: ...


class TagSource(Protocol):
    """A tag reader (``hal.rfid``): the tags read since the last call, without waiting."""

    def take(self) -> Sequence[TagRead]: ...


def _log_auth(event: AuthEvent) -> None:
    where = "for the next plug-in" if event.port is None else f"port {event.port}"
    if event.kind == "accepted":
        log.info("tag %s accepted: %s", event.tag, where)
    elif event.kind == "refused":
        log.warning("tag %s refused: not on the allow-list", event.tag)
    elif event.kind == "stop":
        log.info("tag %s presented again: %s stops (Local)", event.tag, where)
    elif event.kind == "remote":
        log.info("%s stopped remotely (Remote)", where)
    elif event.port is None:
        log.info("tag %s expired: no plug-in within the authorization timeout", event.tag)
    else:
        log.warning(
            "port %s: no tag within the authorization timeout (unplug and plug in again)",
            event.port,
        )


class Allocator(Protocol):
    """What the loop needs of the controller (``controller.core.Controller`` in the product;
    the benchmark's baselines implement it too, to run through the same loop)."""

    def update(
        self, now: float, observations: Mapping[str, PortObservation], *, link_up: bool = True
    ) -> Decision: ...

    def next_deadline(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class PortView:
    """What one port is doing after a tick (for the live table, traces and telemetry)."""

    id: str
    mode: pm.Mode
    pilot: PilotState | None
    pilot_out: pm.PilotOut
    duty_pct: float | None
    offer_a: float
    effective_a: float
    drawn_a: float | None  # metered; None when the meter is stale
    energy_wh: float | None
    contactor: bool  # sensed
    fault: str | None
    binding: str
    authorized: bool = True  # may be offered current (firmware.auth; always so in free mode)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole station after a tick."""

    t: float
    ports: tuple[PortView, ...]
    loads: Mapping[str, float]
    limits: Mapping[str, float]
    inhibit: str | None  # why the station refuses to energize any port, if it does


class Station:
    """One station: its hardware, a port machine per port, and the allocation core."""

    def __init__(
        self,
        site: SiteSpec,
        hardware: Hardware,
        controller: Allocator,
        *,
        jumper: bool,
        port_config: pm.PortConfig | None = None,
        meters: Sequence[Meter] | None = None,
        authorizer: Authorizer | None = None,
        tag_reader: TagSource | None = None,
    ) -> None:
        self.site = site
        self.hardware = hardware
        self.controller = controller
        self.jumper = jumper
        self.port_config = port_config or pm.PortConfig()
        self.port_ids = tuple(p.id for p in site.ports)
        if len(hardware.ports) != len(self.port_ids):
            raise ValueError(
                f"hardware has {len(hardware.ports)} ports, the configuration {len(self.port_ids)}"
            )
        self._hw: dict[str, PortHardware] = dict(zip(self.port_ids, hardware.ports, strict=True))
        self._meters: dict[str, Meter] = {
            pid: (meters[i] if meters is not None else hw.meter)
            for i, (pid, hw) in enumerate(self._hw.items())
        }
        self._states = {pid: pm.initial_state(0.0) for pid in self.port_ids}
        self._offers = dict.fromkeys(self.port_ids, 0.0)
        self._written: dict[str, tuple[pm.PilotOut, float | None, bool] | None] = dict.fromkeys(
            self.port_ids
        )
        self._resets: set[str] = set()
        self._remote_stops: set[str] = set()
        self._readings: dict[str, MeterReading | None] = dict.fromkeys(self.port_ids)
        # What the real-time runner starts after the hardware and stops after it: meters with
        # polling tasks of their own, and anything else added here (a meter server, a link).
        self.services: list[Service] = []
        for meter in self._meters.values():
            if isinstance(meter, Service) and all(meter is not s for s in self.services):
                self.services.append(meter)
        self.link_up = True
        self.last: Snapshot | None = None
        # The real-time clock that this station's services stamp readings with (set by
        # firmware.app.build_station); the runner ticks on it. The station never reads it.
        self.clock: StationClock | None = None
        # The part of each port a restart must not forget (firmware.portstate), and who is
        # told when it changes: called inside the tick, so it must only take note (no I/O).
        self._records = {pid: record_of(s, self.port_config) for pid, s in self._states.items()}
        self.on_persist: Callable[[Mapping[str, PortRecord]], None] | None = None
        # Who may charge (firmware.auth; free mode when none is given) and where tags come
        # from (hal.rfid: read in the background, taken here without waiting). What it did
        # last tick, for the shell (the log, the session records): auth_events.
        self.authorizer = authorizer or Authorizer(AuthSettings(), self.port_ids)
        self.tag_reader = tag_reader
        self.auth_events: list[AuthEvent] = []

    # --- operator actions -----------------------------------------------------------

    def stop_session(self, port_id: str) -> None:
        """A remote stop (a central system's): the port's session ends on the next tick (its
        offer goes to 0, the contactor opens as the port machine does at PWM off), and the port
        stays de-authorized until its vehicle is unplugged (``firmware.auth``)."""
        if port_id not in self._hw:
            raise KeyError(port_id)
        self._remote_stops.add(port_id)

    def reset(self, port_id: str) -> None:
        """Operator reset of a locked-out port (takes effect on the next tick)."""
        if port_id not in self._hw:
            raise KeyError(port_id)
        self._resets.add(port_id)

    def meters(self) -> dict[str, Meter]:
        """Each port's meter."""
        return dict(self._meters)

    def readings(self) -> dict[str, MeterReading | None]:
        """Each port's meter reading as the last tick read it (None: no reading)."""
        return dict(self._readings)

    # --- what survives a restart ----------------------------------------------------

    def restore_ports(self, records: Mapping[str, PortRecord], now: float = 0.0) -> None:
        """Start ports from what a previous run left (``firmware.portstate``), before the
        first tick (``now`` is the time of that tick's clock at start-up)."""
        if self.last is not None:
            raise RuntimeError("ports are restored before the first tick")
        for pid, record in records.items():
            if pid not in self._hw:
                raise KeyError(pid)
            self._states[pid] = restore(record, now)
            self._records[pid] = record_of(self._states[pid], self.port_config)

    def persistent(self) -> dict[str, PortRecord]:
        """The part of each port a restart must not forget, as of the last tick."""
        return dict(self._records)

    # --- the tick -------------------------------------------------------------------

    def step(self, now: float) -> Snapshot:
        self.hardware.advance(now)
        inhibit = self._jumper_mismatch()
        if inhibit is not None:
            return self._inhibited(now, inhibit)
        inputs = {pid: self._read(pid, now) for pid in self.port_ids}
        # First let every port machine see this tick's pilot with the offer it already has,
        # so an unplug or a fault is known to the controller on the same tick.
        first = {
            pid: pm.step(self._states[pid], inputs[pid], now, self.port_config)
            for pid in self.port_ids
        }
        tags = [] if self.tag_reader is None else [read.tag for read in self.tag_reader.take()]
        # Plugged in from the pilot's first B to its next A: a fault or a GFCI wait in between
        # is not an unplug (it must not cost the driver the tag).
        plugged = {pid: pm.session_start(state) is not None for pid, (state, _) in first.items()}
        self.auth_events = self.authorizer.step(now, plugged, tags)
        for pid in sorted(self._remote_stops):
            stopped = self.authorizer.stop(pid, now)
            if stopped is not None:
                self.auth_events.append(stopped)
        self._remote_stops.clear()
        for event in self.auth_events:
            _log_auth(event)
        # A port not authorized is not there for the allocation: never counted, offered 0.
        observations = {
            pid: PortObservation(
                connected=pm.is_connected(state),
                requesting=pm.is_requesting(state),
                metered_a=inputs[pid].metered_a,
                session_start=pm.session_start(state),
                metered_at=self._metered_at(pid, inputs[pid]),
            )
            if self.authorizer.allowed(pid)
            else PortObservation(
                connected=False,
                metered_a=inputs[pid].metered_a,
                metered_at=self._metered_at(pid, inputs[pid]),
            )
            for pid, (state, _) in first.items()
        }
        decision = self.controller.update(now, observations, link_up=self.link_up)
        views = []
        persist = False
        for pid in self.port_ids:
            state, commands = first[pid]
            offer = float(decision.offers.get(pid, 0.0))
            if offer != self._offers[pid]:
                changed = dataclasses.replace(inputs[pid], offer_a=offer)
                state, commands = pm.step(self._states[pid], changed, now, self.port_config)
            if state is not self._states[pid]:  # an unchanged state is the same object
                record = record_of(state, self.port_config)
                if record != self._records[pid]:
                    self._records[pid] = record
                    persist = True
            self._states[pid] = state
            self._offers[pid] = offer
            self._write(pid, commands)
            views.append(self._view(pid, inputs[pid], decision, commands))
        self._resets.clear()
        if persist and self.on_persist is not None:
            self.on_persist(dict(self._records))  # the writing happens elsewhere, off the tick
        snap = Snapshot(now, tuple(views), decision.loads, decision.limits, None)
        self.last = snap
        return snap

    def next_deadline(self) -> float | None:
        """The earliest time a tick would act even if no input changed."""
        times = [pm.next_deadline(s, self.port_config) for s in self._states.values()]
        times.append(self.controller.next_deadline())
        times.append(self.authorizer.next_deadline())
        due = [t for t in times if t is not None and math.isfinite(t)]
        return min(due) if due else None

    async def shutdown(self) -> None:
        """Leave every port safe and release the hardware."""
        # Here as well as in the backend's stop(): safe even if a backend's stop() is not; and
        # the backend's stop (which releases relays, stills a keepalive) even if a write failed.
        try:
            leave_safe(self._hw.values())
        finally:
            await self.hardware.stop()

    # --- internals ------------------------------------------------------------------

    def _jumper_mismatch(self) -> str | None:
        sensed = self.hardware.jumper.installed()
        if sensed == self.jumper:
            return None
        if sensed:
            # The dangerous case: one feed, but the controller would let each port draw a
            # full breaker's worth (the guide: the installer must confirm the jumper).
            return "jumper sensed installed but configured absent: both ports share one feed"
        return "jumper configured installed but not sensed: check the wiring and the config"

    def _inhibited(self, now: float, reason: str) -> Snapshot:
        views = []
        for pid, hw in self._hw.items():
            commands = pm.PortCommands(pm.PilotOut.STATE_F, None, False)
            self._offers[pid] = 0.0
            self._write(pid, commands)
            views.append(
                PortView(
                    pid,
                    pm.Mode.LOCKOUT,
                    None,
                    pm.PilotOut.STATE_F,
                    None,
                    0.0,
                    0.0,
                    None,
                    None,
                    hw.contactor.feedback(),
                    "jumper",
                    "inhibited",
                )
            )
        snap = Snapshot(now, tuple(views), {}, {}, reason)
        self.last = snap
        return snap

    def _read(self, pid: str, now: float) -> pm.PortInputs:
        hw = self._hw[pid]
        sample = hw.pilot.sample()
        try:
            pilot: PilotState | None = state_from_high_voltage(sample.high_v)
        except PilotError:
            pilot = None  # outside every band: the port machine treats it as an error
        diode = None if sample.low_v is None else diode_ok(sample.low_v)
        reading = self._meters[pid].latest()
        self._readings[pid] = reading
        metered: float | None = None
        if reading is not None and now - reading.timestamp <= self.port_config.meter_stale_s:
            metered = reading.max_amps
            if not math.isfinite(metered) or metered < 0.0:
                metered = None  # an absurd reading is no reading
        return pm.PortInputs(
            pilot=pilot,
            diode_ok=diode,
            contactor_closed=hw.contactor.feedback(),
            gfci_tripped=hw.ground.gfci_tripped(),
            ground_ok=hw.ground.ground_ok(),
            metered_a=metered,
            offer_a=self._offers[pid],
            reset=pid in self._resets,
        )

    def _metered_at(self, pid: str, inputs: pm.PortInputs) -> float | None:
        """When this tick's meter value was taken (None when there is none)."""
        reading = self._readings[pid]
        return None if inputs.metered_a is None or reading is None else reading.timestamp

    def _write(self, pid: str, commands: pm.PortCommands) -> None:
        hw = self._hw[pid]
        if commands.reset_gfci:
            hw.ground.reset_gfci()
        key = (commands.pilot, commands.duty_pct, commands.contactor_closed)
        last = self._written[pid]
        if last == key:
            return
        # Open before changing the pilot, close after: the contactor never closes on a pilot
        # that has not yet been set (and never stays closed once the pilot says stop).
        if not commands.contactor_closed:
            hw.contactor.command(False)
        if commands.pilot is pm.PilotOut.PWM and commands.duty_pct is not None:
            hw.pilot.pwm(commands.duty_pct)
        elif commands.pilot is pm.PilotOut.STATE_F:
            hw.pilot.state_f()
        else:
            hw.pilot.steady()
        if commands.contactor_closed:
            hw.contactor.command(True)
        self._written[pid] = key

    def _view(
        self, pid: str, inputs: pm.PortInputs, decision: Decision, commands: pm.PortCommands
    ) -> PortView:
        state = self._states[pid]
        reading = self._readings[pid]  # the one this tick read: the meter is asked once
        return PortView(
            id=pid,
            mode=state.mode,
            pilot=inputs.pilot,
            pilot_out=commands.pilot,
            duty_pct=commands.duty_pct,
            offer_a=self._offers[pid],
            effective_a=float(decision.effective.get(pid, self._offers[pid])),
            drawn_a=inputs.metered_a,
            energy_wh=None if reading is None else reading.energy_wh,
            contactor=self._hw[pid].contactor.feedback(),
            fault=pm.fault(state),
            binding=decision.binding.get(pid, ""),
            authorized=self.authorizer.allowed(pid),
        )
