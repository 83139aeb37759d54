"""The link's MQTT shells: a station's link service and the coordinator's, over aiomqtt.

One job: move the pure cores' bytes over a real broker. ``StationMqttLink`` feeds limit
payloads to ``StationLink.receive_limits`` and publishes ``StationLink.telemetry``;
``CoordinatorService`` feeds telemetry, station status and site-meter readings to
``CoordinatorCore`` and publishes what ``CoordinatorCore.step`` returns. Every decision
(validation, validity, fallback, allocation) is in those cores; here are only connections,
tasks and topics (docs/mqtt.md).

Both are ``hal.interfaces.Service`` objects: ``start()`` returns at once and the connection
is kept up by a background task that reconnects with exponential backoff, logging once when
an outage begins and once when it ends. The station loop never waits on any of it: the
station only calls the pure ``RemoteLimitedController``, which reads what this task last received.

QoS and retain (docs/mqtt.md, "QoS and retain"): limits QoS 1, never retained (a limit is
only good while fresh; a retained one that reaches a station is refused, counted "retained");
status QoS 1, retained, with a last will "offline"; telemetry QoS 0 (a newer message supersedes
a lost one every period, and the coordinator treats a silent station conservatively, so a
retransmission would only deliver stale state late).

MQTT 5 (OASIS MQTT 5.0): each client tells the broker, in CONNECT, the largest packet it
accepts (section 3.1.2.11.4, Maximum Packet Size); the broker then discards a larger message
for that client instead of sending it (section 3.1.2.11.4: "the Server MUST NOT send packets
exceeding Maximum Packet Size to the Client"), so an oversized publish never reaches the
station's memory, let alone its decoder or its control loop.

Size: the station's and the coordinator's shells share `MqttService` (sessions, reconnects,
guards); they move to modules of their own when a second transport (OCPP) needs the same split.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware.link import topics
from firmware.link.auth import ENVELOPE_MAX_BYTES
from firmware.link.messages import Limits

if TYPE_CHECKING:
    from firmware.config import LinkConfig
    from firmware.link.coordinator import CoordinatorCore
    from firmware.link.station_link import StationLink
    from firmware.station import Snapshot
    from hal.interfaces import Meter

log = logging.getLogger(__name__)

ONLINE = "online"  # the coordinator's retained status while it runs
OFFLINE = "offline"  # every last will (and the status a clean stop leaves behind)
# The broker publishes a client's will 1.5 keepalives after it last heard from it (MQTT
# 3.1.1, 3.1.2.10); 10 s -> a silently dead peer is known within 15 s. Well under the 30 s
# default validity, so a coordinator sees a dead station's "offline" before its limits end.
KEEPALIVE_S = 10
# A broker outage shorter than a limit's validity must not send a station to fallback: with a
# 30 s validity and a 5 s publish period a station has at least 25 s of limits left when the
# broker goes, so both ends try again at least every 2 s (+50 % jitter, 3 s) to be back with
# fresh limits well within that (docs/mqtt.md, "Reconnecting"). A few thousand reconnect
# attempts every 2 s are nothing to a broker.
BACKOFF_INITIAL_S = 0.25
BACKOFF_MAX_S = 2.0
# The largest packet each side accepts (MQTT 5 Maximum Packet Size, module docstring): a
# station's limits are a few hundred bytes per port; the coordinator takes telemetry up to the
# codec's bound, in its envelope.
STATION_MAX_PACKET = 64 * 1024
COORDINATOR_MAX_PACKET = ENVELOPE_MAX_BYTES + 1024
# How often the station's link looks at the station's last snapshot for telemetry that is
# due: one station loop period (firmware.runner.REALTIME_PERIOD_S), so a plug-in is on the
# wire within a tick of the loop seeing it.
STATION_POLL_S = 0.05
# The client's queue of received messages not yet handled; beyond it aiomqtt drops (and
# logs). A flood is handled message by message (each is small work for the pure core).
MAX_QUEUED_INCOMING = 4096
# The coordinator reads polled site meters at least this often (wall seconds).
METER_POLL_S = 1.0
# A site meter reading on its MQTT topic: anything above this (kW) is not a site of ours.
MAX_SITE_KW = 100_000.0


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where the broker is and how to log in: from a station's ``link:`` or the command line."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @classmethod
    def from_link(cls, link: LinkConfig) -> BrokerSettings:
        return cls(
            link.host,
            link.port,
            link.tls,
            link.username,
            link.password,
            link.ca,
            link.cert,
            link.key,
        )

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> BrokerSettings:
        """``mqtt://host:port`` / ``mqtts://...``; ValueError saying what is allowed."""
        from firmware.config import parse_broker_url

        host, port, tls = parse_broker_url(url)
        if not tls and (kwargs.get("ca") or kwargs.get("cert")):
            raise ValueError(f"{url}: TLS options need an mqtts:// broker URL")
        return cls(host, port, tls, **kwargs)

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def client(
        self,
        identifier: str,
        will: aiomqtt.Will | None,
        *,
        max_packet: int = COORDINATOR_MAX_PACKET,
    ) -> aiomqtt.Client:
        tls = None
        if self.tls:
            tls = aiomqtt.TLSParameters(ca_certs=self.ca, certfile=self.cert, keyfile=self.key)
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect.MaximumPacketSize = max_packet
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=identifier,
            will=will,
            keepalive=KEEPALIVE_S,
            tls_params=tls,
            max_queued_incoming_messages=MAX_QUEUED_INCOMING,
            protocol=aiomqtt.ProtocolVersion.V5,
            properties=connect,
            # A clean start with no session expiry: MQTT 3.1.1's clean session. Nothing
            # queued for us while we were away is delivered (a stale limit is worse than none).
            clean_start=True,
            # paho logs every protocol event; our own lines say what matters, once.
            logger=logging.getLogger("aiomqtt"),
        )


