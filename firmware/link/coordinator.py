"""The coordinator's core, pure: station telemetry in, per-port limits out, for a whole site.

One job: run the allocation core over the whole site tree (circuit / panel / site, with time
of use and site meters) and decide which limits to publish to which station, such that the
safe-offer invariant holds across stations, which only hear from it with a delay, may miss
messages, and fall back by themselves (firmware.link.station_link). No clock, no I/O: ``now``
is the coordinator's monotonic clock, ``wall`` its wall clock (time of use; message ``ts``).

API (the contract the MQTT shell and the simulator code against)::

    core = CoordinatorCore(site_config, CoordinatorSettings(valid_s=30, publish_period_s=5))
    core.receive_telemetry(now, payload) -> bool   # refusals counted in core.rejected
    core.station_offline(now, station)             # its status went "offline" (last will)
    core.station_online(now, station)              # it (re)connected: send its limits now
    core.reconnected(now)                          # our own session is new: send everyone's
    core.encode(msg) -> bytes                      # a Limits message as published (signed)
    core.set_meter(now, group, kw)                 # a site meter reading (DLM); None: none
    core.step(now, wall) -> list[Limits]           # the messages to publish now
    core.next_deadline() -> float | None
    core.limits() -> dict[str, float]              # the site's limit values as in force
    core.station_status(now) -> dict[str, str]     # "sharing" or why it is reserved
    core.alarms() -> dict[str, str]                # untrusted stations and why

Refusals are counted in ``rejected`` by reason and logged once per episode: telemetry that
fails the schema-1 codec ("json", "schema", "version", "value", "size"), comes from an
unknown "station", names a "port" that is not that station's, is a "flood" (more than 20 a
second per station), or a "replay" (``ts`` not after the last one, unless the station was
offline or silent: it may have restarted); with a site key (``firmware.link.auth``), telemetry
that is not signed by it ("unsigned", "signature"); a site meter reading for a group without a
meter, or not a number ("meter").

The coordinator trusts what it measures, not what it is told (docs/mqtt.md, "Threat model").
A station whose telemetry acknowledges limits this coordinator never sent it (a ``ts`` newer
than anything sent, or one between its own messages that is none of them), or shows a port
offered, or capped, above the bound the core keeps for it (below), is *untrusted*: someone
else gave it limits, or it is broken or compromised. Until it has behaved for
``station_silent_s`` (acknowledging our own limits, every port within its bound), the core
reserves the station's local maximum (what its own breakers and port ratings allow, whatever
any message says: ``local_max``) in every limit above it, so the shared circuit holds even if
it offers that much; it raises an alarm (logged, ``alarms()``, and "untrusted" in
``station_status``).

How it stays safe. For every port the core keeps a *bound*: the most that port's station may
be offering, or may have offered within the last 5 s (docs/design.md "The safe-offer invariant"),
given everything the core has sent and heard:

* every limit sent to the station since the last one it acknowledged (telemetry carries the
  ``ts`` of the limits in force; a station applies only newer ones, so its cap is one of
  those), the acknowledged one included;
* a *reserved* station (one that may be in fallback, or may get there before the core could
  react: never acknowledged anything, telemetry status not "sharing", silent for
  ``station_silent_s``, offline, or its last acknowledged limits old enough that they could
  expire and its ports rise before others are brought down) also counts its fallback levels;
* when the bound of a port drops (an acknowledgement, a station back to sharing), the old
  value keeps counting for the EV response window after the core heard of it, unless the
  station's telemetry shows the vehicle drawing at most its offer (then up to its draw plus
  the meter tolerance, the same confirmation rule as `controller.sequence`).

Decreases go out at once (they only lower any bound). An increase goes out only as far as the
bounds of all other ports leave room under every limit. The allocation itself is a
`controller.core.Controller` over the site tree with the stations' telemetry as observations
(its offer window widened by the latency margin; waking vehicles left to the stations), run on
the tree minus the reserved stations' bounds; a reserved station is sent its fallback levels (a
decrease at once, an increase only into room), so that when it comes back it applies limits
already counted for it. When a station shares again, the inner controller's round robin
starts afresh: ports paused while room was held for it were not waiting their turn.

Why reserved stations are safe: a station rises above ``min(last limit, fallback)`` only
``rise_delay_s`` after its limits expire, i.e. at the earliest ``sent + valid_s +
rise_delay_s`` of its last acknowledged message. The core reserves it at the latest ``EV
response + latency margin`` before that, and sends the others their decreases at that moment:
they have applied them (latency margin) and their vehicles followed (EV response) before the
station can rise. When the coordinator itself goes away, the stations' own transition rule
keeps them safe (firmware.link.station_link). Assumption: a station that is connected gets a
message within ``latency_margin_s``; limits are never queued across a station reboot (the MQTT
shell uses clean sessions).

A fresh coordinator knows nothing of its predecessor's limits: until a station acknowledges one
of its own messages it counts the cap the station reports (``limit_a``; its port maximum if it
has not reported, for ``startup_hold_s``) plus its fallback, and sends it at most
``min(reported cap, fallback)``, which never raises a station in any state it could be in.

Time of use and site meters (their readings' staleness, the next schedule boundary) are
`controller.dynamic.DynamicLimits`, the same object the simulator drives a site with. Limit
decreases from them apply at once to what is sent; the value reported by `limits` stays at
the old value until the bounds fit under the new one or the EV response window plus twice the
latency margin has passed (as `Controller.set_tree` does).

Size: this module is one thing, the coordinator's decision on every input and step. The
bounds, the trust cross-check, the allocation and the sequencing of messages all read and move
the same per-port bounds, and are only safe together; its data (settings, the per-station
record) and the dynamic limits live in `firmware.link.coordination` and `controller.dynamic`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Mapping
from datetime import datetime

from controller.core import Controller
from controller.dynamic import DynamicLimits
from controller.fallback import fallback_level
from controller.limits import LOAD_TOLERANCE, LimitTree
from controller.model import J1772_MIN_A, PortObservation
from controller.sequence import floor_dA
from controller.site import SiteConfig
from firmware.link.auth import AuthError, Keyring, open_envelope
from firmware.link.coordination import (
    FLOOD_RATE,
    SENT_MEMORY_MAX,
    SENT_MEMORY_S,
    CoordinatorSettings,
    Sent,
    StationRecord,
    local_max,
)
from firmware.link.messages import (
    Limits,
    MessageError,
    PortTelemetry,
    decode_telemetry,
    encode_limits,
)
from firmware.link.station_link import (
    EV_RESPONSE_S,
    FUTURE_SLACK_S,
)

__all__ = ["CoordinatorCore", "CoordinatorSettings"]

_log = logging.getLogger("ampshare.coordinator")

# A confirming meter reading may be low by its accuracy (controller.core ControlSettings).
CONFIRM_TOLERANCE_A = 0.5
# Telemetry carries currents rounded to 1 mA (firmware.link.messages): a reading can be up to
# half of that off, so a confirmation counts it against us both ways.
TELEMETRY_RESOLUTION_A = 0.001
# Messages kept per station while it acknowledges none (a silent station): older ones are
# merged into their newer neighbour, which only ever widens the bound.
_MAX_SENT = 64
# Waking vehicles that do not resume (controller.rotation.WakeUp) is the stations' job: they
# see the pilot on every tick. The coordinator would add its link latency to that 30 s timeout
# and pause vehicles that only answered late, so its own wake-up never fires (ten years).
_NEVER_S = 10 * 365 * 86400.0
# Successive messages to one station get strictly increasing ts even within one wall tick.
_TS_STEP = 0.001
# Telemetry rounds currents to 1 mA and limits go out on the 0.1 A grid: an offer or a cap
# above its bound by more than this is not rounding.
UNTRUSTED_TOLERANCE_A = 0.01


class CoordinatorCore:
    """Shares a site's limits between its stations through limit messages (module docstring)."""

    def __init__(
        self,
        site: SiteConfig,
        settings: CoordinatorSettings | None = None,
        *,
        keyring: Keyring | None = None,
    ) -> None:
        self.site = site
        self.settings = settings = settings or CoordinatorSettings()
        self.site_id = site.spec.id
        # The site key: limits are signed with it, telemetry must be (firmware.link.auth).
        self.keyring = keyring
        self._base = LimitTree.from_spec(site.spec)
        control = dataclasses.replace(
            settings.control,
            offer_window_s=settings.control.offer_window_s + settings.latency_margin_s,
            wake=dataclasses.replace(settings.control.wake, timeout_s=_NEVER_S),
        )
        self.controller = Controller(self._base, control)
        self._inner_key: tuple[object, ...] | None = None
        self._inner_reserved: frozenset[str] = frozenset()
        self._stations = {
            sid: StationRecord(sid, tuple(ports)) for sid, ports in sorted(site.stations.items())
        }
        self._station_of = {p: s for s, ports in site.stations.items() for p in ports}
        ports = self._base.ports
        self._fallback = {pid: fallback_level(p) for pid, p in ports.items()}
        self._min = {pid: max(p.min_a, J1772_MIN_A) for pid, p in ports.items()}
        self.local_max = {
            pid: a for sid, ps in site.stations.items() for pid, a in local_max(self._base, ps)
        }
        self._struct: dict[str, float] = {}
        self._linger: dict[str, list[tuple[float, float]]] = {pid: [] for pid in ports}
        self._sessions: dict[str, tuple[float | None, float]] = {}
        # Per port: the pilot state last seen while the station had PWM on (vehicle's choice),
        # and until when a PWM-off spell (sent or seen 0 A) makes a B state uninformative.
        self._requesting: dict[str, bool] = {}
        self._pwm_off_until: dict[str, float] = {}
        self._dynamic = DynamicLimits(site)  # time of use, site meters (their readings)
        self._reported: dict[str, float] | None = None
        self._holds: dict[str, tuple[float, float]] = {}
        self._start: float | None = None
        self._publish_all_at: float | None = None  # every station gets a message then
        self._deadline: tuple[float | None] | None = None  # cached until an input or a step
        self._now: float | None = None
        self._wall: tuple[float, datetime] | None = None
        self._tree = self._base
        self.rejected: Counter[str] = Counter()
        self._episode: Counter[str] = Counter()
        self.accepted = 0

    @property
    def stations(self) -> Mapping[str, tuple[str, ...]]:
        return self.site.stations

    # --- inputs ---------------------------------------------------------------------------

    def receive_telemetry(self, now: float, payload: bytes) -> bool:
        """Validate and take one station's telemetry received at ``now``; False: refused."""
        self._begin(now)
        try:
            tel = decode_telemetry(open_envelope(payload, self.keyring))
        except (AuthError, MessageError) as exc:
            return self._reject(exc.reason, str(exc))
        s = self._stations.get(tel.station)
        if s is None:
            return self._reject("station", f"unknown station {tel.station!r}")
        if not s.take_token(now):
            return self._reject("flood", f"station {s.id}: more than {FLOOD_RATE:g} messages/s")
        unknown = sorted(set(tel.ports) - set(s.ports))
        if unknown:
            return self._reject("port", f"station {s.id}: unknown port(s) {', '.join(unknown)}")
        fresh = s.heard_at is None or now - s.heard_at > self.settings.station_silent_s
        if s.tel_ts is not None and tel.ts <= s.tel_ts and not (fresh or s.offline):
            return self._reject(
                "replay", f"station {s.id}: ts {tel.ts!r} is not after {s.tel_ts!r}"
            )
        self.accepted += 1
        if self._episode:
            _log.info("telemetry accepted again after %d refused", sum(self._episode.values()))
            self._episode.clear()
        s.tel_ts = tel.ts
        s.heard_at = now
        s.status = tel.status
        s.offline = False
        s.telemetry.update(tel.ports)
        stranger = None
        if tel.limits_ts is not None:
            stranger = self._ack(s, tel.limits_ts, now)
        for pid, p in tel.ports.items():
            self._session(now, pid, p)
            if p.offered_a <= 0.0:
                self._pwm_off_until[pid] = now + self.settings.window_s
        self._refresh(now)
        self._check_trust(now, s, tel.ports, stranger, tel.limits_ts)
        tol = CONFIRM_TOLERANCE_A
        res = TELEMETRY_RESOLUTION_A
        for pid, p in tel.ports.items():
            drawn = p.drawn_a
            if drawn is None or drawn + res > p.offered_a + tol:
                continue
            # The vehicle is at or under its offer: what it may still draw from an older,
            # higher cap is its reading plus the meter's tolerance (controller.sequence).
            floor = self._struct[pid]
            # (No "0 A is no current at all" shortcut: 0 on the wire may be up to 0.5 mA.)
            ceiling = max(floor, drawn + tol + res)
            self._linger[pid] = [
                (until, min(v, ceiling))
                for until, v in self._linger[pid]
                if min(v, ceiling) > floor
            ]
        return True

    def station_offline(self, now: float, station: str) -> None:
        """The station's status says it is gone (MQTT last will): reserve it now."""
        self._begin(now)
        s = self._stations.get(station)
        if s is None:
            return
        if not s.offline:
            _log.warning("station %s is offline: its fallback levels are reserved", station)
        s.offline = True
        s.tel_ts = None  # a restarted station's clock starts again
        self._refresh(now)

    def station_online(self, now: float, station: str) -> None:
        """The station says it is (back) on the broker: its limits go out at the next step,
        not at the next period (it lost any message sent while it was away)."""
        self._begin(now)
        s = self._stations.get(station)
        if s is not None:
            s.force = True

    def reconnected(self, now: float) -> None:
        """Our own session to the broker is new: every station's limits go out at the next
        step (anything sent while we were away is lost), and the stations we heard from before
        count as heard now: their silence was ours. (Safe: a station whose own link is down
        is still reserved when its acknowledged limits near expiry, the "overdue" rule, and one
        that died leaves its last will.)"""
        self._begin(now)
        self._publish_all_at = None
        for s in self._stations.values():
            if s.heard_at is not None and not s.offline:
                s.heard_at = max(s.heard_at, now)

    def encode(self, msg: Limits) -> bytes:
        """``msg`` as published: schema-1 JSON, in a signed envelope when there is a key."""
        body = encode_limits(msg)
        return body if self.keyring is None else self.keyring.seal(body)

    def set_meter(self, now: float, group: str, kw: float | None) -> bool:
        """A site meter reading for ``group`` (unmanaged load, kW) taken at ``now``; None says
        there is none. An unknown group or a non-finite value is refused (counted "meter")."""
        self._begin(now)
        if group not in self.site.meters:
            return self._reject("meter", f"no meter configured on group {group!r}")
        if kw is not None and not math.isfinite(kw):
            return self._reject("meter", f"group {group}: reading {kw!r} is not a number")
        self._dynamic.read(group, kw, now)
        return True

    def _reject(self, reason: str, detail: str) -> bool:
        self.rejected[reason] += 1
        if not self._episode[reason]:
            _log.warning("refused (%s): %s; counting further ones silently", reason, detail)
        self._episode[reason] += 1
        return False

    def _begin(self, now: float) -> None:
        self._deadline = None
        if self._start is None:
            self._start = now

    def _ack(self, s: StationRecord, ts: float, now: float) -> str | None:
        """Take an acknowledgement; returns why it cannot be one of ours (None: it is ours,
        or an older coordinator's, which proves nothing about ours)."""
        stranger = self._stranger(s, ts, now)
        if stranger is not None or (s.acked is not None and ts <= s.acked.ts):
            return stranger
        for k, sent in enumerate(s.sent):
            if sent.ts == ts:
                s.acked = sent
                del s.sent[:k]
                return None
        # Not in the unacknowledged list: older than our first message (a predecessor's), or
        # one we sent and already saw superseded: it proves nothing about our messages.
        return None

    def _stranger(self, s: StationRecord, ts: float, now: float) -> str | None:
        if ts in s.history:
            return None
        newest = s.last_ts
        if self._wall is not None:  # our wall clock now, as far as the core knows it
            at, wall = self._wall
            newest = max(newest, wall.timestamp() + (now - at))
        if math.isfinite(newest) and ts > newest + FUTURE_SLACK_S:
            return f"it acknowledges limits of ts {ts!r}, later than anything sent to it"
        if s.first_ts is not None and ts >= s.first_ts:
            return f"it acknowledges limits of ts {ts!r}, which were never sent to it"
        return None

    def _check_trust(
        self,
        now: float,
        s: StationRecord,
        ports: Mapping[str, PortTelemetry],
        stranger: str | None,
        limits_ts: float | None,
    ) -> None:
        """Cross-check what the station says it offers against what it may (module docstring)."""
        why = stranger
        for pid, p in sorted(ports.items()):
            if why is not None:
                break
            # This station's ports only: telemetry must not cost the size of the site.
            bound = self._bound(pid)
            if p.offered_a > bound + UNTRUSTED_TOLERANCE_A:
                why = f"port {pid} is offered {p.offered_a:g} A, above the {bound:g} A sent"
            elif p.limit_a is not None and p.limit_a > bound + UNTRUSTED_TOLERANCE_A:
                why = f"port {pid} is capped at {p.limit_a:g} A, above the {bound:g} A sent"
        if why is not None:
            if s.untrusted is None:
                _log.error(
                    "ALARM: station %s is untrusted: %s; reserving its local maximum (%s) in "
                    "every limit above it until it behaves for %g s",
                    s.id,
                    why,
                    ", ".join(f"{pid} {self.local_max[pid]:g} A" for pid in s.ports),
                    self.settings.station_silent_s,
                )
            s.untrusted, s.behaved_since = why, None
            self._refresh(now)
            return
        if s.untrusted is None:
            return
        if limits_ts is None or limits_ts not in s.history:
            s.behaved_since = None  # not (yet) under our limits: nothing proves it behaves
            return
        if s.behaved_since is None:
            s.behaved_since = now
        if now - s.behaved_since >= self.settings.station_silent_s:
            _log.warning(
                "station %s is trusted again: it has followed our limits for %g s (was: %s)",
                s.id,
                now - s.behaved_since,
                s.untrusted,
            )
            s.untrusted, s.behaved_since = None, None
            self._refresh(now)

    def _session(self, now: float, pid: str, p: PortTelemetry) -> None:
        # Session order by when the coordinator first saw it: the stations' clocks differ.
        if not p.connected:
            self._sessions.pop(pid, None)
            return
        known = self._sessions.get(pid)
        if known is None or (p.session_start is not None and known[0] != p.session_start):
            self._sessions[pid] = (p.session_start, now)

    # --- bounds ---------------------------------------------------------------------------

    def _reason(self, s: StationRecord, now: float) -> str | None:
        """Why a station is reserved at its fallback levels, or None: it is sharing."""
        st = self.settings
        if s.untrusted is not None:
            return "untrusted"
        if s.offline:
            return "offline"
        if s.acked is None:
            return "unknown"
        if s.heard_at is None or now - s.heard_at > st.station_silent_s:
            return "silent"
        if s.status != "sharing":
            return s.status or "unknown"
        if now >= self._overdue_at(s):
            return "overdue"
        return None

    def _overdue_at(self, s: StationRecord) -> float:
        st = self.settings
        assert s.acked is not None
        lead = EV_RESPONSE_S + st.latency_margin_s
        return s.acked.at + st.valid_s + st.rise_delay_s - lead

    def _structural(self, s: StationRecord, pid: str, reserved: bool, now: float) -> float:
        # Since the acknowledged one (pruned on each ack), or all of ours before any ack.
        values = [e.values[pid] for e in s.sent]
        if s.acked is None:
            tel = s.telemetry.get(pid)
            cap = self._base.ports[pid].cap_a
            if tel is not None:
                values.append(cap if tel.limit_a is None else min(tel.limit_a, cap))
            elif self._start is not None and now < self._start + self.settings.hold_s:
                values.append(cap)
        if reserved:
            values.append(self._fallback[pid])
        if s.untrusted is not None:
            values.append(self.local_max[pid])
        return max(values, default=0.0)

    def _refresh(self, now: float) -> None:
        window = self.settings.window_s
        for s in self._stations.values():
            reserved = self._reason(s, now) is not None
            for pid in s.ports:
                new = self._structural(s, pid, reserved, now)
                old = self._struct.get(pid)
                if old is not None and new < old:
                    self._linger[pid].append((now + window, old))
                self._struct[pid] = new
                self._linger[pid] = [(u, v) for u, v in self._linger[pid] if u > now and v > new]

    def bounds(self) -> dict[str, float]:
        """Per port, the most its station may be offering now, as far as the core knows."""
        return {pid: self._bound(pid) for pid in self._base.ports}

    def _bound(self, pid: str) -> float:
        return max([self._struct.get(pid, 0.0), *(v for _, v in self._linger[pid])])

    # --- the step ---------------------------------------------------------------------------

    def step(self, now: float, wall: datetime) -> list[Limits]:
        """Decide and return the limit messages to publish now (changed ones, and every
        station's every ``publish_period_s``)."""
        self._begin(now)
        if self._now is not None and now < self._now:
            raise ValueError(f"time went backwards: {now} < {self._now}")
        self._now = now
        self._wall = (now, wall)
        self._refresh(now)
        reasons = {sid: self._reason(s, now) for sid, s in self._stations.items()}
        reserved = [p for sid, s in self._stations.items() if reasons[sid] for p in s.ports]
        tree = self._base.with_limits(self._dynamic.limits(wall, now))
        self._tree = tree
        bounds = self.bounds()

        decision = self._allocate(now, tree, reserved, bounds)
        targets: dict[str, float] = {}
        for sid, s in self._stations.items():
            for pid in s.ports:
                targets[pid] = self._fallback[pid] if reasons[sid] else decision[pid]
        published = self._sequence(tree, targets, bounds)
        for pid, v in published.items():
            if v is not None and v <= 0.0:  # PWM off on its way: B is not a choice for a while
                self._pwm_off_until[pid] = now + self.settings.window_s

        messages = self._messages(now, wall, published)
        self._refresh(now)
        self._report(now, tree)
        return messages

    def _allocate(
        self, now: float, tree: LimitTree, reserved: list[str], bounds: Mapping[str, float]
    ) -> dict[str, float]:
        """The allocation core over the site minus the reserved stations' bounds."""
        limits = tree.limits()
        if reserved:
            loads = tree.loads({pid: bounds[pid] for pid in reserved})
            limits = {lid: max(0.0, v - loads[lid]) for lid, v in limits.items()}
        caps = dict.fromkeys(reserved, 0.0)
        key = (tuple(sorted(limits.items())), tuple(sorted(caps)))
        if key != self._inner_key:
            self.controller.set_tree(self._base.with_limits(limits).with_port_caps(caps))
            self._inner_key = key
        now_reserved = frozenset(reserved)
        if self._inner_reserved - now_reserved:
            # A station shares again: the room held for it is back in the inner tree. Ports
            # paused while it was held (its own, and others' squeezed out by its bound) were
            # not waiting their round-robin turn, and its resume hysteresis (minimum + 1 A
            # held 60 s, while the others have taken that room) would keep them at 0 until
            # the next re-rank (15 min). Start round robin afresh, as the controller does
            # when its link returns; served accounts are kept. Safety does not rest on it:
            # whatever the inner controller decides, `_sequence` raises a port only into
            # room that every other port's bound leaves, reserved stations' included.
            self.controller.restart_round_robin()
        self._inner_reserved = now_reserved
        observations: dict[str, PortObservation] = {}
        for s in self._stations.values():
            for pid, p in s.telemetry.items():
                session = self._sessions.get(pid)
                observations[pid] = PortObservation(
                    connected=p.connected,
                    requesting=self._requesting_seen(now, pid, p),
                    metered_a=p.drawn_a,
                    session_start=None if session is None else session[1],
                )
        return dict(self.controller.update(now, observations).offers)

    def _requesting_seen(self, now: float, pid: str, p: PortTelemetry) -> bool:
        """Whether the vehicle asks for current, as the inner controller must see it.

        A vehicle may leave C when PWM goes off (J1772; hal.sim.ev), up to the EV response
        after it: leaving C then is our pause, not its choice. The inner controller judges
        "left C while offered" by its own offer, which runs ahead of the station's pilot by
        the link latency, so a vehicle paused by the station (sent 0, or at fallback) that
        leaves C just as a new offer is on its way would count as in B by choice and only
        get its minimum out of what others leave: 0 on a full circuit, and with PWM off it
        never returns to C. So state B is taken as the vehicle's word only once the station
        has had PWM on for the EV response window (plus latency); until then the state last
        seen with PWM on holds."""
        if not p.connected:
            self._requesting.pop(pid, None)
            return False
        if p.requesting or now >= self._pwm_off_until.get(pid, -math.inf):
            self._requesting[pid] = p.requesting
        return self._requesting.get(pid, p.requesting)

    def _current(self, s: StationRecord, pid: str) -> float | None:
        """What the port was last sent; for a station never sent anything, what is certainly
        at or under its cap in every state it could be in (module docstring)."""
        if s.published is not None:
            return s.published[pid]
        tel = s.telemetry.get(pid)
        if tel is None:
            return None  # never heard: nothing safe to say yet
        reported = 0.0 if tel.limit_a is None else tel.limit_a
        return min(reported, self._fallback[pid])

    def _sequence(
        self, tree: LimitTree, targets: Mapping[str, float], bounds: Mapping[str, float]
    ) -> dict[str, float | None]:
        pub: dict[str, float | None] = {}
        for s in self._stations.values():
            for pid in s.ports:
                cur = self._current(s, pid)
                target = floor_dA(targets[pid])
                pub[pid] = None if cur is None else min(cur, target)
        eff = dict(bounds)
        rising = sorted(
            (pid for pid, cur in pub.items() if cur is not None and targets[pid] > cur),
            key=lambda q: (pub[q], q),
        )
        for pid in rising:
            cur = pub[pid]
            assert cur is not None
            others = {q: a for q, a in eff.items() if q != pid}
            new = min(floor_dA(targets[pid]), floor_dA(tree.room(others, pid)))
            if new <= cur or (cur == 0.0 and new < self._min[pid]):
                continue
            pub[pid] = new
            eff[pid] = max(eff[pid], new)
        return pub

    def _messages(
        self, now: float, wall: datetime, published: Mapping[str, float | None]
    ) -> list[Limits]:
        out: list[Limits] = []
        # Every station every period, all at once (one tick in virtual time; and the
        # stations' expiries then spread over at most one period if the coordinator stops).
        everyone = self._publish_all_at is None or now >= self._publish_all_at
        if everyone:
            self._publish_all_at = now + self.settings.publish_period_s
        wall_ts = wall.timestamp()
        for s in self._stations.values():
            values: dict[str, float] = {}
            for pid in s.ports:
                v = published[pid]
                if v is None:
                    break
                values[pid] = v
            else:
                if not (everyone or s.force or s.published is None or values != s.published):
                    continue
                s.force = False
                ts = max(wall_ts, s.last_ts + _TS_STEP)
                msg = Limits(
                    site=self.site_id,
                    station=s.id,
                    seq=s.seq,
                    ts=ts,
                    valid_s=self.settings.valid_s,
                    ports=values,
                )
                s.seq += 1
                s.last_ts = ts
                s.published = values
                s.sent.append(Sent(ts, now, values))
                if s.first_ts is None:
                    s.first_ts = ts
                s.history[ts] = now
                while s.history and (
                    len(s.history) > SENT_MEMORY_MAX
                    or next(iter(s.history.values())) < now - SENT_MEMORY_S
                ):
                    del s.history[next(iter(s.history))]
                if len(s.sent) > _MAX_SENT:
                    first, second = s.sent[0], s.sent[1]
                    wider = {p: max(first.values[p], second.values[p]) for p in s.ports}
                    s.sent[0:2] = [Sent(second.ts, second.at, wider)]
                out.append(msg)
        return out

    def _report(self, now: float, tree: LimitTree) -> None:
        window = EV_RESPONSE_S + 2.0 * self.settings.latency_margin_s
        if self._reported is None:  # the first step: nothing ran under older limits
            self._reported = tree.limits()
            return
        loads = tree.loads(self.bounds())
        for lid, value in tree.limits().items():
            before = self._reported.get(lid, value)
            hold = self._holds.get(lid)
            if value < before - LOAD_TOLERANCE:
                held = before if hold is None else max(hold[0], before)
                hold = (held, now + window)
                self._holds[lid] = hold
            if hold is not None and (
                value >= hold[0] or loads[lid] <= value + LOAD_TOLERANCE or now >= hold[1]
            ):
                del self._holds[lid]
                hold = None
            self._reported[lid] = value if hold is None else max(value, hold[0])

    # --- outputs ------------------------------------------------------------------------------

    def limits(self) -> dict[str, float]:
        """Every limit of the site tree as in force now: time of use and site meters applied,
        a lowered one held at its old value until the stations have followed (docstring)."""
        return dict(self._tree.limits() if self._reported is None else self._reported)

    def tree(self) -> LimitTree:
        """The site tree with the dynamic limits of the last step."""
        return self._tree

    def station_status(self, now: float) -> dict[str, str]:
        """Per station: "sharing", or why its fallback levels are reserved ("unknown",
        "silent", "offline", "fallback", "inhibited", "overdue"), or "untrusted" (its local
        maximum is reserved)."""
        return {sid: self._reason(s, now) or "sharing" for sid, s in self._stations.items()}

    def alarms(self) -> dict[str, str]:
        """The untrusted stations, and why each is."""
        return {sid: s.untrusted for sid, s in self._stations.items() if s.untrusted is not None}

    def next_deadline(self) -> float | None:
        """The next time `step` would decide differently with no new input."""
        if self._deadline is None:
            self._deadline = (self._next_deadline(),)
        return self._deadline[0]

    def _next_deadline(self) -> float | None:
        now = self._now
        if now is None:
            return None
        st = self.settings
        times: list[float | None] = [self.controller.next_deadline()]
        times.append(self._publish_all_at)
        for s in self._stations.values():
            if s.heard_at is not None:
                times.append(s.heard_at + st.station_silent_s + 1e-6)
            if s.acked is not None:
                times.append(self._overdue_at(s))
        for entries in self._linger.values():
            times.extend(u for u, _ in entries)
        if self._start is not None:
            times.append(self._start + st.hold_s)
        times.extend(until for _, until in self._holds.values())
        if self._wall is not None:  # set by every step, as _now is: meters, time of use
            times.extend(self._dynamic.deadlines(*self._wall))
        due = [t for t in times if t is not None and t > now]
        return min(due) if due else None
