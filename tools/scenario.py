"""Scenario files (docs/design.md "File shapes"): a station or site, a duration, EVs, events.

A site scenario may run the site as stations under a coordinator (issue 7)::

    site: ../sites/office-tou.yaml
    coordinator: {valid_s: 30, period_s: 5, latency: 200ms}   # also: jitter, latency_margin,
                                                             # silent_s, telemetry, rise_delay
    start: 2026-11-23T00:00:00      # wall clock at t=0 (time of use); default Monday 00:00
    events:
      - {at: 1h, link: down}                  # every station loses the coordinator
      - {at: 2h, link: down, station: st2}    # one station does
      - {at: 3h, coordinator: restart}        # a fresh coordinator (it knows nothing)
      - {at: 30m, site_load_kw: 120}          # the site meter(s) read this from now on
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from controller.core import ControlSettings
from controller.model import SiteSpec
from controller.site import SiteConfig
from firmware.auth import AuthMode, AuthSettings
from firmware.config import ConfigError, load_site_config, load_station, parse_control
from firmware.link.coordinator import CoordinatorSettings
from firmware.link.station_link import DEFAULT_RISE_DELAY_S, DEFAULT_TELEMETRY_PERIOD_S
from firmware.port import PortConfig
from hal.durations import format_duration
from hal.pilot import EV_RESPONSE_S
from hal.rfid import check_tag
from hal.sim.bus import FAULT_KINDS
from hal.sim.config import parse_evs
from hal.sim.ev import EvSpec
from hal.yamlnodes import Value, load_document

# J1772 (docs/design.md "The safe-offer invariant"): a compliant EV follows a lower offer in
# <= 5 s.
COMPLIANT_RESPONSE_S = EV_RESPONSE_S

SCENARIO_KEYS = (
    "name",
    "description",
    "station",
    "site",
    "duration",
    "evs",
    "events",
    "seed",
    "control",
    "coordinator",
    "start",
)
_EVENT_KEYS = ("at", "link", "fault", "site_load_kw", "station", "coordinator", "tag")
_FAULT_KEYS = ("port", "kind", "clear")
_COORDINATOR_KEYS = (
    "valid_s",
    "period_s",
    "latency",
    "jitter",
    "latency_margin",
    "silent_s",
    "telemetry",
    "rise_delay",
)
# A Monday 00:00 (2026-11-23 is one): time of use starts from the top of a week by default.
DEFAULT_START = datetime(2026, 11, 23, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class CoordinatorSpec:
    """How a coordinated site scenario runs its link (firmware.link): in-process transport
    latency and jitter, and the coordinator's and stations' timing."""

    settings: CoordinatorSettings = field(default_factory=CoordinatorSettings)
    latency_s: float = 0.2
    jitter_s: float = 0.0
    telemetry_period_s: float = DEFAULT_TELEMETRY_PERIOD_S


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happens at a moment of a scenario."""

    at: float
    link_up: bool | None = None
    fault_port: str | None = None
    fault_kind: str | None = None
    fault_clear: bool = False
    site_load_kw: float | None = None
    station: str | None = None  # a link event for one station only (coordinated sites)
    coordinator_restart: bool = False
    tag: str | None = None  # a tag presented at the station's reader


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario: what runs, for how long, and what happens."""

    path: str
    name: str
    site: SiteSpec
    jumper: bool
    port_config: PortConfig
    control: ControlSettings
    duration_s: float
    evs: tuple[EvSpec, ...]
    events: tuple[Event, ...] = ()
    seed: int = 0
    description: str = ""
    station_id: str | None = None
    voltages: Mapping[str, float] = field(default_factory=dict)
    site_config: SiteConfig | None = None  # a site scenario: stations, schedules, meters
    coordinator: CoordinatorSpec | None = None  # run as stations under a coordinator
    start: datetime = DEFAULT_START
    auth: AuthSettings = field(default_factory=AuthSettings)  # the station file's auth:

    @property
    def deliberate_breach(self) -> bool:
        """True when the scenario contains a non-compliant EV or a fault on purpose: a limit
        breach is then the story, reported in the summary rather than failing the run."""
        return any(
            ev.response_s > COMPLIANT_RESPONSE_S or ev.overdraw_a > 0.0 for ev in self.evs
        ) or any(e.fault_kind is not None for e in self.events)


def _relative(doc: Value, value: Value) -> str:
    target = Path(value.string())
    if not target.is_absolute():
        target = Path(doc.path).resolve().parent / target
    return str(target)


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and validate a scenario; every error is a ConfigError naming file:line:field."""
    doc = load_document(path)
    top = doc.mapping(SCENARIO_KEYS, ("duration",))
    station_v, site_v = top.get("station"), top.get("site")
    if (station_v is None) == (site_v is None):
        doc.fail("name exactly one of station: or site:", "station")
    control = ControlSettings()
    if station_v is not None:
        target = _relative(doc, station_v)
        try:
            station = load_station(target)
        except ConfigError as exc:
            # Say which scenario line led here, and keep the station file's own location.
            station_v.fail(f"cannot use the station file: {exc}")
        site, jumper, port_config = station.site, station.jumper, station.port_config
        control = station.control
        auth = station.auth.settings
        station_id: str | None = station.id
        site_config: SiteConfig | None = None
        has_link = station.link is not None
    else:
        assert site_v is not None
        try:
            site_config = load_site_config(_relative(doc, site_v))
        except ConfigError as exc:
            site_v.fail(f"cannot use the site file: {exc}")
        site = site_config.spec
        jumper, port_config, station_id = False, PortConfig(), None
        auth = AuthSettings()
        # A site file is what a coordinator shares: its stations are linked to one.
        has_link = True
    port_ids = [p.id for p in site.ports]
    coordinator = None
    if (coord_v := top.get("coordinator")) is not None:
        if site_config is None:
            coord_v.fail("a coordinator shares a site: use site:, not station:")
        coordinator = _coordinator(coord_v)
    start_v = top.get("start")
    start = DEFAULT_START if start_v is None else start_v.timestamp()

    duration = top.require("duration").duration()
    if not duration > 0.0:
        top.require("duration").fail("must be > 0")
    evs_v = top.get("evs")
    evs = () if evs_v is None else parse_evs(evs_v, port_ids)
    # parse_evs refuses a leave that is not after its arrive; only the scenario knows its end.
    for ev, item in zip(evs, [] if evs_v is None else evs_v.sequence(), strict=True):
        if ev.arrive_s >= duration:
            (item.mapping(None).get("arrive") or item).fail(
                f"arrives at {format_duration(ev.arrive_s)}, not before the scenario ends at "
                f"{format_duration(duration)} (duration): it would never plug in"
            )
    stations = () if site_config is None else tuple(site_config.stations)
    written = () if (ev_v := top.get("events")) is None else _events(ev_v, port_ids, stations)
    _check_events(written, site_config, coordinator is not None, has_link)
    if auth.mode is AuthMode.FREE:
        # Tags at a station that lets anyone charge would be silently meaningless.
        for ev, item in zip(evs, [] if evs_v is None else evs_v.sequence(), strict=True):
            if ev.id_tag is not None:
                (item.mapping(None).get("id_tag") or item).fail(
                    "the station is in auth mode: free (anyone charges): id_tag needs auth: "
                    "{mode: tags} in its station file"
                )
        for event, where in written:
            if event.tag is not None:
                where.fail("the station is in auth mode: free: a tag needs auth: {mode: tags}")
    events = tuple(sorted((event for event, _ in written), key=lambda e: e.at))
    control_v = top.get("control")
    if control_v is not None:
        control = parse_control(control_v, control)
    seed_v = top.get("seed")
    name_v, desc_v = top.get("name"), top.get("description")
    return Scenario(
        path=doc.path,
        name=Path(doc.path).stem if name_v is None else name_v.string(),
        site=site,
        jumper=jumper,
        port_config=port_config,
        control=control,
        duration_s=duration,
        evs=evs,
        events=events,
        seed=0 if seed_v is None else seed_v.integer(),
        description="" if desc_v is None else desc_v.string(),
        station_id=station_id,
        voltages={p.id: p.voltage_v for p in site.ports},
        site_config=site_config,
        coordinator=coordinator,
        start=start,
        auth=auth,
    )


