"""A charging session's record: what one plug-in delivered, to whom, and why it ended.

One job: the record and its vocabulary (:class:`SessionRecord`, :class:`StopReason`,
:class:`EnergySource`), shared by the tracker that makes records (``firmware.sessions.tracker``,
pure), the store that keeps them (``firmware.sessions.store``) and the command that shows them
(``ampshare sessions``).

* **Session id**: a UUID4 string (RFC 9562), made when the session starts. Not
  ``station-port-sequence``: a sequence would have to survive restarts and clock jumps (a
  Raspberry Pi without a real-time clock boots at its last saved time), which needs the
  store before the first tick; a random id is unique without it. An OCPP central system
  assigns its own transaction id; this one names the record in the station's database.
* **Times** are wall-clock, UTC, timezone-aware ``datetime`` (a naive one is refused); the
  store keeps them as ISO 8601 text. Intervals (checkpoints, integration) are measured on the
  station's own monotonic clock by the tracker, never by subtracting these.
* **Energy**: ``meter_start_wh`` and ``meter_stop_wh`` are on the meter's own scale (OCPP's
  meterStart/meterStop). With an energy register (``EnergySource.REGISTER``) they are the
  register's readings; when the energy is integrated from metered power
  (``EnergySource.INTEGRATED``) the scale is the session's own: it starts at 0. Delivered
  energy is ``meter_stop_wh - meter_start_wh`` (so far: the last checkpoint's).
* **Checkpoint**: ``checkpoint_at`` / ``checkpoint_wh`` are the last progress written while
  the session was open; a session the station could not close (power cut, crash) is closed
  at start-up at its last checkpoint (``StopReason.PowerLoss``, tracker docstring).
* Columns added in schema version 2 (``energy_source``, ``stop_detail``, ``max_offer_a``,
  ``max_drawn_a``) are None in records written by version 1, which did not know them.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

__all__ = ["EnergySource", "SessionRecord", "StopReason", "utc"]


class StopReason(enum.Enum):
    """Why a session ended: OCPP 1.6's ``StopTransaction.req`` reason (OCPP 1.6 section 7.42,
    "Reason"), names and values spelled exactly as OCPP spells them.

    What this station uses: ``EVDisconnected`` (unplugged), ``Local`` (the session's tag
    presented again), ``Remote`` (a central system or app asked), ``DeAuthorized`` (the
    authorization was refused or withdrawn), ``PowerLoss`` (the station lost power or its
    process with the session open: closed at start-up at the last checkpoint), ``Other``
    (anything else, with ``SessionRecord.stop_detail`` saying what).

    A port fault that ends a session (weld, overdraw, diode, GFCI retries exhausted...) is
    ``Other`` with the fault's name in ``stop_detail``, never ``EmergencyStop``: OCPP's
    EmergencyStop means that an emergency stop button was used, and a fault is not that.
    The reset reasons (``HardReset``, ``SoftReset``, ``Reboot``, ``UnlockCommand``) are here so
    that the vocabulary is OCPP's whole list, for an OCPP link to use.
    """

    DeAuthorized = "DeAuthorized"
    EmergencyStop = "EmergencyStop"
    EVDisconnected = "EVDisconnected"
    HardReset = "HardReset"
    Local = "Local"
    Other = "Other"
    PowerLoss = "PowerLoss"
    Reboot = "Reboot"
    Remote = "Remote"
    SoftReset = "SoftReset"
    UnlockCommand = "UnlockCommand"


class EnergySource(enum.Enum):
    """Where a session's energy figures come from."""

    # The port meter's energy register (``hal.interfaces.MeterReading.energy_wh`` from a real
    # energy meter, e.g. a Modbus meter's import kWh).
    REGISTER = "register"
    # Integrated by the tracker from metered power (or current x voltage) over each tick.
    INTEGRATED = "integrated"


def utc(when: dt.datetime) -> dt.datetime:
    """``when`` in UTC; a naive datetime is refused (its zone would be a guess)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{when!r} has no time zone: session times are timezone-aware")
    return when.astimezone(dt.UTC)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One charging session, open (``stop_at`` None) or closed (module docstring)."""

    session_id: str
    station_id: str
    port_id: str
    id_tag: str | None  # the authorizing tag; None in free mode
    start_at: dt.datetime
    meter_start_wh: float
    energy_source: EnergySource | None  # None: a schema-1 record, which did not say
    checkpoint_at: dt.datetime  # the last progress written (the start, at first)
    checkpoint_wh: float
    max_offer_a: float | None  # the largest offer the port made in the session
    max_drawn_a: float | None  # the largest metered phase current in the session
    stop_at: dt.datetime | None = None
    meter_stop_wh: float | None = None
    stop_reason: StopReason | None = None
    stop_detail: str | None = None  # with Other: the fault ("overdraw", "weld"...) or cause

    def __post_init__(self) -> None:
        # Normalised here so that every record compares and stores in one zone.
        for name in ("start_at", "checkpoint_at", "stop_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, utc(value))
        closed = (self.stop_at, self.meter_stop_wh, self.stop_reason)
        if any(v is None for v in closed) and any(v is not None for v in closed):
            raise ValueError("stop_at, meter_stop_wh and stop_reason go together")

    @property
    def is_open(self) -> bool:
        """The session has not ended (or its end was never written)."""
        return self.stop_at is None

    @property
    def energy_wh(self) -> float:
        """Energy delivered: ``meter_stop - meter_start``; so far (the last checkpoint) while
        the session is open."""
        end = self.checkpoint_wh if self.meter_stop_wh is None else self.meter_stop_wh
        return end - self.meter_start_wh

    @property
    def duration_s(self) -> float:
        """From start to stop; so far (the last checkpoint) while the session is open."""
        end = self.checkpoint_at if self.stop_at is None else self.stop_at
        return (end - self.start_at).total_seconds()
