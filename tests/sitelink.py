"""A site on a real broker for the MQTT tests: stations and a coordinator in this process.

One job: run real stations (sim backend, ``RealtimeRunner`` sped up, each built by
``firmware.app.build_station`` from a station file with a ``link:`` block, so its
``StationMqttLink`` is the product's) and the product's ``CoordinatorService`` on one shared
time scale, and check the site's limits on every station tick: the sum of the stations'
effective offers (``Snapshot`` -> ``PortView.effective_a``) under every limit of the site tree.

Time: every station clock and the coordinator's clock run ``speed`` times faster than the
wall, so validity times, publish periods and EV responses keep their proportions while a test
takes seconds. The coordinator's wall clock (time of use) is ``wall_start`` plus its clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.limits import LimitTree
from controller.site import SiteConfig
from firmware.app import build_station
from firmware.config import load_station
from firmware.link.auth import Keyring, generate_key_file, load_keyring
from firmware.link.coordinator import CoordinatorCore, CoordinatorSettings
from firmware.link.mqtt import Backoff, BrokerSettings, CoordinatorService, StationMqttLink
from firmware.link.remote import RemoteLimitedController
from firmware.link.station_link import StationLink
from firmware.runner import RealtimeRunner
from firmware.station import Snapshot, Station
from hal.clock import StationClock

SPEED = 30.0
# Reconnect quickly in tests (wall seconds): the product's 0.5 s is 10 s of station time here.
FAST_BACKOFF = (0.05, 0.5)
# Station time: a 2 s publish period, limits valid 10 s, 3 s latency margin (a few ms of wall
# latency plus a station tick of 50 ms wall is 1-2 s of station time at 20x).
TEST_SETTINGS = CoordinatorSettings(valid_s=10.0, publish_period_s=2.0, latency_margin_s=3.0)
# A sum of effective offers may exceed a limit by float noise only.
TOLERANCE_A = 1e-6


def station_yaml(
    station: str,
    site: str,
    broker: str,
    evs: Sequence[Mapping[str, Any]] = (),
    *,
    username: str | None = None,
    password: str | None = None,
    tls_ca: str | None = None,
    telemetry_period: str = "2s",
    key_file: str | None = None,
) -> str:
    """A CT4000 jumper station on a 40 A feed, fallback 8 A per port, linked to ``site``
    (signed with ``key_file``; without one, an insecure lab link)."""
    lines = [
        f"station: {station}",
        "model: ct4000",
        "jumper: true",
        "min_a: 8",
        "groups:",
        "  - {id: feed, breaker_a: 40}",
        "ports:",
        '  - {id: "1", group: feed, fallback_a: 8}',
        '  - {id: "2", group: feed, fallback_a: 8}',
        "link:",
        f"  broker: {broker}",
        f"  site: {site}",
        f"  telemetry_period: {telemetry_period}",
    ]
    if username is not None:
        lines.append(f"  username: {username}")
    if password is not None:
        lines.append(f"  password: {password}")
    if tls_ca is not None:
        lines.append(f"  tls: {{ca: {tls_ca}}}")
    lines.append("  insecure: true" if key_file is None else f"  key_file: {key_file}")
    if evs:
        lines += ["sim:", "  evs:"]
        for ev in evs:
            inner = ", ".join(f"{k}: {v}" for k, v in ev.items())
            lines.append(f"    - {{{inner}}}")
    return "\n".join(lines) + "\n"


def ev(port: int, arrive: float, max_a: float = 32.0) -> dict[str, Any]:
    """A car that charges for the whole test (a big battery, nearly empty)."""
    return {
        "port": port,
        "arrive": f"{arrive}s",
        "max_a": max_a,
        "battery_kwh": 200,
        "soc": 0.05,
        "response_s": 2,
    }


async def retained(broker: BrokerSettings, topic: str, timeout: float = 5.0) -> bytes | None:
    """The retained message of ``topic`` now (None if there is none)."""
    async with broker.client("retained-reader", None) as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(min(timeout, 0.5)):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    return message.payload
        except TimeoutError:
            return None
    return None


@dataclass
class RunningStation:
    id: str
    station: Station
    clock: StationClock
    link: StationLink
    mqtt: StationMqttLink
    runner: RealtimeRunner
    task: asyncio.Task[None] | None = None
    fallback_at: float | None = None  # station time it last entered fallback
    sharing_at: float | None = None  # station time it last entered sharing

    @property
    def now(self) -> float:
        return self.clock()

    @property
    def last(self) -> Snapshot | None:
        return self.station.last

    def offers(self) -> dict[str, float]:
        snap = self.station.last
        return {} if snap is None else {f"{self.id}.{v.id}": v.offer_a for v in snap.ports}

    def status(self) -> str:
        return self.link.status(self.clock(), self.station.last)


@dataclass
class Violation:
    station: str
    t: float
    limit: str
    load: float
    value: float
    effective: dict[str, float] = field(default_factory=dict)


@dataclass
class SiteRig:
    """Stations and coordinators of one site on one broker, and the invariant checker.

    ``limits`` gives the limit values to check against now (default: the site tree's own);
    a dynamic test passes the coordinator's (time of use and site meter applied, a lowered
    limit held until the stations followed).
    """

    site: SiteConfig
    broker: BrokerSettings
    workdir: Path
    speed: float = SPEED
    settings: CoordinatorSettings = TEST_SETTINGS
    wall_start: datetime = datetime(2026, 11, 23, 8, 0, 0)  # a Monday
    stations: dict[str, RunningStation] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    ticks: int = 0
    limits: Callable[[], Mapping[str, float]] | None = None
    # Signed like a real site (a fresh site key in workdir); False: an insecure lab link.
    keyed: bool = True
    # Reconnect backoff (wall seconds) of the stations and coordinators.
    backoff: tuple[float, float] = FAST_BACKOFF

    def __post_init__(self) -> None:
        self.key_file: Path | None = None
        self.keyring: Keyring | None = None
        if self.keyed:
            self.key_file = self.workdir / "site.key"
            if not self.key_file.exists():
                generate_key_file(self.key_file)
            self.keyring = load_keyring(self.key_file)
        self.tree = LimitTree.from_spec(self.site.spec)
        self.clock = StationClock(self.speed)  # the coordinators' clock (and wall)
        self.effective: dict[str, float] = dict.fromkeys(self.tree.ports, 0.0)
        # What the simulated vehicles really draw (the ports' meters), and for how long (rig
        # clock seconds) that real load was above each limit: what a breaker would see.
        self.drawn: dict[str, float] = dict.fromkeys(self.tree.ports, 0.0)
        self.over_s: dict[str, float] = {}
        self.over_at: list[float] = []  # rig clock times at which some limit was over
        self._real_t: float | None = None
        self.coordinator: CoordinatorService | None = None
        self.trace: list[str] | None = None
        self._traced: dict[str, object] = {}

    def wall(self) -> datetime:
        return self.wall_start + timedelta(seconds=self.clock())

    # --- stations ----------------------------------------------------------------------

    def station_file(self, station: str, evs: Sequence[Mapping[str, Any]], **kw: Any) -> Path:
        path = self.workdir / f"{station}.yaml"
        url = kw.pop("broker", self.broker.url)
        if self.key_file is not None:
            kw.setdefault("key_file", str(self.key_file))
        path.write_text(station_yaml(station, self.site.spec.id, url, evs, **kw))
        return path

    async def add_station(
        self, station: str, evs: Sequence[Mapping[str, Any]] = (), **kw: Any
    ) -> RunningStation:
        config = load_station(self.station_file(station, evs, **kw))
        clock = StationClock(self.speed)
        built = build_station(config, clock=clock)
        assert isinstance(built.controller, RemoteLimitedController)
        mqtt = built.services[-1]
        assert isinstance(mqtt, StationMqttLink)
        mqtt.backoff = Backoff(*self.backoff)
        runner = RealtimeRunner(built, speed=self.speed, clock=clock)
        rs = RunningStation(station, built, clock, mqtt.link, mqtt, runner)
        rs.task = asyncio.create_task(runner.run(on_step=lambda snap: self._tick(rs, snap)))
        self.stations[station] = rs
        return rs

    def _tick(self, rs: RunningStation, snap: Snapshot) -> None:
        self.ticks += 1
        sharing = rs.link.caps(snap.t) is not None
        if sharing and rs.sharing_at is None:
            rs.sharing_at, rs.fallback_at = snap.t, None
        elif not sharing and rs.fallback_at is None:
            rs.fallback_at, rs.sharing_at = snap.t, None
        for view in snap.ports:
            self.effective[f"{rs.id}.{view.id}"] = view.effective_a
            self.drawn[f"{rs.id}.{view.id}"] = view.drawn_a or 0.0
        self._real_load()
        key = (rs.status(), tuple((v.offer_a, round(v.effective_a, 1)) for v in snap.ports))
        if self.trace is not None and self._traced.get(rs.id) != key:
            self._traced[rs.id] = key
            self.trace.append(f"{rs.id} t={snap.t:.2f} {key}")
        for view in snap.ports:
            cap = self.tree.ports[f"{rs.id}.{view.id}"].cap_a
            if view.offer_a > cap + TOLERANCE_A:  # no message raises a port above its own cap
                self.violations.append(
                    Violation(rs.id, snap.t, f"port {view.id}", view.offer_a, cap)
                )
        limits = self.tree.limits() if self.limits is None else self.limits()
        loads = self.tree.loads(self.effective)
        for lid, value in limits.items():
            if loads[lid] > value + TOLERANCE_A:
                self.violations.append(
                    Violation(rs.id, snap.t, lid, loads[lid], value, dict(self.effective))
                )

    def _real_load(self) -> None:
        now = self.clock()
        dt = 0.0 if self._real_t is None else max(0.0, now - self._real_t)
        self._real_t = now
        limits = self.tree.limits() if self.limits is None else self.limits()
        loads = self.tree.loads(self.drawn)
        over = False
        for lid, value in limits.items():
            if loads[lid] > value + 0.5:  # a class 1 meter's accuracy: below it, noise
                self.over_s[lid] = self.over_s.get(lid, 0.0) + dt
                over = True
        if over:
            self.over_at.append(now)

    async def stop_station(self, station: str) -> None:
        rs = self.stations.pop(station)
        rs.runner.stop()
        assert rs.task is not None
        await rs.task
        for pid in rs.station.port_ids:
            self.effective[f"{station}.{pid}"] = 0.0

    # --- coordinator --------------------------------------------------------------------

    async def start_coordinator(
        self, broker: BrokerSettings | None = None, *, identifier: str | None = None
    ) -> CoordinatorService:
        core = CoordinatorCore(self.site, self.settings, keyring=self.keyring)
        service = CoordinatorService(
            broker or self.broker,
            core,
            self.site.spec.id,
            clock=self.clock,
            wall=self.wall,
            meter_topics=[g for g, m in self.site.meters.items() if m.topic],
            backoff=Backoff(*self.backoff),
            identifier=identifier,
        )
        await service.start()
        self.coordinator = service
        return service

    # --- waiting and closing ------------------------------------------------------------

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        """Poll every 10 ms (wall) until ``predicate()``; fail after ``timeout`` wall seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            for rs in self.stations.values():
                if rs.task is not None and rs.task.done():
                    rs.task.result()  # a station loop that died: say why
                    raise AssertionError(f"station {rs.id} stopped")
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.describe()}")
            await asyncio.sleep(0.01)

    async def hold(self, station_seconds: float) -> None:
        """Let ``station_seconds`` of station time pass (a steady stretch to check)."""
        await asyncio.sleep(station_seconds / self.speed)

    def describe(self) -> str:
        parts = []
        for rs in self.stations.values():
            offers = ", ".join(f"{p}={a:g}" for p, a in rs.offers().items())
            parts.append(f"{rs.id} t={rs.now:.1f} {rs.status()} [{offers}]")
        return "; ".join(parts)

    def offers(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for rs in self.stations.values():
            out.update(rs.offers())
        return out

    async def close(self) -> None:
        for station in list(self.stations):
            with contextlib.suppress(Exception):
                await self.stop_station(station)
        if self.coordinator is not None:
            await self.coordinator.stop()
