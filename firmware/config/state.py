"""State files: the instant one allocation of a site is computed for (``ampshare allocate``).

One job: read a state file (YAML or JSON, docs/design.md "File shapes") against the site it
belongs to: which ports are charging, what each car takes at most and since when, the wall
clock time (time of use) and the site's unmanaged load (dynamic load management). Every
refusal is a ``ConfigError`` naming file, line and field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from controller.model import SiteSpec
from hal.yamlnodes import Value, fmt, load_document

__all__ = ["STATE_KEYS", "PortDemand", "State", "load_state"]


@dataclass(frozen=True, slots=True)
class PortDemand:
    """A charging port in a state file: what the car takes at most, and its session order."""

    demand_a: float | None = None  # None: the port's cap
    since: float | None = None


@dataclass(frozen=True, slots=True)
class State:
    """A validated state file: the instant one allocation is computed for."""

    ports: Mapping[str, PortDemand]
    time: datetime | None = None
    site_load_kw: float | None = None


STATE_KEYS = ("time", "site_load_kw", "ports")
_STATE_PORT_KEYS = ("demand_a", "since")


def load_state(
    path: str | os.PathLike[str], site: SiteSpec | None, *, site_meter: bool = False
) -> State:
    """Read a state file (YAML or JSON, docs/design.md "File shapes") for ``site``.

    ``site_meter``: the site has a group with a ``meter:`` (DLM), which ``site_load_kw`` feeds;
    without one it lowers the root group's limit_kw, which must then exist. ``site`` None: the
    file alone (``ampshare config check``, which has no site to read it against): everything
    but its port ids and whether the site has a maximum for ``site_load_kw``.
    """
    doc = load_document(path)
    top = doc.mapping(STATE_KEYS)
    time_value = top.get("time")
    load_value = top.get("site_load_kw")
    site_load = None
    if load_value is not None:
        site_load = load_value.number()
        if site_load < 0:
            load_value.fail(f"{fmt(site_load)} is not allowed (must be >= 0 kW)")
        # Dynamic load management: the unmanaged load comes off the site maximum, the root
        # group's limit_kw (the guide, "How to set the Limits?" 3). Without one it means nothing.
        if site is not None and not site_meter:
            root = next((g for g in site.groups if g.parent is None), None)
            if root is None or root.limit_kw is None:
                name = "" if root is None else f" {root.id!r}"
                load_value.fail(f"needs a site maximum, but the root group{name} has no limit_kw")
    known = [] if site is None else [p.id for p in site.ports]
    ports: dict[str, PortDemand] = {}
    ports_value = top.get("ports")
    if ports_value is not None:
        entries = ports_value.mapping(None)
        for pid in entries:
            entry = entries.values[pid]
            if site is not None and pid not in known:
                entry.fail(f"unknown port {pid!r} (ports of site {site.id!r}: {', '.join(known)})")
            ports[pid] = _port_demand(entry)
    return State(
        ports=ports,
        time=None if time_value is None else time_value.timestamp(),
        site_load_kw=site_load,
    )


def _port_demand(value: Value) -> PortDemand:
    if value.is_null():  # `st1.2:` alone: charging, defaults
        return PortDemand()
    fields = value.mapping(_STATE_PORT_KEYS)
    demand_value = fields.get("demand_a")
    since_value = fields.get("since")
    demand = None
    if demand_value is not None:
        demand = demand_value.number()
        if demand < 0:
            demand_value.fail(f"{fmt(demand)} is not allowed (must be >= 0 A)")
    since = None
    if since_value is not None:
        if since_value.node.tag.endswith(":timestamp"):
            moment = since_value.timestamp()
            since = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        else:
            since = since_value.number()
    return PortDemand(demand_a=demand, since=since)
