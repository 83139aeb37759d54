"""Station files: one station's model, breakers, ports, backends, port machine and link.

One job: read a station file (shape: the comment at the top of configs/ct4000-jumper.yaml)
into a ``StationConfig``: its breaker groups and ports as a one-root ``SiteSpec`` checked
against the station model's ratings and its Power Sharing jumper (the guide, "Power Sharing
Jumper"), the backend URLs of its hardware and port meters, the port machine's and the
controller's settings, its hardware backend's own section (read by that backend, through
hal.registry) and its ``link:`` block (firmware.config.link). A config value can never make a
station offer more than its breaker's continuous rating allows (docs/design.md, "Safety is
local"): what would, is refused here with file, line and field, before anything runs.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.core import ControlSettings
from controller.model import GroupSpec, SiteSpec
from firmware.config.auth import AuthConfig, parse_auth
from firmware.config.common import (
    STATION_GROUP_KEYS,
    STATION_PORT_KEYS,
    GroupEntry,
    PortDefaults,
    PortEntry,
    check_spec,
    check_unique,
    parse_group,
    parse_port,
    top_defaults,
)
from firmware.config.link import LinkConfig, parse_link
from firmware.models import MODELS, StationModel
from firmware.port import PortConfig
from hal import registry
from hal.registry import BUILTIN_METER
from hal.yamlnodes import Fields, Value, fmt, load_document

__all__ = [
    "DEFAULT_URL",
    "STATION_KEYS",
    "StationConfig",
    "load_station",
    "station_from_value",
]

# docs/design.md "J1772 / IEC 61851 timings": the contactor must open within 100 ms of C -> B,
# and the loop is what notices C -> B, so one loop period must fit in that budget with margin.
MAX_LOOP_PERIOD_S = 0.1
DEFAULT_LOOP_PERIOD_S = 0.05
DEFAULT_URL = "sim://"  # the hardware when a file names none: the simulated pilot bus


@dataclass(frozen=True, slots=True)
class StationConfig:
    """A validated station file.

    ``site`` is the station's sharing part in the site vocabulary: its ports ("1", "2", in
    order) and its breaker groups (jumper: one group for both ports, the root; no jumper: one
    per port, under a limitless grouping root named after the station, because a limit tree
    has exactly one root).
    ``meter_urls`` is parallel to ``site.ports``: ``builtin`` (the meter that comes with the
    hardware) or a meter backend's URL. ``control`` is passed to the controller's settings as
    keyword arguments. ``hardware_section`` is the hardware backend's own section (``sim:`` for
    ``sim://``) as that backend's parser returned it: opaque here, handed back to the backend
    when it opens (hal.interfaces.BackendContext.section).
    """

    id: str
    model: str
    jumper: bool
    voltage_v: float
    site: SiteSpec
    hardware_url: str = DEFAULT_URL
    meter_urls: tuple[str, ...] = ()
    port_config: PortConfig = field(default_factory=PortConfig)
    control: ControlSettings = field(default_factory=ControlSettings)
    hardware_section: object = None
    loop_period_s: float = DEFAULT_LOOP_PERIOD_S
    path: str = ""
    link: LinkConfig | None = None  # site sharing over MQTT (docs/mqtt.md); None: standalone
    auth: AuthConfig = field(
        default_factory=AuthConfig
    )  # who may charge (firmware.auth); free by default

    @property
    def station_model(self) -> StationModel:
        return MODELS[self.model]

    @property
    def port_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.site.ports)

    def meter_url(self, port_id: str) -> str:
        return dict(zip(self.port_ids, self.meter_urls, strict=True))[port_id]


STATION_KEYS = (
    "station",
    "model",
    "jumper",
    "voltage_v",
    "policy",
    "min_a",
    "hardware",
    "loop_period_s",
    "groups",
    "ports",
    "port_machine",
    "control",
    *registry.SECTION_PARSERS,  # a backend's own section, named after its scheme: sim
    "link",
    "auth",
)


def load_station(path: str | os.PathLike[str]) -> StationConfig:
    """Read a station file (shape: the comment at the top of configs/ct4000-jumper.yaml)."""
    return station_from_value(load_document(path))


def station_from_value(doc: Value) -> StationConfig:
    """A station from an already-read document (``load_document``)."""
    path = doc.path
    top = doc.mapping(STATION_KEYS, ("station", "model", "groups", "ports"))
    station_id = top.require("station").ident()
    model = _station_model(top.require("model"))
    jumper_value = top.get("jumper")
    jumper = False if jumper_value is None else jumper_value.boolean()
    if jumper and not model.has_jumper:
        assert jumper_value is not None
        with_jumper = ", ".join(m.name for m in MODELS.values() if m.has_jumper)
        jumper_value.fail(
            f"the {model.name} has no Power Sharing jumper option (models with one: "
            f"{with_jumper}; the guide, Power Sharing Jumper)"
        )
    voltage_v, policy, min_a = top_defaults(top)

    # The installer must state the breaker (the guide, "How is Power Sharing Configured": the
    # electrical contractor configures "the specific breaker size"): breaker_a is required.
    groups = [
        parse_group(item, STATION_GROUP_KEYS, ("id", "breaker_a"))
        for item in top.require("groups").sequence(allow_empty=False)
    ]
    check_unique(groups, "group")
    feed_max = model.jumper_breaker_a if jumper else model.breaker_a
    assert feed_max is not None
    for g in groups:
        assert g.spec.breaker_a is not None
        if g.spec.breaker_a > feed_max:
            per = "a jumpered feed" if jumper else "a port's dedicated feed"
            g.fields.require("breaker_a").fail(
                f"{fmt(g.spec.breaker_a)} A is above the {model.name}'s rating for {per} "
                f"(allowed: up to {fmt(feed_max)} A; {model.source})"
            )

    defaults = PortDefaults(
        voltage_v=voltage_v,
        min_a=min_a,
        max_a=model.port_max_a,
        rating_a=model.port_max_a,
        rating_why=f"the {model.name} is rated {fmt(model.port_max_a)} A per port",
    )
    ports_value = top.require("ports")
    ports = [
        parse_port(item, STATION_PORT_KEYS, defaults)
        for item in ports_value.sequence(allow_empty=False)
    ]
    check_unique(ports, "port")
    for p in ports:
        if p.spec.id not in model.port_ids:
            p.fields.require("id").fail(
                f"the {model.name} has no port {p.spec.id!r} (allowed: {', '.join(model.port_ids)})"
            )
    listed = {p.spec.id for p in ports}
    missing = [pid for pid in model.port_ids if pid not in listed]
    if missing:
        ports_value.fail(
            f"port {missing[0]!r} is missing: the {model.name} has ports "
            f"{', '.join(model.port_ids)} and each must be on a breaker group"
        )
    ports.sort(key=lambda p: model.port_ids.index(p.spec.id))
    site = SiteSpec(
        id=station_id,
        groups=_station_tree(station_id, groups, ports),
        ports=tuple(p.spec for p in ports),
        policy=policy,
    )
    check_spec(site, top, groups, ports, jumper=jumper, root=top.require("station"))
    meter_urls = tuple(
        BUILTIN_METER if (url := p.fields.get("meter")) is None else _meter_url(url) for p in ports
    )

    # Read in this order so that a file with several mistakes is refused for the same one.
    hardware = top.get("hardware")
    hardware_url = DEFAULT_URL if hardware is None else hardware.url()
    port_machine = top.get("port_machine")
    port_config = PortConfig() if port_machine is None else _port_config(port_machine)
    control = top.get("control")
    control_values = ControlSettings() if control is None else parse_control(control)
    section = _hardware_section(top, hardware_url, model.port_ids)
    link = None if (link_value := top.get("link")) is None else parse_link(link_value, station_id)
    auth = AuthConfig() if (auth_value := top.get("auth")) is None else parse_auth(auth_value)
    loop = top.get("loop_period_s")
    return StationConfig(
        id=station_id,
        model=model.name,
        jumper=jumper,
        voltage_v=voltage_v,
        site=site,
        hardware_url=hardware_url,
        meter_urls=meter_urls,
        port_config=port_config,
        control=control_values,
        hardware_section=section,
        link=link,
        auth=auth,
        loop_period_s=DEFAULT_LOOP_PERIOD_S if loop is None else _loop_period(loop),
        path=path,
    )


def _meter_url(value: Value) -> str:
    """A port's ``meter:``: ``builtin`` (the meter that comes with the hardware) or a meter
    backend's URL (checked for its shape here; its backend reads the rest when it opens)."""
    text = value.string()
    if text == BUILTIN_METER:
        return text
    scheme, sep, _rest = text.partition("://")
    if not sep:
        value.fail(
            f"{text!r} is neither {BUILTIN_METER} nor a meter URL (expected {BUILTIN_METER}, or "
            "scheme://..., e.g. modbus-tcp://HOST:PORT?unit=1&model=sdm630)"
        )
    url = value.url()
    if scheme in registry.HARDWARE_BACKENDS:
        value.fail(
            f"{url!r} names hardware, not a meter: write {BUILTIN_METER} for the meter that "
            "comes with the hardware"
        )
    return url


