"""The station side of the site link, pure: limit messages in, port caps and telemetry out.

One job: decide what a station may offer on each port given what its coordinator said and
when, and say so in telemetry. No clock, no I/O: every method takes ``now`` (station clock
seconds) and payloads are bytes, so the same object runs behind MQTT (firmware.link.mqtt), behind
the in-process transport of the simulator, and in tests.

API (the contract the MQTT shell and the simulator code against)::

    link = StationLink(site_id, station_id, port_ids, telemetry_period_s=5.0)
    link.receive_limits(now, payload) -> bool    # applied? rejects counted in link.rejected
    link.caps(now) -> Mapping[str, float] | None # remote caps in force; None: fallback
    link.in_force(now) -> dict[str, float]       # caps to apply, fallback transition included
    link.status(now, snapshot=None) -> str       # "sharing" | "fallback" | "inhibited"
    link.telemetry_due(now, snapshot) -> bool    # period elapsed, or something changed
    link.telemetry(now, snapshot) -> bytes       # schema-1 Telemetry; counts as sent
    link.applied(now, caps)                      # what a tick applied (the controller)
    link.next_deadline(now) -> float | None      # expiry, fallback rise, next telemetry
    ctl = RemoteLimitedController(controller, link)   # firmware.link.remote

``port_ids`` are the ids on the wire (the site file's port ids); ``local_ids`` maps them to the
station's own port ids when those differ (default: the same). Every mapping this module
returns is keyed by local id.

Validation of a limits message (every refusal is counted in ``rejected`` under a short reason
and logged once per episode, i.e. until a message is accepted again): "size" (more than a
limits message for this many ports can weigh, before anything parses it), "unsigned" and
"signature" (with a site key, ``firmware.link.auth``), "flood" (more than ``flood_rate``
messages a second on average, bursts of ``flood_burst``, refused before decoding; with a key,
only authenticated messages count, so forgeries cannot crowd out the coordinator), the
schema-1 codec ("json", "schema", "version", "value"), "site" and "station" (not for us),
"port" (a port that is not ours, or one of ours missing: the whole message is refused),
"value" (``valid_s`` above ``max_valid_s``, 60 s by default), and the freshness rule below:
"replay" and "future". A refused message is never applied; the station keeps what it had,
and falls back when that expires.

Freshness (no single message, whatever its ``ts``, may stop a station from taking its
coordinator's limits for longer than one limit validity). The station keeps an *anchor*: the
``ts`` of the last message it applied and when it received it; from it, the coordinator's
clock now is about ``anchor.ts + (now - anchor.rx)``. While the anchor is live (received less
than ``max_valid_s`` ago) a message must be newer than it ("replay": a replayed, reordered or
duplicated message) and not ahead of that estimate by more than ``FUTURE_SLACK_S`` ("future":
a forged far-future ``ts`` is refused, and so cannot lock out the real coordinator). Once the
anchor is older than ``max_valid_s`` nothing it says is trusted any more and the next valid
message is the new anchor, whatever its ``ts`` (a coordinator restarted on a host whose clock
is behind, or one whose clock was stepped forward, is followed again within one validity).

Remote caps only ever lower: the controller's `LimitTree.with_port_caps` clamps them to each
port's own cap, and the station's own breakers stay in its tree whatever the coordinator says
(docs/mqtt.md, "Threat model").

The safe transition rule (the guide, "Handling Offline Stations": fallback levels are chosen
so that *all* stations at fallback fit; the danger is a mix of stations still on their shared
limits and stations already at fallback):

* Limits expire ``valid_s`` after receipt. At expiry every port's cap becomes
  ``min(last remote cap, fallback level)`` at once: ports above their fallback come down,
  nothing rises.
* Only ``rise_delay_s`` after expiry does a port rise to its full fallback level. Every station
  of the site expires within the publication skew of the others when the coordinator goes away
  (the coordinator republishes to every station every period), so by then every other station
  has come down to at most its fallback, and its vehicles have followed (``rise_delay_s`` =
  5 s EV response + ``SKEW_MARGIN_S``). Stations rising to fallback then only meet stations at
  or below fallback: the configured "all at fallback" case.
* A station that boots, or whose link is forced down, starts that transition at that moment,
  from 0 (boot: nothing known) or from the caps it had.
* Resuming: a valid message applies at once. It is the coordinator's job that a station it
  raises never meets another that has not come down yet (firmware.link.coordinator).

What telemetry acknowledges: the coordinator takes ``limits_ts`` with the offers and readings
next to it as the station's state under those limits (a reading at or under the offer confirms
a decrease). Limits arrive between ticks, so telemetry reports, for the tick that produced its
snapshot, the ``ts`` and caps that tick applied (`RemoteLimitedController` records them with
`StationLink.applied`), never limits received after it; none recorded for that tick: no
acknowledgement.

Size: one thing, the station's side of the link: what it accepts, what it applies, what it
reports.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controller.model import PortObservation
from firmware.link.auth import AuthError, Keyring, open_envelope
from firmware.link.messages import (
    Limits,
    MessageError,
    PortTelemetry,
    Telemetry,
    decode_limits,
    encode_telemetry,
)
from firmware.port import CONNECTED_MODES, Mode
from firmware.station import Snapshot
from hal.pilot import EV_RESPONSE_S, PilotState

__all__ = [
    "DEFAULT_RISE_DELAY_S",
    "DEFAULT_TELEMETRY_PERIOD_S",
    "EV_RESPONSE_S",
    "SKEW_MARGIN_S",
    "StationLink",
]

_log = logging.getLogger("ampshare.link")

# How far apart the stations' limits can expire when the coordinator goes away: one publish
# period (5 s by default: each station got its last message at a different point of the last
# period), one more period for a station whose very last message was lost, and 1 s of
# delivery latency on each side.
SKEW_MARGIN_S = 12.0
DEFAULT_RISE_DELAY_S = EV_RESPONSE_S + SKEW_MARGIN_S
DEFAULT_TELEMETRY_PERIOD_S = 5.0  # docs/mqtt.md: telemetry at least this often, and on change
# A coordinator that says "valid for an hour" is either broken or hostile: a station must find
# out within a minute that nobody coordinates it any more. Also how long one accepted message
# can hold the freshness anchor (module docstring), so how long any single message, forged or
# not, can keep a station from its real coordinator. Twice the coordinator's default validity.
DEFAULT_MAX_VALID_S = 60.0
# How far ahead of the station's estimate of the coordinator's clock a ts may be: the
# coordinator's wall clock is slewed by NTP (at most 500 ppm: 0.03 s a minute) and its ts steps
# by 1 ms per message within one wall tick; 10 s is ample for both, and a forged ts more than
# 10 s ahead is refused rather than allowed to turn every real message into a "replay".
FUTURE_SLACK_S = 10.0
# A coordinator sends a station one message per publish period plus one per change: a few a
# second at most. 20/s sustained (bursts of 50) leaves room for retransmissions and refuses a
# flood before any decoding work is done.
DEFAULT_FLOOD_RATE = 20.0
DEFAULT_FLOOD_BURST = 50.0
# The most a limits message to a station may weigh (bytes): generous for ids of 64 characters
# and the envelope's escaping, small enough that parsing a refused one costs nothing.
LIMITS_BASE_BYTES = 1024
LIMITS_PORT_BYTES = 256
# Telemetry goes out on every change the coordinator acts on; a draw that moved by 1 A is
# one (well above meter noise; it is how a decrease is confirmed), energy counters are not.
DRAWN_CHANGE_A = 1.0
# ... but not more often than this (a vehicle ramping in small steps).
MIN_TELEMETRY_INTERVAL_S = 0.1
# Ticks whose applied limits are kept for telemetry: a snapshot is normally the last tick's
# (the shells poll every 0.1 s, a station ticks at least once a second).
_TICKS_KEPT = 32


@dataclass(frozen=True, slots=True)
class _Applied:
    ts: float
    expires: float
    caps: dict[str, float]  # local port id -> remote cap
    rx: float  # when it was received (station clock): the freshness anchor


class StationLink:
    """One station's view of its coordinator: the limits it applies and the telemetry it sends."""

    # A port this link holds under its own cap is "limited by coordinator" (RemoteLimits).
    label = "coordinator"

    def __init__(
        self,
        site: str,
        station: str,
        port_ids: Sequence[str],
        *,
        local_ids: Mapping[str, str] | None = None,
        telemetry_period_s: float = DEFAULT_TELEMETRY_PERIOD_S,
        rise_delay_s: float = DEFAULT_RISE_DELAY_S,
        max_valid_s: float = DEFAULT_MAX_VALID_S,
        flood_rate: float = DEFAULT_FLOOD_RATE,
        flood_burst: float = DEFAULT_FLOOD_BURST,
        fallback_a: Mapping[str, float] | None = None,
        keyring: Keyring | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if not port_ids:
            raise ValueError("a station link needs at least one port")
        for name, value in (
            ("telemetry_period_s", telemetry_period_s),
            ("max_valid_s", max_valid_s),
            ("flood_rate", flood_rate),
        ):
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be > 0 and finite, not {value}")
        if not (math.isfinite(rise_delay_s) and rise_delay_s >= EV_RESPONSE_S):
            raise ValueError(f"rise_delay_s must be >= {EV_RESPONSE_S} s (EV response)")
        if not flood_burst >= 1.0:
            raise ValueError("flood_burst must be >= 1")
        self.site = site
        self.station = station
        self.port_ids = tuple(port_ids)
        mapping = dict(local_ids) if local_ids is not None else {p: p for p in self.port_ids}
        if set(mapping) != set(self.port_ids) or len(set(mapping.values())) != len(mapping):
            raise ValueError("local_ids must map every port id to a distinct local id")
        self._local = mapping
        self._wire = {local: wire for wire, local in mapping.items()}
        self.local_ids = tuple(mapping[p] for p in self.port_ids)
        # A limits message is ~30 bytes a port plus its header and envelope: anything much
        # larger is not one, and is refused before it is parsed.
        self._max_bytes = LIMITS_BASE_BYTES + LIMITS_PORT_BYTES * len(self.port_ids)
        self.telemetry_period_s = telemetry_period_s
        self.rise_delay_s = rise_delay_s
        self.max_valid_s = max_valid_s
        self.flood_rate = flood_rate
        self.flood_burst = flood_burst
        # The site key (firmware.link.auth): limits must be signed with it, telemetry is. None:
        # an insecure lab link (the config loader allows it only when told to).
        self.keyring = keyring
        self._fallback = dict.fromkeys(self.local_ids, 0.0)
        if fallback_a is not None:
            self.set_fallback(fallback_a)
        self._log = logger or _log

        self.rejected: Counter[str] = Counter()
        self.accepted = 0
        self._episode: Counter[str] = Counter()
        self._applied: _Applied | None = None
        self._boot: float | None = None
        self._sharing_logged: bool | None = None
        self._dropped = False  # the limits in force ended because the link went down
        self._tokens = flood_burst
        self._tokens_at: float | None = None
        self._sessions: dict[str, float] = {}
        # (tick time, limits ts, caps) applied by the last ticks, oldest first.
        self._ticks: deque[tuple[float, float | None, dict[str, float]]] = deque(maxlen=_TICKS_KEPT)
        self._seq = 0
        self._sent_at: float | None = None
        self._sent_sig: tuple[object, ...] | None = None
        self._sent_drawn: dict[str, float | None] = {}

    # --- configuration ------------------------------------------------------------------

    def set_fallback(self, levels: Mapping[str, float]) -> None:
        """Each local port's fallback level (``controller.fallback.fallback_level``); ports not
        named fall back to 0. `RemoteLimitedController` sets them from its tree."""
        unknown = set(levels) - set(self.local_ids)
        if unknown:
            raise ValueError(f"fallback for unknown port(s): {', '.join(sorted(unknown))}")
        for pid, value in levels.items():
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"port {pid!r}: fallback must be >= 0, not {value}")
        self._fallback = {pid: float(levels.get(pid, 0.0)) for pid in self.local_ids}

    # --- limits in ------------------------------------------------------------------------

    def receive_limits(self, now: float, payload: bytes) -> bool:
        """Validate and apply one limits message received at ``now``; False: refused."""
        self._started(now)
        flood = f"more than {self.flood_rate:g} limit messages a second"
        if len(payload) > self._max_bytes:
            return self._reject("size", f"{len(payload)} bytes (at most {self._max_bytes})")
        # With a key, a message is authenticated before it may use the flood allowance: a
        # flood of forgeries must not crowd out the coordinator's own messages (it would
        # starve the station into fallback). Verifying is cheap at this size (tens of us).
        # Without one nothing tells a forgery from the real thing, so the bucket comes first.
        if self.keyring is None and not self._take_token(now):
            return self._reject("flood", flood)
        try:
            body = open_envelope(payload, self.keyring)
            if self.keyring is not None and not self._take_token(now):
                return self._reject("flood", flood)
            msg = decode_limits(body)
        except (AuthError, MessageError) as exc:
            return self._reject(exc.reason, str(exc))
        if msg.site != self.site:
            return self._reject("site", f"for site {msg.site!r}, this is {self.site!r}")
        if msg.station != self.station:
            return self._reject("station", f"for station {msg.station!r}, this is {self.station!r}")
        unknown = sorted(set(msg.ports) - set(self.port_ids))
        if unknown:
            return self._reject("port", f"unknown port(s) {', '.join(unknown)}")
        missing = sorted(set(self.port_ids) - set(msg.ports))
        if missing:
            return self._reject("port", f"no limit for port(s) {', '.join(missing)}")
        if msg.valid_s > self.max_valid_s:
            return self._reject(
                "value", f"valid_s {msg.valid_s:g} s is above the {self.max_valid_s:g} s allowed"
            )
        last = self._applied
        if last is not None and now < last.rx + self.max_valid_s:
            if msg.ts <= last.ts:
                return self._reject(
                    "replay", f"ts {msg.ts!r} is not after the last applied {last.ts!r}"
                )
            expected = last.ts + (now - last.rx)
            if msg.ts > expected + FUTURE_SLACK_S:
                return self._reject(
                    "future",
                    f"ts {msg.ts!r} is {msg.ts - expected:.1f} s ahead of the coordinator's "
                    f"clock as last seen (at most {FUTURE_SLACK_S:g} s)",
                )
        self._apply(now, msg)
        return True

    def _apply(self, now: float, msg: Limits) -> None:
        caps = {self._local[pid]: float(a) for pid, a in msg.ports.items()}
        self._applied = _Applied(msg.ts, now + msg.valid_s, caps, now)
        self._dropped = False
        self.accepted += 1
        if self._episode:
            total = sum(self._episode.values())
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self._episode.items()))
            self._log.info(
                "station %s: limits accepted again after %d refused (%s)",
                self.station,
                total,
                reasons,
            )
            self._episode.clear()

    def reject(self, reason: str, detail: str) -> None:
        """Count a limits message the shell refused before it reached `receive_limits` (e.g.
        "retained"), like the refusals of `receive_limits` itself."""
        self._reject(reason, detail)

    def _reject(self, reason: str, detail: str) -> bool:
        self.rejected[reason] += 1
        if not self._episode[reason]:
            self._log.warning(
                "station %s: limits refused (%s): %s; counting further ones silently until "
                "limits are accepted again",
                self.station,
                reason,
                detail,
            )
        self._episode[reason] += 1
        return False

    def _take_token(self, now: float) -> bool:
        if self._tokens_at is not None and now > self._tokens_at:
            self._tokens = min(
                self.flood_burst, self._tokens + (now - self._tokens_at) * self.flood_rate
            )
        if self._tokens_at is None or now > self._tokens_at:
            self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def drop(self, now: float) -> None:
        """Forget the limits in force now, as if they had expired (the link is known down)."""
        self._started(now)
        applied = self._applied
        if applied is not None and now < applied.expires:
            self._applied = _Applied(applied.ts, now, applied.caps, applied.rx)
            self._dropped = True

    # --- caps out -------------------------------------------------------------------------

    def caps(self, now: float) -> Mapping[str, float] | None:
        """The remote caps in force (local port id -> A), or None: no valid limits (fallback)."""
        self._started(now)
        applied = self._applied
        if applied is None or now >= applied.expires:
            self._note_mode(now, sharing=False)
            return None
        self._note_mode(now, sharing=True)
        return dict(applied.caps)

    def limits_ts(self, now: float) -> float | None:
        """``ts`` of the limits in force (what telemetry acknowledges), None in fallback."""
        applied = self._applied
        return None if applied is None or now >= applied.expires else applied.ts

    def fallback_since(self, now: float) -> float | None:
        """When the present fallback began (limits expired, link dropped, or boot); None while
        sharing."""
        self._started(now)
        applied = self._applied
        if applied is not None and now < applied.expires:
            return None
        if applied is not None:
            return applied.expires
        assert self._boot is not None
        return self._boot

    def rise_at(self, now: float) -> float | None:
        """When ports below their fallback level may rise to it; None while sharing."""
        since = self.fallback_since(now)
        return None if since is None else since + self.rise_delay_s

    def in_force(self, now: float) -> dict[str, float]:
        """The cap of every local port now: the remote caps while sharing; in fallback
        ``min(last cap, fallback)`` until `rise_at`, then the fallback levels."""
        caps = self.caps(now)
        if caps is not None:
            return {pid: caps.get(pid, 0.0) for pid in self.local_ids}
        rise = self.rise_at(now)
        assert rise is not None
        if now >= rise:
            return dict(self._fallback)
        held = self._applied.caps if self._applied is not None else {}
        return {pid: min(held.get(pid, 0.0), self._fallback[pid]) for pid in self.local_ids}

    def status(self, now: float, snapshot: Snapshot | None = None) -> str:
        """ "inhibited" (the station refuses to energize), "sharing" or "fallback"."""
        if snapshot is not None and snapshot.inhibit is not None:
            return "inhibited"
        return "sharing" if self.caps(now) is not None else "fallback"

    def _started(self, now: float) -> None:
        if self._boot is None:
            self._boot = now

    def _note_mode(self, now: float, *, sharing: bool) -> None:
        """Say each change between sharing and fallback once, with its reason."""
        if self._sharing_logged is sharing:
            return
        applied = self._applied
        if sharing:
            assert applied is not None
            self._log.info(
                "station %s: sharing: the coordinator's limits are in force (valid %.0f s)",
                self.station,
                applied.expires - applied.rx,
            )
        elif self._sharing_logged is None:
            self._log.info(
                "station %s: fallback until the coordinator's first limits arrive (each port "
                "at its fallback level)",
                self.station,
            )
        else:
            assert applied is not None
            why = (
                "the link to the broker is down"
                if self._dropped
                else f"the coordinator's last limits expired, {now - applied.rx:.0f} s after "
                "they arrived, with none since"
            )
            self._log.warning(
                "station %s: fallback: %s (ports above their fallback level come down now, the "
                "others may rise %.0f s later)",
                self.station,
                why,
                self.rise_delay_s,
            )
        self._sharing_logged = sharing

    # --- telemetry out --------------------------------------------------------------------

    def observe(self, now: float, observations: Mapping[str, PortObservation]) -> None:
        """Note each port's session start (local ids) for telemetry (the controller does)."""
        for pid in self.local_ids:
            obs = observations.get(pid)
            if obs is None or not obs.connected:
                self._sessions.pop(pid, None)
            elif obs.session_start is not None:
                self._sessions[pid] = obs.session_start
            else:
                self._sessions.setdefault(pid, now)

    def up(self, now: float) -> bool:
        """Whether the coordinator's limits are in force (`firmware.link.remote.RemoteLimits`)."""
        return self.caps(now) is not None

    def applied(self, now: float, caps: Mapping[str, float]) -> None:
        """The tick at ``now`` applied ``caps`` (the lowest of every remote source's) under
        the limits in force (their ``ts``: what telemetry acknowledges)."""
        ts = self.limits_ts(now)
        if self._ticks and now < self._ticks[-1][0]:
            self._ticks.clear()  # time went back (a restarted clock): older records are void
        if self._ticks and self._ticks[-1][0] == now:
            self._ticks.pop()
        self._ticks.append((now, ts, dict(caps)))

    def _applied_at(self, now: float, snapshot: Snapshot) -> tuple[float | None, dict[str, float]]:
        """The limits ts to acknowledge and the caps to report with ``snapshot``: those
        applied by the tick that produced it (module docstring)."""
        for t, ts, caps in reversed(self._ticks):
            if t <= snapshot.t:
                return (ts if self.limits_ts(now) is not None else None), caps
        return None, self.in_force(now)

    def _ports(self, now: float, snapshot: Snapshot) -> dict[str, PortTelemetry]:
        caps = self._applied_at(now, snapshot)[1]
        views = {v.id: v for v in snapshot.ports}
        out: dict[str, PortTelemetry] = {}
        for wire, local in zip(self.port_ids, self.local_ids, strict=True):
            view = views.get(local)
            if view is None:
                continue
            # A port that waits for a tag is not there for the site either (firmware.auth).
            connected = view.mode in CONNECTED_MODES and view.authorized
            out[wire] = PortTelemetry(
                mode=view.mode.value,
                pilot=None if view.pilot is None else view.pilot.value,
                offered_a=max(0.0, view.offer_a),
                drawn_a=view.drawn_a,
                energy_wh=view.energy_wh,
                connected=connected,
                requesting=view.mode in (Mode.C1, Mode.C2) and view.pilot is PilotState.C,
                session_start=self._sessions.get(local) if connected else None,
                fault=view.fault,
                limit_a=caps[local],
            )
        return out

    def _signature(self, now: float, snapshot: Snapshot) -> tuple[object, ...]:
        ports = self._ports(now, snapshot)
        return (
            self.status(now, snapshot),
            self._applied_at(now, snapshot)[0],
            tuple(
                (
                    pid,
                    p.mode,
                    p.pilot,
                    p.offered_a,
                    p.connected,
                    p.requesting,
                    p.session_start,
                    p.fault,
                    p.limit_a,
                    p.drawn_a is None,
                )
                for pid, p in ports.items()
            ),
        )

    def _changed(self, now: float, snapshot: Snapshot) -> bool:
        if self._signature(now, snapshot) != self._sent_sig:
            return True
        for view in snapshot.ports:
            wire = self._wire.get(view.id)
            if wire is None:
                continue
            before = self._sent_drawn.get(wire)
            drawn = view.drawn_a
            if drawn is not None and before is not None and abs(drawn - before) >= DRAWN_CHANGE_A:
                return True
        return False

    def telemetry_due(self, now: float, snapshot: Snapshot) -> bool:
        """Whether telemetry should go out now: the period has passed, or something the
        coordinator acts on changed (status, acknowledged limits, a port's state, offer, cap,
        or its draw by 1 A or more) and the last one is at least 0.1 s old."""
        if self._sent_at is None or now >= self._sent_at + self.telemetry_period_s:
            return True
        if now < self._sent_at + MIN_TELEMETRY_INTERVAL_S:
            return False
        return self._changed(now, snapshot)

    def telemetry(self, now: float, snapshot: Snapshot) -> bytes:
        """The schema-1 telemetry of ``snapshot`` (its ports by wire id); counts as sent."""
        ports = self._ports(now, snapshot)
        msg = Telemetry(
            station=self.station,
            seq=self._seq,
            ts=now,
            status=self.status(now, snapshot),
            ports=ports,
            limits_ts=self._applied_at(now, snapshot)[0],
        )
        self._seq += 1
        self._sent_at = now
        self._sent_sig = self._signature(now, snapshot)
        self._sent_drawn = {pid: p.drawn_a for pid, p in ports.items()}
        body = encode_telemetry(msg)
        return body if self.keyring is None else self.keyring.seal(body)

    def next_deadline(self, now: float | None) -> float | None:
        """The next time the link's answers change by themselves: limits expire, fallback
        rises, telemetry is due by period (or a pending change may go out)."""
        if now is None:
            return None
        times: list[float] = []
        applied = self._applied
        if applied is not None and applied.expires > now:
            times.append(applied.expires)
        rise = self.rise_at(now)
        if rise is not None:
            times.append(rise)
        if self._sent_at is not None:
            times.append(self._sent_at + self.telemetry_period_s)
            times.append(self._sent_at + MIN_TELEMETRY_INTERVAL_S)
        due = [t for t in times if t > now]
        return min(due) if due else None
