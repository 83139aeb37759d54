"""Charging sessions that survive a power cut (issue 14): records of who charged how much.

One job: the package's public names. ``model`` is the record (:class:`SessionRecord`, OCPP's
:class:`StopReason`), ``tracker`` makes records from the station's ticks (pure), ``store``
keeps them in SQLite off the tick. The wiring, in brief::

    store = SessionStore(sessions_path(station_id, state_dir))
    tracker = SessionTracker(station_id, port_ids, voltage_v=..., has_register=...)
    store.submit(tracker.recover(store.open_sessions()))   # at start-up
    store.open()                                          # or as a Service: start()/stop()
    ...
    store.submit(tracker.step(now, wall, snap, readings, authorized))  # every tick
    ...
    store.close()
"""

from firmware.sessions.model import EnergySource, SessionRecord, StopReason
from firmware.sessions.store import SCHEMA_VERSION, SessionStore, sessions_path
from firmware.sessions.tracker import EventKind, SessionEvent, SessionTracker

__all__ = [
    "SCHEMA_VERSION",
    "EnergySource",
    "EventKind",
    "SessionEvent",
    "SessionRecord",
    "SessionStore",
    "SessionTracker",
    "StopReason",
    "sessions_path",
]
