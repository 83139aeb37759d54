"""The link's messages (schema version 1) and their JSON encoding, validated on the way in.

One job: turn telemetry and limit messages into bytes and back, refusing anything that is not
exactly schema 1 (docs/mqtt.md is the prose version of this file). A payload that fails here
is never applied: the caller counts it and keeps its own limits (docs/design.md "Safety is local").
Nothing here knows about MQTT or clocks; ``ts`` values are whatever clock the sender uses, and
are only ever compared with earlier ``ts`` values from the same sender.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1
# Anything bigger is not a message of ours (a 100-port station's telemetry is ~20 kB).
MAX_PAYLOAD_BYTES = 256 * 1024
# An id is what goes into a topic level: no MQTT wildcards or separators.
_ID_FORBIDDEN = frozenset("/+#\0")
STATION_STATUSES = ("sharing", "fallback", "inhibited", "offline")


class MessageError(ValueError):
    """A payload that is not a valid schema-1 message; ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PortTelemetry:
    """One port as its station sees it on one tick."""

    mode: str  # firmware.port.Mode value ("A", "B1", "C2", ...)
    pilot: str | None  # J1772 state letter the port reads, None when out of every band
    offered_a: float  # on the pilot now
    drawn_a: float | None  # metered; None when the meter is stale
    energy_wh: float | None  # meter register; None when unknown
    connected: bool
    requesting: bool  # state C: the vehicle asks for current
    session_start: float | None  # station clock seconds; orders sessions for fcfs / rotation
    fault: str | None = None
    # The most this port may be offered now (the remote limit in force, or its fallback
    # level); optional, added for the coordinator's bookkeeping (a restarted coordinator
    # learns what each station may offer before it sends anything).
    limit_a: float | None = None


@dataclass(frozen=True, slots=True)
class Telemetry:
    """Station -> coordinator, every few seconds and on every change."""

    station: str
    seq: int  # increases by one per message from this station (gaps = lost messages)
    ts: float  # the station's clock
    status: str  # one of STATION_STATUSES
    ports: Mapping[str, PortTelemetry]
    v: int = SCHEMA_VERSION
    # ``ts`` of the Limits message in force (the station's acknowledgement), None when it has
    # none (fallback). Optional, added so the coordinator knows a decrease was applied.
    limits_ts: float | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """Coordinator -> one station: the most each of its ports may be offered.

    ``ts`` is the coordinator's wall clock (seconds since the epoch, or virtual time in the
    simulator); a station applies a message only if its ``ts`` is newer than the last one it
    applied, so a replayed or reordered message is refused, and a restarted coordinator (a
    later wall clock) is not. ``valid_s`` counts from when the station receives the message,
    so the stations' and coordinator's clocks never need to agree.
    """

    site: str
    station: str
    seq: int
    ts: float
    valid_s: float
    ports: Mapping[str, float] = field(default_factory=dict)
    v: int = SCHEMA_VERSION


# --- encoding -----------------------------------------------------------------------------