def _hardware_section(top: Fields, hardware_url: str, port_ids: Sequence[str]) -> object:
    """The hardware backend's own section (``sim:``), read by the backend's parser and kept
    as it returned it, opaque here (hal.registry.parse_section); None when there is none."""
    scheme = hardware_url.partition("://")[0]  # Value.url() checked it is there
    section: object = None
    for key in registry.SECTION_PARSERS:
        value = top.get(key)
        if value is None:
            continue
        if key != scheme:
            value.fail(
                f"configures the {key}:// backend, but this station's hardware is "
                f"{hardware_url} (remove {key}: or set hardware: {key}://)"
            )
        section = registry.parse_section(key, value, port_ids)
    return section


def _station_tree(
    station_id: str, groups: Sequence[GroupEntry], ports: Sequence[PortEntry]
) -> tuple[GroupSpec, ...]:
    """The station's groups as one tree (the limit tree has exactly one root).

    With one feed (jumper, or a one-port model) that feed is the root. With a breaker per port,
    a pure grouping root named after the station (no limit of its own) holds them; validate
    checks its id like any group's (a problem of it points at ``station:``).
    """
    if len(groups) == 1:
        return (groups[0].spec,)
    for g in groups:
        if g.spec.id == station_id:
            g.fields.require("id").fail(
                f"{station_id!r} is the station's id, which names the group holding its breakers "
                "(choose another group id)"
            )
    # The root is this loader's, not a breaker of the file: validate would take a port on it
    # for a port on a group.
    breakers = ", ".join(g.spec.id for g in groups)
    for p in ports:
        if p.spec.group == station_id:
            p.fields.require("group").fail(
                f"{station_id!r} is the station's id, which names the group holding its breakers, "
                f"not a breaker (groups: {breakers})"
            )
    root = GroupSpec(id=station_id)
    return (root, *(dataclasses.replace(g.spec, parent=station_id) for g in groups))


