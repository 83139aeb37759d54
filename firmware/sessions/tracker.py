"""Charging sessions from what the station loop sees, tick by tick (pure: no clock, no I/O).

One job: turn each tick's :class:`firmware.station.Snapshot` (and the meter readings behind
it) into session events, :class:`SessionEvent` (start, checkpoint, stop), that the store
(``firmware.sessions.store``) writes off the tick. It is handed the time (``now_s``, the
station's monotonic clock; ``wall``, the wall clock in UTC) and never reads one.

When a session starts (per port, at most one open at a time):

* free mode (``authorized`` not given): when a vehicle is plugged in, i.e. the port machine is
  in B1, B2, C1 or C2 (``firmware.port.is_connected``), after a tick with no session;
* authorization mode (``authorized`` given, e.g. ``Authorizer.tags()``: authorized port ->
  tag): only when the plugged-in port is authorized; the record carries the tag. A plugged-in
  port waiting for a tag has no session.

When it ends, with OCPP 1.6's reason (``firmware.sessions.model.StopReason``):

* ``stop(port, reason)``: an explicit stop (``Local``: the same tag presented again;
  ``Remote``: a central system; ``DeAuthorized``...), taken on the next tick, which supplies
  its time and meter. It wins over an unplug seen on that same tick (it was asked first).
* ``EVDisconnected``: the pilot reads A (the port machine's mode A; also a port waiting to
  re-arm its GFCI, which keeps that mode while the pilot shows the unplug).
* ``Other`` with the fault in ``stop_detail``, for a fault that ends charging on this plug-in:
  a FAULT that only an unplug clears (diode, overdraw, contactor) and a LOCKOUT (weld, GFCI
  re-arms exhausted, an unreadable state file, a jumper mismatch). Not a condition after
  which the port machine resumes the same plug-in by itself (a GFCI trip waiting to re-arm,
  a ground loss, an invalid pilot): ending the session there would let the energy of the
  resumed charge flow with no session, or split one plug-in into several. Such a session
  ends at the unplug, or at the lockout a GFCI's last trip becomes.
* ``DeAuthorized`` (detail "authorization withdrawn") when, in authorization mode, a port
  with an open session is no longer authorized and nobody called ``stop`` with a reason.

After a stop with the vehicle still plugged in, the port gets no new session until it is seen
unplugged (or, in authorization mode, authorized afresh): a stopped session does not restart
by itself.

Checkpoints: while a session is open, on every tick whose offer differs from the last tick's,
and whenever ``checkpoint_s`` (default 60 s) of station time have passed since the last event
of the session (a wall clock that jumps changes nothing). Each event carries the whole
record as of that tick, so writing the newest event of a session is enough (the store relies
on it when it must drop events).

Energy: a port whose meter has an energy register (``has_register``: the station knows which
meters are real energy meters: a Modbus meter's import register, not the board's current
transformer, whose ``MeterReading.energy_wh`` the backend integrates itself and restarts at 0)
uses the register's Wh (``EnergySource.REGISTER``); a reading is used only when the station
found it fresh (``PortView.drawn_a`` not None), and a register that goes backwards is ignored.
Otherwise (or when a register port's meter has not answered since start-up, so there is no
start reading) the tracker integrates power over each tick interval (``INTEGRATED``, from 0):
the last fresh reading's ``power_w`` (or, when the meter reports 0 W, the sum of its phase
currents x the port's voltage) held until the next tick. A tick without a fresh reading adds
nothing: the energy of a gap is unknown, and guessing it would invent kWh.

Startup recovery (``recover``): sessions the store still has open (the station lost power or
its process) are closed with ``PowerLoss`` at their last checkpoint: stop time = the last
checkpoint's time, meter stop = its Wh; what happened after it is not known, so nothing is
claimed for it. A vehicle still plugged in afterwards starts a NEW session on the first tick
(in authorization mode, once authorized again): the register may have moved while the station
was off (another controller, a manual test) and the gap is unknown, so continuing the old
record would claim energy nobody saw; a new session is honest about both.

The only thing not given to it is a session's id: a UUID4 (``new_id``; model docstring).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from firmware.port import CONNECTED_MODES, Mode
from firmware.sessions.model import EnergySource, SessionRecord, StopReason, utc
from hal.interfaces import MeterReading
from hal.pilot import PilotState

if TYPE_CHECKING:
    # Types only: the station loop may import this module without a cycle.
    from firmware.station import PortView, Snapshot

__all__ = [
    "CHECKPOINT_S",
    "CONNECTED_MODES",
    "RECOVERED",
    "WITHDRAWN",
    "EventKind",
    "SessionEvent",
    "SessionTracker",
]

# Design choice, no standard: how much progress a power cut may cost (the last checkpoint is
# where a recovered session ends), against a write per minute per charging port.
CHECKPOINT_S = 60.0
# The modes in which a vehicle is plugged in and the port can charge it: the same set as
# firmware.port.is_connected, which asks a whole PortState (a test keeps the two equal).

# The detail of a DeAuthorized stop that nobody gave a reason for.
WITHDRAWN = "authorization withdrawn"
# The detail of a session closed by recover().
RECOVERED = "recovered at start-up"


class EventKind(enum.Enum):
    """What an event does to its record."""

    START = "start"  # a new record
    CHECKPOINT = "checkpoint"  # progress of an open record
    STOP = "stop"  # the record closed


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """What the store must write: the whole ``record`` as of this event (an upsert)."""

    kind: EventKind
    record: SessionRecord


@dataclass(slots=True)
class _Open:
    record: SessionRecord  # as last emitted
    meter_wh: float  # the meter now, on the record's scale
    max_offer_a: float
    max_drawn_a: float
    checkpoint_s: float  # station time of the last event written


@dataclass(slots=True)
class _Port:
    session: _Open | None = None
    spent: bool = False  # stopped with the vehicle there: no new session until unplug/re-auth
    authorized: bool = False  # on the last tick (authorization mode only)
    stop: tuple[StopReason, str | None] | None = None  # asked for, taken on the next tick
    offer_a: float = 0.0  # the last tick's offer
    power_w: float | None = None  # the last tick's fresh power, held until this tick
    register_wh: float | None = None  # the last fresh register reading


class SessionTracker:
    """The sessions of one station's ports (module docstring)."""

    def __init__(
        self,
        station_id: str,
        port_ids: Sequence[str],
        *,
        voltage_v: Mapping[str, float],
        has_register: Mapping[str, bool] | None = None,
        checkpoint_s: float = CHECKPOINT_S,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        if not (math.isfinite(checkpoint_s) and checkpoint_s > 0.0):
            raise ValueError(
                f"checkpoint_s must be a positive number of seconds, not {checkpoint_s}"
            )
        missing = [pid for pid in port_ids if pid not in voltage_v]
        if missing:
            raise ValueError(f"no voltage for port(s) {missing}")
        registers = dict(has_register or {})
        unknown = sorted(set(registers) - set(port_ids))
        if unknown:
            raise ValueError(f"has_register names unknown port(s) {unknown}")
        self.station_id = station_id
        self.port_ids = tuple(port_ids)
        self.voltage_v = {pid: float(voltage_v[pid]) for pid in self.port_ids}
        self.has_register = {pid: registers.get(pid, False) for pid in self.port_ids}
        self.checkpoint_s = checkpoint_s
        self._new_id = new_id or (lambda: str(uuid.uuid4()))
        self._ports = {pid: _Port() for pid in self.port_ids}
        self._last_now: float | None = None

    # --- outside the tick -------------------------------------------------------------

    def recover(self, open_records: Iterable[SessionRecord]) -> list[SessionEvent]:
        """Close what a previous run left open: ``PowerLoss`` at each record's last checkpoint
        (module docstring). Call it at start-up with the store's open sessions."""
        mine = {p.session.record.session_id for p in self._ports.values() if p.session}
        events = []
        for record in open_records:
            if not record.is_open or record.session_id in mine:
                continue
            closed = dataclasses.replace(
                record,
                stop_at=record.checkpoint_at,
                meter_stop_wh=record.checkpoint_wh,
                stop_reason=StopReason.PowerLoss,
                stop_detail=RECOVERED,
            )
            events.append(SessionEvent(EventKind.STOP, closed))
        return events

    def stop(self, port_id: str, reason: StopReason, detail: str | None = None) -> bool:
        """Ask for the port's session to end with ``reason`` on the next tick; False (and
        nothing asked) when the port has no open session."""
        port = self._ports[port_id]
        if port.session is None:
            return False
        port.stop = (reason, detail)
        return True

    def current(self, port_id: str) -> SessionRecord | None:
        """The port's open session as last written (start or checkpoint), None without one."""
        session = self._ports[port_id].session
        return None if session is None else session.record

    # --- the tick ---------------------------------------------------------------------

    def step(
        self,
        now_s: float,
        wall: dt.datetime,
        snap: Snapshot,
        readings: Mapping[str, MeterReading | None],
        authorized: Mapping[str, str | None] | None = None,
    ) -> list[SessionEvent]:
        """One control tick: ``now_s`` station time, ``wall`` the wall clock (aware),
        ``snap`` what the station did, ``readings`` each port's meter reading of this tick,
        ``authorized`` (authorization mode only) each authorized port's tag. Returns what
        the store must write, in order."""
        wall = utc(wall)
        elapsed = 0.0 if self._last_now is None else max(0.0, now_s - self._last_now)
        self._last_now = now_s
        views = {view.id: view for view in snap.ports}
        events: list[SessionEvent] = []
        for pid in self.port_ids:
            view = views.get(pid)
            if view is None:
                continue
            reading = readings.get(pid)
            fresh = reading if reading is not None and view.drawn_a is not None else None
            events += self._port_step(pid, now_s, wall, elapsed, view, fresh, authorized)
        return events

    def _port_step(
        self,
        pid: str,
        now_s: float,
        wall: dt.datetime,
        elapsed: float,
        view: PortView,
        fresh: MeterReading | None,
        authorized: Mapping[str, str | None] | None,
    ) -> list[SessionEvent]:
        port = self._ports[pid]
        events: list[SessionEvent] = []
        unplugged = view.mode is Mode.A or view.pilot is PilotState.A
        allowed = authorized is None or pid in authorized
        register = _register_wh(fresh)
        session = port.session

        if session is not None:
            self._progress(port, session, elapsed, view, register)
            end = self._end(port, view, unplugged, allowed)
            if end is not None:
                reason, detail = end
                record = self._record(session, wall, reason=reason, detail=detail)
                events.append(SessionEvent(EventKind.STOP, record))
                port.session = session = None
                port.spent = not unplugged
        port.stop = None  # asked for a session that has ended (or never was): void

        if unplugged or (authorized is not None and allowed and not port.authorized):
            port.spent = False
        if session is None and not port.spent and allowed and view.mode in CONNECTED_MODES:
            tag = None if authorized is None else authorized[pid]
            events.append(self._start(pid, port, now_s, wall, view, register, tag))
        elif session is not None:
            due = now_s - session.checkpoint_s >= self.checkpoint_s
            if due or view.offer_a != port.offer_a:
                session.record = self._record(session, wall)
                session.checkpoint_s = now_s
                events.append(SessionEvent(EventKind.CHECKPOINT, session.record))

        port.offer_a = view.offer_a
        port.authorized = allowed
        port.power_w = None if fresh is None else self._power_w(pid, fresh)
        if register is not None:
            port.register_wh = register
        return events

    def _progress(
        self, port: _Port, session: _Open, elapsed: float, view: PortView, register: float | None
    ) -> None:
        """The session's meter and maxima after this tick."""
        if session.record.energy_source is EnergySource.REGISTER:
            if register is not None and register >= session.meter_wh:
                session.meter_wh = register
        elif port.power_w is not None:
            # The power of the last fresh reading, held over the interval up to this tick.
            session.meter_wh += port.power_w * elapsed / 3600.0
        session.max_offer_a = max(session.max_offer_a, view.offer_a)
        if view.drawn_a is not None:
            session.max_drawn_a = max(session.max_drawn_a, view.drawn_a)

    def _end(
        self, port: _Port, view: PortView, unplugged: bool, allowed: bool
    ) -> tuple[StopReason, str | None] | None:
        """Why the open session ends on this tick, None if it goes on (module docstring)."""
        if port.stop is not None:
            return port.stop
        if unplugged:
            return StopReason.EVDisconnected, None
        if view.mode is Mode.LOCKOUT or (view.mode is Mode.FAULT and view.fault != "ground"):
            return StopReason.Other, view.fault or view.mode.value.lower()
        if not allowed:
            return StopReason.DeAuthorized, WITHDRAWN
        return None

    def _start(
        self,
        pid: str,
        port: _Port,
        now_s: float,
        wall: dt.datetime,
        view: PortView,
        register: float | None,
        tag: str | None,
    ) -> SessionEvent:
        # Nothing flows before the contactor closes, which is after the plug-in tick: the
        # last register reading seen is the start's when this tick brought none.
        start_wh = register if register is not None else port.register_wh
        if self.has_register[pid] and start_wh is not None:
            source, meter = EnergySource.REGISTER, start_wh
        else:
            source, meter = EnergySource.INTEGRATED, 0.0
        drawn = 0.0 if view.drawn_a is None else view.drawn_a
        record = SessionRecord(
            session_id=self._new_id(),
            station_id=self.station_id,
            port_id=pid,
            id_tag=tag,
            start_at=wall,
            meter_start_wh=meter,
            energy_source=source,
            checkpoint_at=wall,
            checkpoint_wh=meter,
            max_offer_a=view.offer_a,
            max_drawn_a=drawn,
        )
        port.session = _Open(record, meter, view.offer_a, drawn, now_s)
        return SessionEvent(EventKind.START, record)

    @staticmethod
    def _record(
        session: _Open,
        wall: dt.datetime,
        *,
        reason: StopReason | None = None,
        detail: str | None = None,
    ) -> SessionRecord:
        """The session's record as of ``wall``: a checkpoint, or the stop with ``reason``."""
        record = dataclasses.replace(
            session.record,
            checkpoint_at=wall,
            checkpoint_wh=session.meter_wh,
            max_offer_a=session.max_offer_a,
            max_drawn_a=session.max_drawn_a,
        )
        if reason is None:
            return record
        return dataclasses.replace(
            record,
            stop_at=wall,
            meter_stop_wh=session.meter_wh,
            stop_reason=reason,
            stop_detail=detail,
        )

    def _power_w(self, pid: str, reading: MeterReading) -> float | None:
        """What the port draws by this reading (W), None when the reading says nothing."""
        power = reading.power_w
        if not math.isfinite(power):
            return None
        if power == 0.0:
            # Some meters report no power; the currents and the port's voltage still do.
            power = sum(reading.amps) * self.voltage_v[pid]
            if not math.isfinite(power):
                return None
        return max(power, 0.0)  # an export is no energy delivered


def _register_wh(reading: MeterReading | None) -> float | None:
    """A fresh reading's register, None when there is none or it is absurd."""
    if reading is None:
        return None
    wh = reading.energy_wh
    return wh if math.isfinite(wh) and wh >= 0.0 else None
