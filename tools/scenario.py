"""Scenario files (DESIGN.md "Command line"): a station or site, a duration, EVs and events."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controller.model import SiteSpec
from firmware.config import (
    ConfigError,
    load_site,
    load_station,
    parse_evs,
)
from firmware.port import PortConfig
from firmware.yamlnodes import Value, load_document
from hal.sim.bus import FAULT_KINDS
from hal.sim.ev import EvSpec

# J1772 (DESIGN.md "The safe-offer invariant"): a compliant EV follows a lower offer in <= 5 s.
COMPLIANT_RESPONSE_S = 5.0

_KEYS = ("name", "description", "station", "site", "duration", "evs", "events", "seed", "control")
_EVENT_KEYS = ("at", "link", "fault", "site_load_kw")
_FAULT_KEYS = ("port", "kind", "clear")


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happens at a moment of a scenario."""

    at: float
    link_up: bool | None = None
    fault_port: str | None = None
    fault_kind: str | None = None
    fault_clear: bool = False
    site_load_kw: float | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario: what runs, for how long, and what happens."""

    path: str
    name: str
    site: SiteSpec
    jumper: bool
    port_config: PortConfig
    control: Mapping[str, float]
    duration_s: float
    evs: tuple[EvSpec, ...]
    events: tuple[Event, ...] = ()
    seed: int = 0
    description: str = ""
    station_id: str | None = None
    voltages: Mapping[str, float] = field(default_factory=dict)

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
    top = doc.mapping(_KEYS, ("duration",))
    station_v, site_v = top.get("station"), top.get("site")
    if (station_v is None) == (site_v is None):
        doc.fail("name exactly one of station: or site:", "station")
    control: dict[str, float] = {}
    if station_v is not None:
        target = _relative(doc, station_v)
        try:
            station = load_station(target)
        except ConfigError as exc:
            # Say which scenario line led here, and keep the station file's own location.
            station_v.fail(f"cannot use the station file: {exc}")
        site, jumper, port_config = station.site, station.jumper, station.port_config
        control.update(station.control)
        station_id: str | None = station.id
    else:
        assert site_v is not None
        try:
            site = load_site(_relative(doc, site_v))
        except ConfigError as exc:
            site_v.fail(f"cannot use the site file: {exc}")
        jumper, port_config, station_id = False, PortConfig(), None
    port_ids = [p.id for p in site.ports]

    duration = top.require("duration").duration()
    if not duration > 0.0:
        top.require("duration").fail("must be > 0")
    evs_v = top.get("evs")
    evs = () if evs_v is None else parse_evs(evs_v, port_ids)
    for ev, item in zip(evs, [] if evs_v is None else evs_v.sequence(), strict=False):
        if ev.arrive_s < 0 or (ev.leave_s is not None and ev.leave_s <= ev.arrive_s):
            item.fail("arrive must be >= 0 and leave after arrive", f"{item.field}.leave")
    events = () if (ev_v := top.get("events")) is None else _events(ev_v, port_ids)
    control_v = top.get("control")
    if control_v is not None:
        fields = control_v.mapping(None)
        for key in fields:
            entry = fields.get(key)
            if entry is not None:
                control[key] = entry.number()
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
    )


def _events(value: Value, port_ids: list[str]) -> tuple[Event, ...]:
    events = []
    for item in value.sequence():
        fields = item.mapping(_EVENT_KEYS, ("at",))
        at_v = fields.require("at")
        at = at_v.duration()
        if at < 0:
            at_v.fail("must be >= 0")
        kinds = [k for k in ("link", "fault", "site_load_kw") if k in fields]
        if len(kinds) != 1:
            item.fail("an event has exactly one of link:, fault:, site_load_kw:")
        if (link := fields.get("link")) is not None:
            word = link.string()
            if word not in ("up", "down"):
                link.fail(f"{word!r} is not allowed (allowed: up, down)")
            events.append(Event(at, link_up=word == "up"))
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
            events.append(Event(at, fault_port=port, fault_kind=kind, fault_clear=clear))
        else:
            load_v = fields.require("site_load_kw")
            load = load_v.number()
            if not load >= 0.0:
                load_v.fail("must be >= 0")
            events.append(Event(at, site_load_kw=load))
    return tuple(sorted(events, key=lambda e: e.at))
