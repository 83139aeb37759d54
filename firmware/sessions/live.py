"""A running station's sessions: the tracker fed on every tick, the store written off it.

One job: join ``SessionTracker`` (pure) and ``SessionStore`` (the writer thread) to a
``firmware.station.Station``. ``ticked`` is the runner's per-tick hook: it hands the tick's
snapshot, meter readings and authorization to the tracker and the resulting records to the
store's queue, which never waits. A tag presented again (``firmware.auth``, event "stop")
ends its session with OCPP's reason ``Local``.

At start-up (``start``) the sessions a previous run left open are closed with ``PowerLoss`` at
their last checkpoint: the station cannot tell a power cut from a kill (SIGKILL, the watchdog's
SIGABRT), which leave the same trace. When the run ends in the process (``stop``, after the
ports were left safe: a signal, ``--for``, or an error) every open session is closed with
``Other`` ("station stopped").
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable

from firmware.auth import AuthMode
from firmware.sessions.model import StopReason
from firmware.sessions.store import SessionStore, sessions_path
from firmware.sessions.tracker import CHECKPOINT_S, SessionTracker
from firmware.station import Snapshot, Station

__all__ = ["STOPPED_DETAIL", "STOP_REASONS", "StationSessions"]

STOPPED_DETAIL = "station stopped"
# Authorization events that end a session, with OCPP's reason (firmware.auth.AuthEvent).
STOP_REASONS = {"stop": StopReason.Local, "remote": StopReason.Remote}


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class StationSessions:
    """The sessions of one running station (module docstring)."""

    def __init__(
        self,
        station: Station,
        station_id: str,
        voltage_v: dict[str, float],
        state_dir: str | os.PathLike[str] | None = None,
        *,
        checkpoint_s: float = CHECKPOINT_S,
        wall: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.station = station
        self.wall = wall
        meters = station.meters()
        self.tracker = SessionTracker(
            station_id,
            station.port_ids,
            voltage_v=voltage_v,
            has_register={
                pid: bool(getattr(meter, "has_energy_register", False))
                for pid, meter in meters.items()
            },
            checkpoint_s=checkpoint_s,
        )
        self.store = SessionStore(sessions_path(station_id, state_dir))
        self._last: Snapshot | None = None

    async def start(self) -> None:
        # Before the first tick (off it): what a power cut left open is closed first.
        self.store.submit(self.tracker.recover(self.store.open_sessions()))
        self.store.open()

    def ticked(self, snap: Snapshot) -> None:
        for event in self.station.auth_events:
            if event.port is not None and event.kind in STOP_REASONS:
                self.tracker.stop(event.port, STOP_REASONS[event.kind])
        self._step(snap)
        self._last = snap

    def _step(self, snap: Snapshot) -> None:
        station = self.station
        tags_mode = station.authorizer.settings.mode is AuthMode.TAGS
        authorized = station.authorizer.tags() if tags_mode else None
        events = self.tracker.step(snap.t, self.wall(), snap, station.readings(), authorized)
        if events:
            self.store.submit(events)

    async def stop(self) -> None:
        if self._last is not None:
            for pid in self.station.port_ids:
                self.tracker.stop(pid, StopReason.Other, STOPPED_DETAIL)
            self._step(self._last)
        self.store.close()