def encode_telemetry(msg: Telemetry) -> bytes:
    ports = {
        pid: {
            "mode": p.mode,
            "pilot": p.pilot,
            "offered_a": _round(p.offered_a),
            "drawn_a": None if p.drawn_a is None else _round(p.drawn_a),
            "energy_wh": None if p.energy_wh is None else _round(p.energy_wh),
            "connected": p.connected,
            "requesting": p.requesting,
            "session_start": p.session_start,
            "fault": p.fault,
            # Optional keys are written only when set, so older messages encode as before.
            **({} if p.limit_a is None else {"limit_a": _round(p.limit_a)}),
        }
        for pid, p in msg.ports.items()
    }
    doc: dict[str, Any] = {
        "v": msg.v,
        "station": msg.station,
        "seq": msg.seq,
        "ts": msg.ts,
        "status": msg.status,
        "ports": ports,
    }
    if msg.limits_ts is not None:
        doc["limits_ts"] = msg.limits_ts
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def encode_limits(msg: Limits) -> bytes:
    doc = {
        "v": msg.v,
        "site": msg.site,
        "station": msg.station,
        "seq": msg.seq,
        "ts": msg.ts,
        "valid_s": msg.valid_s,
        "ports": {pid: _round(a) for pid, a in msg.ports.items()},
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def _round(x: float) -> float:
    return round(float(x), 3)


# --- decoding -----------------------------------------------------------------------------


def decode_telemetry(payload: bytes) -> Telemetry:
    doc = _document(payload)
    _keys(doc, {"v", "station", "seq", "ts", "status", "ports"}, "telemetry", {"limits_ts"})
    status = _str(doc, "status")
    if status not in STATION_STATUSES:
        raise MessageError("schema", f"status {status!r} is not one of {STATION_STATUSES}")
    raw_ports = doc["ports"]
    if not isinstance(raw_ports, dict):
        raise MessageError("schema", "ports must be an object")
    ports: dict[str, PortTelemetry] = {}
    for pid, raw in raw_ports.items():
        _id(pid, "port id")
        if not isinstance(raw, dict):
            raise MessageError("schema", f"port {pid!r} must be an object")
        _keys(
            raw,
            {"mode", "pilot", "offered_a", "drawn_a", "energy_wh", "connected", "requesting"},
            f"port {pid!r}",
            optional={"session_start", "fault", "limit_a"},
        )
        ports[pid] = PortTelemetry(
            mode=_str(raw, "mode"),
            pilot=_opt_str(raw, "pilot"),
            offered_a=_amps(raw, "offered_a"),
            drawn_a=None if raw["drawn_a"] is None else _amps(raw, "drawn_a"),
            energy_wh=None if raw["energy_wh"] is None else _nonneg(raw, "energy_wh"),
            connected=_bool(raw, "connected"),
            requesting=_bool(raw, "requesting"),
            session_start=None if raw.get("session_start") is None else _num(raw, "session_start"),
            fault=_opt_str(raw, "fault"),
            limit_a=None if raw.get("limit_a") is None else _amps(raw, "limit_a"),
        )
    return Telemetry(
        station=_id(_str(doc, "station"), "station"),
        seq=_seq(doc),
        ts=_num(doc, "ts"),
        status=status,
        ports=ports,
        limits_ts=None if doc.get("limits_ts") is None else _num(doc, "limits_ts"),
    )


def decode_limits(payload: bytes) -> Limits:
    doc = _document(payload)
    _keys(doc, {"v", "site", "station", "seq", "ts", "valid_s", "ports"}, "limits")
    valid_s = _num(doc, "valid_s")
    if not valid_s > 0.0:
        raise MessageError("value", f"valid_s must be > 0, not {valid_s}")
    raw_ports = doc["ports"]
    if not isinstance(raw_ports, dict):
        raise MessageError("schema", "ports must be an object")
    ports = {_id(pid, "port id"): _amps(raw_ports, pid) for pid in raw_ports}
    return Limits(
        site=_id(_str(doc, "site"), "site"),
        station=_id(_str(doc, "station"), "station"),
        seq=_seq(doc),
        ts=_num(doc, "ts"),
        valid_s=valid_s,
        ports=ports,
    )


def _document(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageError("size", f"{len(payload)} bytes (at most {MAX_PAYLOAD_BYTES})")
    try:
        doc = json.loads(payload, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError("json", str(exc)) from None
    except RecursionError:
        raise MessageError("json", "nested too deeply") from None
    if not isinstance(doc, dict):
        raise MessageError("schema", "a message is a JSON object")
    version = doc.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise MessageError("version", f"schema version {version!r} (this station speaks 1)")
    return doc


def _no_constant(name: str) -> Any:
    raise MessageError("value", f"{name} is not a number")


def _keys(
    doc: Mapping[str, Any], required: set[str], what: str, optional: set[str] | None = None
) -> None:
    missing = required - doc.keys()
    if missing:
        raise MessageError("schema", f"{what}: missing {', '.join(sorted(missing))}")
    extra = doc.keys() - required - (optional or set())
    if extra:
        raise MessageError("schema", f"{what}: unknown {', '.join(sorted(extra))}")


def _num(doc: Mapping[str, Any], key: str) -> float:
    value = doc[key]
    if type(value) not in (int, float) or not math.isfinite(value):
        raise MessageError("value", f"{key} must be a finite number, not {value!r}")
    return float(value)


def _nonneg(doc: Mapping[str, Any], key: str) -> float:
    value = _num(doc, key)
    if value < 0.0:
        raise MessageError("value", f"{key} must be >= 0, not {value}")
    return value


# No port of ours exists above this (J1772 AC level 2 tops out at 80 A; 3-phase 63 A).
MAX_AMPS = 1000.0


def _amps(doc: Mapping[str, Any], key: str) -> float:
    value = _nonneg(doc, key)
    if value > MAX_AMPS:
        raise MessageError("value", f"{key}: {value} A is absurd")
    return value


def _seq(doc: Mapping[str, Any]) -> int:
    value = doc["seq"]
    if type(value) is not int or value < 0:
        raise MessageError("value", f"seq must be an integer >= 0, not {value!r}")
    return value


def _str(doc: Mapping[str, Any], key: str) -> str:
    value = doc[key]
    if not isinstance(value, str):
        raise MessageError("schema", f"{key} must be a string, not {value!r}")
    return value


def _opt_str(doc: Mapping[str, Any], key: str) -> str | None:
    return None if doc.get(key) is None else _str(doc, key)


def _bool(doc: Mapping[str, Any], key: str) -> bool:
    value = doc[key]
    if not isinstance(value, bool):
        raise MessageError("schema", f"{key} must be true or false, not {value!r}")
    return value


def _id(value: str, what: str) -> str:
    if not value or len(value) > 64 or any(c in _ID_FORBIDDEN for c in value):
        raise MessageError("schema", f"{what} {value!r} is not a valid id")
    return value
