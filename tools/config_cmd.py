"""`ampshare config check FILE`: tell what kind of file it is, read it as the program does.

One job: tell an installer, before anything runs, whether a file is accepted and what the
program understood from it, or give the one-line ``FILE:LINE: FIELD: message`` refusal. Every
kind of file the project reads is checked by the loader the program itself uses for it: a
station file (``ampshare run``), a site file (``allocate``, ``coordinator``), a state file
(``allocate``; alone, so its port ids wait for ``allocate`` to meet the site), a scenario
(``ampshare sim``, with the station or site file it names), a meter register map
(``hal.modbus.maps``) and a Pi board file (``hal.gpio.board``). A station on ``gpio://`` has its
board file checked with it.

The kind is told by the keys at the top of the file: of the keys each kind's loader allows,
the ones no other kind allows; the kind with most of them wins. A file with none of them is a
site file if it says ``site:``, a state file if its ``ports:`` is a mapping (ports by id), and
otherwise a station file, whose loader then says what is wrong.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Literal

import yaml

from controller.limits import LimitTree, TreeError
from controller.model import GroupSpec, PortSpec, SiteSpec
from firmware.config import (
    ConfigError,
    State,
    StationConfig,
    load_document,
    load_state,
    site_from_value,
    station_from_value,
)
from firmware.config.site import SITE_KEYS
from firmware.config.state import STATE_KEYS
from firmware.config.station import STATION_KEYS
from hal.durations import format_duration
from hal.gpio.board import BOARD_KEYS, Board, pin_table, read_board
from hal.modbus.maps import MAP_KEYS, MeterMap, read_map
from hal.sim.config import SimSection
from hal.yamlnodes import Value
from tools.scenario import SCENARIO_KEYS, Scenario, load_scenario

EXIT_OK = 0
EXIT_INVALID = 2

Kind = Literal["station", "site", "state", "scenario", "meter map", "board"]

# Each kind's allowed top-level keys, as its loader has them (dict order breaks a tie).
_KEYS: dict[Kind, tuple[str, ...]] = {
    "station": STATION_KEYS,
    "site": SITE_KEYS,
    "state": STATE_KEYS,
    "scenario": SCENARIO_KEYS,
    "meter map": MAP_KEYS,
    "board": BOARD_KEYS,
}
_OWN_KEYS: dict[Kind, frozenset[str]] = {
    kind: frozenset(keys).difference(*(k for other, k in _KEYS.items() if other != kind))
    for kind, keys in _KEYS.items()
}


def file_kind(doc: Value) -> Kind:
    """The kind of file ``doc`` is, from the keys at its top (module docstring)."""
    if not isinstance(doc.node, yaml.MappingNode):
        return "station"  # its loader refuses it, saying what it expected
    top = {key.value: value for key, value in doc.node.value if isinstance(key, yaml.ScalarNode)}
    scores = {kind: len(own.intersection(top)) for kind, own in _OWN_KEYS.items()}
    best = max(scores, key=scores.__getitem__)
    if scores[best]:
        return best
    if "site" in top:
        return "site"
    if isinstance(top.get("ports"), yaml.MappingNode):
        return "state"
    return "station"


def check_config(path: str) -> str:
    """The summary of the file at ``path``; ConfigError (or TreeError) if it is refused.

    The whole of what `config check` does short of printing, so that the fuzz test
    (tests/configfuzz.py) runs exactly this dispatch in-process.
    """
    doc = load_document(path)
    kind = file_kind(doc)
    if kind == "scenario":
        scenario = load_scenario(path)
        LimitTree.from_spec(scenario.site)
        return _scenario_summary(scenario)
    if kind == "meter map":
        return _map_summary(read_map(doc))
    if kind == "board":
        return _board_summary(read_board(doc))
    if kind == "state":
        return _state_summary(load_state(path, None))
    if kind == "site":
        site = site_from_value(doc)
        LimitTree.from_spec(site)  # the loader's checks should make this never refuse
        return _site_summary(site)
    station = station_from_value(doc)
    LimitTree.from_spec(station.site)
    summary = _station_summary(station)
    if station.hardware_url.startswith("gpio://"):
        summary += "\n" + _station_board(station)
    return summary


def _station_board(station: StationConfig) -> str:
    """The board a ``gpio://`` station names, checked as the backend will load it."""
    from hal.gpio.board import load_board, port_count_problem
    from hal.gpio.config import parse_url

    board = load_board(parse_url(station.hardware_url).board)  # BoardError is a ConfigError
    problem = port_count_problem(board, len(station.port_ids))
    if problem is not None:
        raise ConfigError(station.path, None, "hardware", problem)
    return f"board {board.name}: Raspberry Pi {board.pi}, {len(board.ports)} ports"


def _board_summary(board: Board) -> str:
    lines = [
        f"board {board.name}: Raspberry Pi {board.pi}, {_count(len(board.ports), 'port')}, "
        f"{board.adc_chip} on SPI{board.spi_bus}.{board.spi_device}, {board.burst} conversions "
        "per pilot burst",
        "pins:",
        *(f"  GPIO {pin}: {what}" for pin, what in pin_table(board).items()),
    ]
    return "\n".join(lines)


def config_check(path: str) -> int:
    """Print a summary of the file at ``path`` and return 0, or the refusal and return 2."""
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


def _count(n: int, one: str, many: str = "") -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


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
            f"site {site.id}: {_count(len(site.groups), 'group')}, "
            f"{_count(len(site.ports), 'port')}, "
            f"policy {site.policy.value}",
            "groups:",
            *_tree_lines(site),
            "ports:",
            *(_port_line(port) for port in site.ports),
        ]
    )


def _scenario_summary(scenario: Scenario) -> str:
    ports = _count(len(scenario.site.ports), "port")
    if scenario.station_id is not None:
        runs = f"station {scenario.station_id} ({ports})"
    else:
        assert scenario.site_config is not None
        stations = _count(len(scenario.site_config.stations), "station")
        how = "under a coordinator" if scenario.coordinator is not None else "as one controller"
        runs = f"site {scenario.site.id} ({ports}, {stations} {how})"
    return (
        f"scenario {scenario.name}: {runs}, {format_duration(scenario.duration_s)}, "
        f"{_count(len(scenario.evs), 'EV plug-in')}, {_count(len(scenario.events), 'event')}"
    )


def _state_summary(state: State) -> str:
    charging = ", ".join(state.ports) if state.ports else "none: every port idle"
    when = "" if state.time is None else f", at {state.time.isoformat(sep=' ')} (time of use)"
    load = "" if state.site_load_kw is None else f", site load {state.site_load_kw:g} kW"
    return (
        f"state: {_count(len(state.ports), 'port')} charging ({charging}){when}{load}; "
        "its port ids are checked against the site by `ampshare allocate SITE STATE`"
    )


def _map_summary(meter: MeterMap) -> str:
    quantities = _count(len(meter.quantities), "quantity", "quantities")
    return (
        f"meter map {meter.model}: {meter.description or meter.source}; {meter.phases}-phase, "
        f"{quantities} in {_count(len(meter.blocks), 'read')} "
        f"(at most {meter.max_registers} registers each)"
    )