def _coordinator(value: Value) -> CoordinatorSpec:
    fields = value.mapping(_COORDINATOR_KEYS)

    def seconds(key: str, default: float) -> float:
        item = fields.get(key)
        return default if item is None else item.duration()

    latency = seconds("latency", 0.2)
    jitter = seconds("jitter", 0.0)
    margin = seconds("latency_margin", max(1.0, latency + jitter))
    if latency + jitter > margin:
        (fields.get("latency_margin") or value).fail(
            f"latency {latency:g} s + jitter {jitter:g} s exceeds the coordinator's latency "
            f"margin {margin:g} s: the cross-station invariant assumes messages arrive within it"
        )
    try:
        settings = CoordinatorSettings(
            valid_s=seconds("valid_s", 30.0),
            publish_period_s=seconds("period_s", 5.0),
            latency_margin_s=margin,
            station_silent_s=seconds("silent_s", 15.0),
            rise_delay_s=seconds("rise_delay", DEFAULT_RISE_DELAY_S),
        )
    except ValueError as exc:
        value.fail(str(exc))
    telemetry = seconds("telemetry", DEFAULT_TELEMETRY_PERIOD_S)
    if not telemetry > 0.0:
        (fields.get("telemetry") or value).fail("must be > 0")
    return CoordinatorSpec(settings, latency, jitter, telemetry)