def _station_model(value: Value) -> StationModel:
    name = value.string().strip().lower()
    model = MODELS.get(name)
    if model is None:
        value.fail(f"unknown station model {name!r} (known: {', '.join(MODELS)})")
    return model


def _loop_period(value: Value) -> float:
    seconds = value.duration()
    if not 0 < seconds <= MAX_LOOP_PERIOD_S:
        value.fail(
            f"{fmt(seconds)} s is not allowed (allowed: > 0 .. {fmt(MAX_LOOP_PERIOD_S)} s: the "
            "contactor must open within 100 ms of C -> B, docs/design.md J1772 timings)"
        )
    return seconds


def _port_config(value: Value) -> PortConfig:
    """``port_machine:`` keys are PortConfig's fields, found at run time so new ones just work."""
    hints = typing.get_type_hints(PortConfig)
    names = [f.name for f in dataclasses.fields(PortConfig)]
    fields = value.mapping(names)
    kwargs: dict[str, object] = {}
    for name in fields:
        item = fields.require(name)
        kind = hints[name]
        if kind is bool:
            kwargs[name] = item.boolean()
        elif kind is int:
            number = item.integer()
            if number < 0:
                item.fail(f"{number} is not allowed (must be >= 0)")
            kwargs[name] = number
        elif kind is float:
            number_f = item.duration() if name.endswith("_s") else item.number()
            if number_f < 0:
                item.fail(f"{fmt(number_f)} is not allowed (must be >= 0)")
            kwargs[name] = number_f
        elif kind is str:
            kwargs[name] = item.string()
        else:  # a field type this loader cannot read from YAML: say so, never guess
            item.fail(f"cannot be set from a config file (type {kind})")
    ratio = kwargs.get("overdraw_ratio")
    if isinstance(ratio, float) and ratio < 1.0:
        fields.require("overdraw_ratio").fail(
            f"{fmt(ratio)} would fault vehicles that follow their offer (allowed: >= 1)"
        )
    return PortConfig(**kwargs)  # type: ignore[arg-type]


def parse_control(value: Value, base: ControlSettings | None = None) -> ControlSettings:
    """The ``control:`` block: overrides of `controller.core.ControlSettings`, nested as the
    settings are (``demand:``, ``rotation:``, ``wake:``), applied to ``base`` (default: the
    defaults). ``*_s`` fields take durations, integer fields integers; a value the settings
    refuse is refused here, with its line."""
    settings = _settings(value, base if base is not None else ControlSettings())
    assert isinstance(settings, ControlSettings)
    return settings


def _settings(value: Value, current: Any) -> Any:
    hints = typing.get_type_hints(type(current))
    fields = value.mapping(sorted(f.name for f in dataclasses.fields(current)))
    changes: dict[str, Any] = {}
    for name in fields:
        item = fields.require(name)
        sub = getattr(current, name)
        if dataclasses.is_dataclass(sub):
            changes[name] = _settings(item, sub)
        elif hints.get(name) is int:
            changes[name] = item.integer()
        else:
            changes[name] = item.duration() if name.endswith("_s") else item.number()
    try:
        return dataclasses.replace(current, **changes)
    except ValueError as exc:
        value.fail(str(exc))
