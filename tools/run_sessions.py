"""The charging sessions of a simulated run: the tracker a station runs, fed every tick.

One job: ``RunSessions`` keeps, for every station of a run (one, or a coordinated site's),
``firmware.sessions``' tracker fed with each tick's snapshot, readings and authorization, as
``ampshare run`` does, with the scenario's ``start`` as the wall clock; the records stay in
memory: a run's sessions are part of its summary (``ampshare sim``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from firmware.auth import AuthMode
from firmware.sessions import SessionRecord, SessionTracker
from firmware.sessions.live import STOP_REASONS
from firmware.station import Snapshot, Station
from tools.scenario import Scenario

__all__ = ["RunSessions"]


class RunSessions:
    """The sessions of every station of a run."""

    def __init__(self, scenario: Scenario, stations: Sequence[Station]) -> None:
        self.stations = list(stations)
        self.start = scenario.start.replace(tzinfo=scenario.start.tzinfo or dt.UTC)
        self.trackers = [
            SessionTracker(
                scenario.name,
                station.port_ids,
                voltage_v={p.id: p.voltage_v for p in station.site.ports},
                has_register={
                    pid: bool(getattr(m, "has_energy_register", False))
                    for pid, m in station.meters().items()
                },
            )
            for station in self.stations
        ]
        self.records: dict[str, SessionRecord] = {}
        # Whose snapshot a snapshot is: by its ports (a site's runner hands only the stations
        # that have ticked so far).
        self._of = {pid: i for i, st in enumerate(self.stations) for pid in st.port_ids}

    def __call__(self, snap: Snapshot) -> None:
        """One tick's snapshot of one of the stations."""
        if not snap.ports:
            return
        index = self._of[snap.ports[0].id]
        station, tracker = self.stations[index], self.trackers[index]
        for event in station.auth_events:
            if event.port is not None and event.kind in STOP_REASONS:
                tracker.stop(event.port, STOP_REASONS[event.kind])
        tags = station.authorizer.settings.mode is AuthMode.TAGS
        wall = self.start + dt.timedelta(seconds=snap.t)
        for ev in tracker.step(
            snap.t, wall, snap, station.readings(), station.authorizer.tags() if tags else None
        ):
            self.records[ev.record.session_id] = ev.record

    def summary(self) -> list[dict[str, Any]]:
        """One entry per session, in start order: times in station seconds from the start;
        a session still open at the end of the run has no stop, and its energy is up to its
        last checkpoint (at most ``CHECKPOINT_S`` behind), as a station's record would be."""
        out = []
        for r in sorted(self.records.values(), key=lambda r: (r.start_at, r.port_id)):
            stop = None if r.stop_at is None else (r.stop_at - self.start).total_seconds()
            out.append(
                {
                    "port": r.port_id,
                    "id_tag": r.id_tag,
                    "start_s": (r.start_at - self.start).total_seconds(),
                    "stop_s": stop,
                    "energy_kwh": round(r.energy_wh / 1000.0, 4),
                    "stop_reason": None if r.stop_reason is None else r.stop_reason.value,
                    "stop_detail": r.stop_detail,
                }
            )
        return out