def _check_events(
    written: tuple[tuple[Event, Value], ...],
    site: SiteConfig | None,
    coordinated: bool,
    has_link: bool,
) -> None:
    """What an event needs of the rest of the scenario; ``written``: each event with the value
    of its kind's key (``link:``, ``site_load_kw:``...), where a refusal points."""
    root_kw = (
        next((g.limit_kw for g in site.spec.groups if g.parent is None), None) if site else None
    )
    for event, where in written:
        if (event.station is not None or event.coordinator_restart) and not coordinated:
            where.fail(
                "station: on a link event and coordinator: restart need a coordinated site "
                "scenario (coordinator: at the top level)"
            )
        if event.link_up is not None and not has_link:
            # The run would take the cut at its word: every port at its fallback level for
            # the rest of the run, with nothing in the story to explain it.
            where.fail(
                "the station file has no link: block, so there is no coordinator to lose "
                "(give the station a link: block, or use a site: scenario with coordinator:)"
            )
        dlm = site is not None and (bool(site.meters) or root_kw is not None)
        if event.site_load_kw is not None and site is not None and not dlm:
            where.fail("site_load_kw needs a group with meter: or a root limit_kw")


def _events(
    value: Value, port_ids: list[str], stations: tuple[str, ...] = ()
) -> tuple[tuple[Event, Value], ...]:
    """Each event, in file order, with the value of its kind's key (to point at)."""
    events: list[tuple[Event, Value]] = []
    for item in value.sequence():
        fields = item.mapping(_EVENT_KEYS, ("at",))
        at_v = fields.require("at")
        at = at_v.duration()
        if at < 0:
            at_v.fail("must be >= 0")
        kinds = [k for k in ("link", "fault", "site_load_kw", "coordinator", "tag") if k in fields]
        if len(kinds) != 1:
            item.fail(
                "an event has exactly one of link:, fault:, site_load_kw:, coordinator:, tag:"
            )
        station_v = fields.get("station")
        if station_v is not None and "link" not in fields:
            station_v.fail("only a link: event names a station")
        if (link := fields.get("link")) is not None:
            word = link.string()
            if word not in ("up", "down"):
                link.fail(f"{word!r} is not allowed (allowed: up, down)")
            station = None
            if station_v is not None:
                station = station_v.ident()
                if station not in stations:
                    station_v.fail(f"no station {station!r} (stations: {', '.join(stations)})")
            events.append((Event(at, link_up=word == "up", station=station), link))
        elif (tag_v := fields.get("tag")) is not None:
            try:
                tag = check_tag(str(tag_v.node.value))
            except ValueError as exc:
                tag_v.fail(str(exc))
            events.append((Event(at, tag=tag), tag_v))
        elif (coord := fields.get("coordinator")) is not None:
            word = coord.string()
            if word != "restart":
                coord.fail(f"{word!r} is not allowed (allowed: restart)")
            events.append((Event(at, coordinator_restart=True), coord))
        elif (fault := fields.get("fault")) is not None:
            f = fault.mapping(_FAULT_KEYS, ("port", "kind"))
            port_v, kind_v = f.require("port"), f.require("kind")
            port, kind = port_v.ident(), kind_v.string()
            if port not in port_ids:
                port_v.fail(f"no port {port!r} (allowed: {', '.join(port_ids)})")
            if kind not in FAULT_KINDS:
                kind_v.fail(f"{kind!r} is not allowed (allowed: {', '.join(FAULT_KINDS)})")
            clear_v = f.get("clear")
            clear = False if clear_v is None else clear_v.boolean()
            events.append((Event(at, fault_port=port, fault_kind=kind, fault_clear=clear), fault))
        else:
            load_v = fields.require("site_load_kw")
            load = load_v.number()
            if not load >= 0.0:
                load_v.fail("must be >= 0")
            events.append((Event(at, site_load_kw=load), load_v))
    return tuple(events)
