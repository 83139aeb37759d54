"""`ampshare config check FILE`: validate a station or site config and summarise it.

One job: tell an installer, before anything runs, whether a file is accepted and what the
firmware understood from it (ports, breaker groups with their 80 % limits, the jumper), or
give the one-line ``FILE:LINE: FIELD: message`` refusal. A file with ``site:`` at the top is
a site file; anything else is read as a station file.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import yaml

from controller.limits import LimitTree, TreeError
from controller.model import GroupSpec, PortSpec, SiteSpec
from firmware.config import (
    ConfigError,
    StationConfig,
    load_document,
    site_from_value,
    station_from_value,
)
from hal.sim.config import SimSection

EXIT_OK = 0
EXIT_INVALID = 2


def check_config(path: str) -> str:
    """The summary of the config at ``path``; ConfigError (or TreeError) if it is refused.

    The whole of what `config check` does short of printing, so that the fuzz test
    (tests/configfuzz.py) runs exactly this dispatch in-process.
    """
    doc = load_document(path)
    is_site = isinstance(doc.node, yaml.MappingNode) and any(
        isinstance(key, yaml.ScalarNode) and key.value == "site" for key, _ in doc.node.value
    )
    if is_site:
        site = site_from_value(doc)
        LimitTree.from_spec(site)  # the loader's checks should make this never refuse
        return _site_summary(site)
    station = station_from_value(doc)
    LimitTree.from_spec(station.site)
    return _station_summary(station)


def config_check(path: str) -> int:
    """Print a summary of the config at ``path`` and return 0, or the refusal and return 2."""
    try:
        text = check_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    except TreeError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(text)
    return EXIT_OK


def _a(amps: float | None) -> str:
    return "-" if amps is None else f"{amps:g} A"


def _group_limits(group: GroupSpec) -> str:
    parts = []
    if group.breaker_a is not None and group.limit_a is not None:
        per = " per phase" if group.phases == 3 else ""
        parts.append(f"breaker {group.breaker_a:g} A -> 80 % limit {group.limit_a:g} A{per}")
    if group.limit_kw is not None:
        parts.append(f"{group.limit_kw:g} kW")
    return ", ".join(parts) or "no limit of its own (grouping)"


def _port_line(port: PortSpec, meter: str | None = None) -> str:
    select = "" if port.power_select_a is None else f" (Power Select {port.power_select_a:g} A)"
    line = (
        f"  {port.id}: group {port.group}, cap {port.cap_a:g} A{select}, min {port.min_a:g} A, "
        f"fallback {_a(port.fallback_a)}, {port.phases.value} {port.voltage_v:g} V"
    )
    return line if meter is None else f"{line}, meter {meter}"


def _tree_lines(site: SiteSpec) -> list[str]:
    children: dict[str | None, list[GroupSpec]] = {}
    for group in site.groups:
        children.setdefault(group.parent, []).append(group)
    ports_of: dict[str, list[str]] = {}
    for port in site.ports:
        ports_of.setdefault(port.group, []).append(port.id)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for group in children.get(parent, []):
            ports = ports_of.get(group.id)
            on = ""
            if ports:
                on = f"; port{'s' if len(ports) > 1 else ''} {', '.join(ports)}"
            lines.append(f"  {'  ' * depth}{group.id}: {_group_limits(group)}{on}")
            walk(group.id, depth + 1)

    walk(None, 0)
    return lines


def _station_summary(config: StationConfig) -> str:
    model = config.station_model
    jumper = (
        "Power Sharing jumper installed: both ports share one breaker"
        if config.jumper
        else "no jumper: each port on its own breaker"
    )
    meters: Mapping[str, str] = dict(zip(config.port_ids, config.meter_urls, strict=True))
    lines = [
        f"station {config.id}: {model.name} ({model.ports} port{'s' if model.ports > 1 else ''}, "
        f"rated {model.port_max_a:g} A per port), {jumper}",
        f"policy {config.site.policy.value}, loop period {config.loop_period_s * 1000:g} ms, "
        f"hardware {config.hardware_url}",
        "groups:",
        *_tree_lines(config.site),
        "ports:",
        *(_port_line(port, meters[port.id]) for port in config.site.ports),
    ]
    section = config.hardware_section
    if isinstance(section, SimSection) and section.evs:
        lines.append(f"sim: {len(section.evs)} simulated EV plug-ins")
    return "\n".join(lines)


def _site_summary(site: SiteSpec) -> str:
    return "\n".join(
        [
            f"site {site.id}: {len(site.groups)} groups, {len(site.ports)} ports, "
            f"policy {site.policy.value}",
            "groups:",
            *_tree_lines(site),
            "ports:",
            *(_port_line(port) for port in site.ports),
        ]
    )