class Backoff:
    """Reconnect delays: doubling from ``initial`` to ``maximum``, with up to 50 % jitter so
    a hundred stations that lost the broker together do not all return in the same instant."""

    def __init__(self, initial: float = BACKOFF_INITIAL_S, maximum: float = BACKOFF_MAX_S) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def reset(self) -> None:
        self._next = self.initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2.0, self.maximum)
        return delay * (1.0 + 0.5 * random.random())


class MqttService:
    """One client kept connected by a background task; subclasses say what a session does.

    ``connected``: a session is up. ``last_error``: why the last attempt or session ended
    (e.g. ``[code:5] Connection refused: Not authorized``), None while up. ``outages``: how
    many times a session was lost or could not be made (episodes, not attempts).
    """

    name = "mqtt"

    def __init__(
        self,
        settings: BrokerSettings,
        identifier: str,
        status_topic: str,
        *,
        max_packet: int = COORDINATOR_MAX_PACKET,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self.max_packet = max_packet
        self.identifier = identifier
        self.status_topic = status_topic
        self.backoff = backoff or Backoff()
        self.connected = False
        self.last_error: str | None = None
        self.outages = 0
        self.sessions = 0
        self._down_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._up = asyncio.Event()

    # --- Service ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            log.info(
                "%s: connecting to %s%s",
                self.name,
                self.settings.url,
                "" if self.settings.username is None else f" as {self.settings.username}",
            )
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name=f"{self.name}:{self.identifier}")

    async def stop(self) -> None:
        """Leave "offline" retained and disconnect cleanly (no will); give up after 5 s."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        if not self.connected:
            task.cancel()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5.0)
        self.connected = False

    async def wait_connected(self, timeout: float) -> None:
        """For tests and tools: until a session is up (TimeoutError otherwise)."""
        await asyncio.wait_for(self._up.wait(), timeout)

    # --- the connection ------------------------------------------------------------------

    def _new_client(self) -> aiomqtt.Client:
        return self.settings.client(self.identifier, self._will(), max_packet=self.max_packet)

    def _will(self) -> aiomqtt.Will:
        return aiomqtt.Will(self.status_topic, OFFLINE, qos=1, retain=True)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            # A new client per attempt: aiomqtt 2.5's client, re-entered after an unexpected
            # disconnection, still holds the old session's "connected" state and reports a
            # connection that never happened (empicano/aiomqtt#288).
            client = self._new_client()
            try:
                async with client:
                    self._connected_now()
                    await self._session(client)
                    if self._stopping.is_set():
                        await client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
                        return
            except aiomqtt.MqttError as exc:
                self._lost(str(exc) or type(exc).__name__)
            except Exception as exc:  # a bug in a session must not end the link for good
                log.exception("%s: session failed", self.name)
                self._lost(f"{type(exc).__name__}: {exc}")
            finally:
                self.connected = False
                self._up.clear()
            if self._stopping.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.backoff.next())

    def _connected_now(self) -> None:
        self.connected = True
        self.sessions += 1
        self.backoff.reset()
        if self._down_since is not None:
            down = time.monotonic() - self._down_since
            log.info("%s: connected to %s again after %.1f s", self.name, self.settings.url, down)
        else:
            log.info("%s: connected to %s", self.name, self.settings.url)
        self._down_since = None
        self.last_error = None
        self._up.set()

    def _lost(self, reason: str) -> None:
        self.last_error = reason
        if self._down_since is None:  # the first failure of an episode: say it once
            self._down_since = time.monotonic()
            self.outages += 1
            log.warning(
                "%s: broker %s unreachable or refused us (%s); retrying with backoff%s",
                self.name,
                self.settings.url,
                reason,
                self._outage_note(),
            )

    def _outage_note(self) -> str:
        return ""

    async def _session(self, client: aiomqtt.Client) -> None:
        """Subscribe, publish, receive until the connection fails (MqttError) or the service
        is stopping (then return)."""
        raise NotImplementedError

    async def _wait(
        self, receiver: asyncio.Task[None], timeout: float, *events: asyncio.Event
    ) -> bool:
        """Wait up to ``timeout`` or until one of ``events`` is set; True when the service is
        stopping. ``receiver`` is the session's receiving task, which ends only when the
        connection is lost: then this raises MqttError."""
        waiters = [asyncio.ensure_future(e.wait()) for e in (self._stopping, *events)]
        try:
            await asyncio.wait(
                {receiver, *waiters}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        _check(receiver)
        return self._stopping.is_set()

    async def _guard(self, receiver: asyncio.Task[None], request: Awaitable[Any]) -> None:
        """Await a publish or subscribe, giving up as soon as the connection is lost: a QoS 1
        request otherwise waits for an acknowledgement that never comes, up to aiomqtt's
        10 s timeout, while the other side already knows we are gone."""
        task = asyncio.ensure_future(request)
        try:
            await asyncio.wait({task, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():
            task.result()
        _check(receiver)


def _check(receiver: asyncio.Task[None]) -> None:
    if receiver.done():
        receiver.result()  # the connection's error, if it has one
        raise aiomqtt.MqttError("the connection was lost")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
        await task


# --- the station's side ---------------------------------------------------------------------


class StationMqttLink(MqttService):
    """A station's link: limits in, telemetry and status out (a ``hal.interfaces.Service``).

    ``snapshot`` returns the station's last ``Snapshot`` (``lambda: station.last``);
    ``clock`` is the station's clock, the one its ``RemoteLimitedController`` is given ``now`` on,
    so validity times count on one clock.

    Limits arrive between two ticks of the station loop, and telemetry acknowledges the
    limits in force (``limits_ts``) next to the last snapshot's offers and meter readings. So
    that an acknowledgement of a lower limit never comes with offers and readings from before
    it (the coordinator takes a reading at or under the offer as the vehicle having come down,
    and would raise other stations early), telemetry waits after a lowering message until a
    snapshot taken a full tick after the station applied it: its offers carry the new caps
    and its readings were taken under them. Messages that lower nothing do not delay it.
    """

    name = "link"

    def __init__(
        self,
        settings: BrokerSettings,
        link: StationLink,
        snapshot: Callable[[], Snapshot | None],
        clock: Callable[[], float],
        *,
        poll_s: float = STATION_POLL_S,
        backoff: Backoff | None = None,
    ) -> None:
        self.link = link
        self.site = link.site
        self.station = link.station
        super().__init__(
            settings,
            f"ampshare-{self.site}-station-{self.station}",
            topics.station_status(self.site, self.station),
            max_packet=STATION_MAX_PACKET,
            backoff=backoff,
        )
        self.name = f"link {self.site}/{self.station}"
        self.snapshot = snapshot
        self.clock = clock
        self.poll_s = poll_s
        self.limits_topic = topics.station_limits(self.site, self.station)
        self.telemetry_topic = topics.station_telemetry(self.site, self.station)
        self.received = 0  # limit payloads handed to the core (accepted or not)
        self.published = 0  # telemetry messages sent
        self._lowered_at: float | None = None  # receipt of the last lowering message
        self._applied_tick: float | None = None  # the first tick at or after it

    def _outage_note(self) -> str:
        return "; the station goes to its fallback level when its limits expire"

    async def _session(self, client: aiomqtt.Client) -> None:
        receiver = asyncio.create_task(self._receive(client))
        try:
            await self._guard(receiver, client.subscribe(self.limits_topic, qos=1))
            status: str | None = None
            force = True  # on every (re)connect: say where we are at once
            while True:
                now = self.clock()
                snap = self.snapshot()
                current = self.link.status(now, snap)
                if current != status:
                    publish = client.publish(self.status_topic, current, qos=1, retain=True)
                    await self._guard(receiver, publish)
                    status = current
                if (
                    snap is not None
                    and self._settled(snap)
                    and (force or self.link.telemetry_due(now, snap))
                ):
                    payload = self.link.telemetry(now, snap)
                    await self._guard(receiver, client.publish(self.telemetry_topic, payload))
                    self.published += 1
                    force = False
                if await self._wait(receiver, self.poll_s):
                    return
        finally:
            await _cancel(receiver)

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.topic.value != self.limits_topic:
                continue
            if message.retain:
                # A retained limit is from the past by definition (the coordinator never
                # retains): at best stale, at worst poison left for every boot.
                self.link.reject(
                    "retained", "a retained limits message (limits are never retained)"
                )
                continue
            self.received += 1
            now = self.clock()
            before = self.link.in_force(now)
            if self.link.receive_limits(now, bytes(message.payload)):
                after = self.link.in_force(now)
                if any(after[pid] < before[pid] for pid in after):
                    self._lowered_at, self._applied_tick = now, None

    def _settled(self, snap: Snapshot) -> bool:
        """Whether ``snap`` reflects the last lowered caps (class docstring)."""
        lowered = self._lowered_at
        if lowered is None:
            return True
        if snap.t < lowered:
            return False  # the station has not ticked since
        if self._applied_tick is None or snap.t <= self._applied_tick:
            self._applied_tick = snap.t  # the tick that applied them: readings from before
            return False
        self._lowered_at = None
        return True


# --- the coordinator's side -----------------------------------------------------------------


class MeterPayloadError(ValueError):
    """A site-meter message that is not a reading (docs/mqtt.md, "Site meter")."""


def parse_meter_payload(payload: bytes) -> float:
    """A site meter reading in kW: a bare JSON number (``12.5``) or ``{"v": 1, "kw": 12.5}``.

    A negative reading (the site exporting, e.g. solar) is returned as it is; the coordinator
    counts it as no unmanaged load, so a group limit never rises above its maximum.
    """
    if len(payload) > 1024:
        raise MeterPayloadError(f"{len(payload)} bytes is not a meter reading")
    try:
        doc = json.loads(payload, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MeterPayloadError(f"not JSON: {exc}") from None
    if isinstance(doc, dict):
        if doc.get("v") != 1 or type(doc.get("v")) is not int:
            raise MeterPayloadError(f"schema version {doc.get('v')!r} (expected 1)")
        if set(doc) != {"v", "kw"}:
            raise MeterPayloadError(f"keys {sorted(doc)} (expected v and kw)")
        doc = doc["kw"]
    if type(doc) not in (int, float) or not math.isfinite(doc):
        raise MeterPayloadError(f"{doc!r} is not a finite number of kW")
    kw = float(doc)
    if abs(kw) > MAX_SITE_KW:
        raise MeterPayloadError(f"{kw} kW is absurd for a site")
    return kw


def _refuse_constant(name: str) -> Any:
    raise MeterPayloadError(f"{name} is not a number")


class CoordinatorService(MqttService):
    """The coordinator: telemetry, station status and site meters in; limits out.

    ``clock`` gives ``now`` for the core (monotonic seconds; tests pass a sped-up clock, the
    same speed as their stations'); ``wall`` the local date and time for time-of-use.
    ``meter_topics``: groups whose unmanaged load arrives on ``topics.site_meter``;
    ``meters``: groups whose site meter is polled (``hal.registry.open_meter``; a meter that
    is also a Service is started and stopped with this one). ``on_step(now, messages)`` is
    called after every step with what it published (the command line prints the changes).
    """

    name = "coordinator"

    def __init__(
        self,
        settings: BrokerSettings,
        core: CoordinatorCore,
        site: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = datetime.now,
        meter_topics: Iterable[str] = (),
        meters: Mapping[str, Meter] | None = None,
        on_step: Callable[[float, list[Limits]], None] | None = None,
        backoff: Backoff | None = None,
        identifier: str | None = None,
    ) -> None:
        super().__init__(
            settings,
            identifier or f"ampshare-{site}-coordinator",
            topics.coordinator_status(site),
            max_packet=COORDINATOR_MAX_PACKET,
            backoff=backoff,
        )
        self.core = core
        self.site = site
        self.clock = clock
        self.wall = wall
        self.meter_topics = {topics.site_meter(site, g): g for g in meter_topics}
        self.meters = dict(meters or {})
        self.on_step = on_step
        self.rejected: Counter[str] = Counter()  # site-meter payloads refused, by reason
        self.published = 0
        self._wake = asyncio.Event()
        self._meter_seen: dict[str, float] = {}
        self._meter_errors: set[str] = set()
        self._meter_services: list[Any] = []

    async def start(self) -> None:
        from hal.interfaces import Service

        for meter in self.meters.values():
            if isinstance(meter, Service) and meter not in self._meter_services:
                await meter.start()
                self._meter_services.append(meter)
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        for meter in reversed(self._meter_services):
            await meter.stop()
        self._meter_services.clear()

    def _outage_note(self) -> str:
        return "; stations fall back when their limits expire"

    def _new_client(self) -> aiomqtt.Client:
        client = super()._new_client()
        # Every station's limits go out at once (`_publish`); aiomqtt warns above 10
        # concurrent publishes, which here is the normal case of a site of ten stations.
        client.pending_calls_threshold = 10 + 2 * len(self.core.stations)
        return client

    async def _session(self, client: aiomqtt.Client) -> None:
        receiver = asyncio.create_task(self._receive(client))
        self.core.reconnected(self.clock())
        try:
            guard = self._guard
            await guard(receiver, client.publish(self.status_topic, ONLINE, qos=1, retain=True))
            await guard(receiver, client.subscribe(topics.all_telemetry(self.site), qos=0))
            await guard(receiver, client.subscribe(topics.all_station_status(self.site), qos=1))
            for topic in self.meter_topics:
                await guard(receiver, client.subscribe(topic, qos=1))
            while True:
                # Cleared before the step, not after: what arrives while it runs or while its
                # limits are published wakes the next step at once.
                self._wake.clear()
                self._poll_meters()
                now = self.clock()
                messages = self.core.step(now, self.wall())
                if messages:
                    await self._guard(receiver, self._publish(client, messages))
                if self.on_step is not None:
                    self.on_step(now, messages)
                deadline = self.core.next_deadline()
                wait = METER_POLL_S if self.meters else 3600.0
                if deadline is not None:
                    wait = min(wait, max(0.0, self._wall_delay(deadline - self.clock())))
                if await self._wait(receiver, wait, self._wake):
                    return
        finally:
            await _cancel(receiver)

    def _wall_delay(self, clock_s: float) -> float:
        """Clock seconds -> wall seconds: a clock with a ``speed`` (``StationClock``, sped up
        in tests) runs that many times faster than the wall."""
        speed = float(getattr(self.clock, "speed", 1.0))
        return clock_s / speed

    async def _publish(self, client: aiomqtt.Client, messages: list[Limits]) -> None:
        # Concurrently: each QoS 1 publish waits for its PUBACK; one at a time, a 100-station
        # site would wait 100 round trips before the last station hears of a decrease.
        await asyncio.gather(
            *(
                client.publish(
                    topics.station_limits(self.site, m.station), self.core.encode(m), qos=1
                )
                for m in messages
            )
        )
        self.published += len(messages)

    async def _receive(self, client: aiomqtt.Client) -> None:
        telemetry_suffix = "/telemetry"
        status_suffix = "/status"
        async for message in client.messages:
            topic = message.topic.value
            payload = bytes(message.payload)
            now = self.clock()
            if topic in self.meter_topics:
                self._meter_message(now, self.meter_topics[topic], payload)
            elif topic.endswith(telemetry_suffix):
                self.core.receive_telemetry(now, payload)
            elif topic.endswith(status_suffix):
                station = topics.station_of(topic)
                if station is None:
                    continue
                if payload == OFFLINE.encode():
                    self.core.station_offline(now, station)
                elif not message.retain:
                    # A station publishes its status on every (re)connect: it has just
                    # subscribed and lost what we sent while it was away. (A retained status
                    # is old news from before our own connection: `reconnected` covers it.)
                    self.core.station_online(now, station)
            else:
                continue
            self._wake.set()

    def _meter_message(self, now: float, group: str, payload: bytes) -> None:
        try:
            kw = parse_meter_payload(payload)
        except MeterPayloadError as exc:
            self.rejected["meter"] += 1
            if group not in self._meter_errors:  # once per episode of bad readings
                self._meter_errors.add(group)
                log.warning(
                    "coordinator: site meter of group %s: %s (ignored; the group's "
                    "conservative limit applies once the meter is stale)",
                    group,
                    exc,
                )
            return
        self._meter_errors.discard(group)
        self.core.set_meter(now, group, max(kw, 0.0))

    def _poll_meters(self) -> None:
        for group, meter in self.meters.items():
            reading = meter.latest()
            if reading is None or self._meter_seen.get(group) == reading.timestamp:
                continue
            self._meter_seen[group] = reading.timestamp
            kw = reading.power_w / 1000.0
            if not math.isfinite(kw):
                continue
            self.core.set_meter(reading.timestamp, group, max(kw, 0.0))
