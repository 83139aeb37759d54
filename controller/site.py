"""A whole site as the coordinator sees it: the limit tree, which station owns which port, and
the dynamic parts of the limits (time-of-use schedules, site meters).

One job: hold a validated site (``firmware.config.load_site_config`` builds it from a site
file) and cut a station's own part out of it. Pure data.

API::

    SiteConfig(spec, stations, schedules={}, meters={})
    SiteConfig.from_spec(spec)             # stations by port id: "st1.2" -> station "st1"
    config.station_of(port_id) -> str
    config.station_spec(station) -> SiteSpec   # the station's local tree (below)
    SiteMeterSpec(max_kw, conservative_kw, url=None, topic=False, stale_s=30)
    default_station(port_id) -> str

A station's local tree has its ports and every group all of whose ports are its own (its
breakers; a jumper station's one feed). If one such group holds all its ports, it is the
root; otherwise a limitless root named after the station holds them (a limit tree has one
root, as for a station without the jumper in firmware.config). Groups it shares with other
stations (a circuit, a panel, the site) are the coordinator's business.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.limits import RESERVED_IDS
from controller.model import GroupSpec, SiteSpec
from controller.schedule import WeeklySchedule

__all__ = ["DEFAULT_METER_STALE_S", "SiteConfig", "SiteMeterSpec", "default_station"]

# A site meter polled every few seconds that has said nothing for 30 s is not being read.
DEFAULT_METER_STALE_S = 30.0


def default_station(port_id: str) -> str:
    """A port's station when the site file does not say: its id up to the last "."."""
    head, dot, _ = port_id.rpartition(".")
    return head if dot and head else port_id


@dataclass(frozen=True, slots=True)
class SiteMeterSpec:
    """Dynamic load management for one group (the guide, "How to set the Limits?" 3).

    The group's kW limit becomes ``max_kw`` minus the unmanaged load the meter reads; while the
    reading is older than ``stale_s`` (or there is none), ``conservative_kw`` (docs/design.md: "a
    stale site meter means the conservative fallback limit, never 'no limit'"). The reading
    comes from a meter backend (``url``) or from the MQTT topic ``topics.site_meter``
    (``topic``).
    """

    max_kw: float
    conservative_kw: float
    url: str | None = None
    topic: bool = False
    stale_s: float = DEFAULT_METER_STALE_S


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """A validated site: tree, stations (id -> its port ids), schedules and meters by group."""

    spec: SiteSpec
    stations: Mapping[str, tuple[str, ...]]
    schedules: Mapping[str, WeeklySchedule] = field(default_factory=dict)
    meters: Mapping[str, SiteMeterSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ports = [p.id for p in self.spec.ports]
        owned = [pid for pids in self.stations.values() for pid in pids]
        if sorted(owned) != sorted(ports):
            raise ValueError("every port must belong to exactly one station")
        groups = {g.id for g in self.spec.groups}
        for gid in (*self.schedules, *self.meters):
            if gid not in groups:
                raise ValueError(f"schedule or meter for unknown group {gid!r}")

    @classmethod
    def from_spec(cls, spec: SiteSpec) -> SiteConfig:
        """A site without schedules or meters, stations named by `default_station`."""
        stations: dict[str, list[str]] = {}
        for p in spec.ports:
            stations.setdefault(default_station(p.id), []).append(p.id)
        return cls(spec, {s: tuple(p) for s, p in stations.items()})

    def station_of(self, port_id: str) -> str:
        for station, ports in self.stations.items():
            if port_id in ports:
                return station
        raise KeyError(port_id)

    def station_spec(self, station: str) -> SiteSpec:
        """The station's local tree (module docstring)."""
        mine = set(self.stations[station])
        spec = self.spec
        by_id = {g.id: g for g in spec.groups}
        beneath: dict[str, set[str]] = {g.id: set() for g in spec.groups}
        for p in spec.ports:
            gid: str | None = p.group
            while gid is not None:
                beneath[gid].add(p.id)
                gid = by_id[gid].parent
        local = [g for g in spec.groups if beneath[g.id] and beneath[g.id] <= mine]
        local_ids = {g.id for g in local}
        tops = [g for g in local if g.parent not in local_ids]
        ports = [p for p in spec.ports if p.id in mine]
        if len(tops) == 1 and beneath[tops[0].id] == mine:
            root_id = tops[0].id
            groups = [dataclasses.replace(g, parent=None) if g is tops[0] else g for g in local]
            groups.sort(key=lambda g: g.id != root_id)  # root first, like a station file
        else:
            root_id = station
            while root_id in local_ids or root_id in RESERVED_IDS or ":" in root_id:
                root_id = f"{root_id}-station"
            groups = [GroupSpec(id=root_id)] + [
                dataclasses.replace(g, parent=root_id) if g in tops else g for g in local
            ]
            ports = [
                p if p.group in local_ids else dataclasses.replace(p, group=root_id) for p in ports
            ]
        return SiteSpec(id=station, groups=tuple(groups), ports=tuple(ports), policy=spec.policy)
