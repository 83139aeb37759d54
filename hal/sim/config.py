"""The ``sim:`` section of a station file: what the ``sim://`` backend simulates around it.

One job: read the section the simulated pilot bus takes from a station file (through
``hal.registry.parse_section``, only when a file has one): the EVs that plug in and out
(``evs:``, the same shape as a scenario's, docs/design.md "File shapes") and a Modbus TCP
server for the simulated ports' meters (``meter_server:``, docs/meters.md). The result, a
``SimSection``, is opaque to the station, which hands it back when the bus opens
(``hal.interfaces.BackendContext.section``). Every refusal is a ``ConfigError`` naming file,
line and field. ``parse_evs`` also reads the EVs of scenarios and of ``ampshare board-sim``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Collection
from dataclasses import dataclass

from hal.pilot import MAX_A as J1772_MAX_A  # PWM encodes at most 80 A (IEC 61851-1 Table A.7)
from hal.rfid import check_tag
from hal.sim.ev import EvSpec
from hal.yamlnodes import Value, fmt

__all__ = ["SimMeterServer", "SimSection", "parse_evs", "parse_section"]


@dataclass(frozen=True, slots=True)
class SimMeterServer:
    """``sim: meter_server:``: the simulated ports' meters served as Modbus TCP units 1..N."""

    model: str  # a meter map (a shipped model in hal/modbus/meters/, or a .yaml path)
    host: str = "127.0.0.1"
    port: int = 5020


@dataclass(frozen=True, slots=True)
class SimSection:
    """A station file's ``sim:`` section, read."""

    evs: tuple[EvSpec, ...] = ()
    meter_server: SimMeterServer | None = None


_SECTION_KEYS = ("evs", "meter_server")


def parse_section(value: Value, port_ids: Collection[str]) -> SimSection:
    """``sim:`` of a station whose ports are ``port_ids`` (``hal.registry.SECTION_PARSERS``)."""
    fields = value.mapping(_SECTION_KEYS)
    evs = fields.get("evs")
    server = fields.get("meter_server")
    return SimSection(
        evs=() if evs is None else parse_evs(evs, port_ids),
        meter_server=None if server is None else _meter_server(server),
    )


_EV_KEYS = (
    "port",
    "arrive",
    "leave",
    "max_a",
    "phases",
    "battery_kwh",
    "soc",
    "target_soc",
    "response_s",
    "min_a",
    "wakes",
    "overdraw_a",
    "id_tag",
)


def _meter_server(server: Value) -> SimMeterServer:
    fields = server.mapping(("model", "host", "port"), ("model",))
    model_value = fields.require("model")
    model = model_value.string()
    # The map is checked now (a typo is a config error with its line, not a failed start);
    # hal.modbus.maps reads YAML only, it does not load the Modbus library.
    from hal.modbus.maps import MapError, load_map

    try:
        load_map(model)
    except MapError as exc:
        model_value.fail(str(exc))
    spec = SimMeterServer(model=model)
    if (host := fields.get("host")) is not None:
        spec = dataclasses.replace(spec, host=host.string())
    if (port := fields.get("port")) is not None:
        number = port.integer()
        if not 1 <= number <= 65535:
            port.fail(f"{number} is not a TCP port (allowed: 1..65535)")
        spec = dataclasses.replace(spec, port=number)
    return spec


def parse_evs(value: Value, port_ids: Collection[str]) -> tuple[EvSpec, ...]:
    """A list of simulated plug-ins (the ``evs:`` shape of docs/design.md, "File shapes").

    Refuses an EV on a port that does not exist, and two EVs on one port at the same time.
    """
    evs: list[tuple[EvSpec, Value]] = []
    for item in value.sequence():
        fields = item.mapping(_EV_KEYS, ("port",))
        port_value = fields.require("port")
        port = port_value.ident()
        if port not in port_ids:
            port_value.fail(f"no port {port!r} (allowed: {', '.join(port_ids)})")
        kwargs: dict[str, object] = {"port": port}
        for key in fields:
            entry = fields.get(key)
            if entry is None or key == "port":
                continue
            if key in ("arrive", "leave", "response_s"):
                kwargs[{"arrive": "arrive_s", "leave": "leave_s"}.get(key, key)] = entry.duration()
            elif key == "wakes":
                kwargs[key] = entry.boolean()
            elif key == "id_tag":
                try:
                    kwargs[key] = check_tag(str(entry.node.value))
                except ValueError as exc:
                    entry.fail(str(exc))
            elif key == "phases":
                phases = entry.integer()
                if phases not in (1, 2, 3):
                    entry.fail(f"{phases} is not allowed (allowed: 1, 2 or 3)")
                kwargs[key] = phases
            elif key in ("soc", "target_soc"):
                kwargs[key] = entry.in_range(0.0, 1.0)
            elif key in ("max_a", "battery_kwh"):
                kwargs[key] = entry.positive()
            else:  # min_a, overdraw_a
                kwargs[key] = entry.in_range(0.0, J1772_MAX_A)
        ev = EvSpec(**kwargs)  # type: ignore[arg-type]
        if ev.leave_s is not None and ev.leave_s <= ev.arrive_s:
            (fields.get("leave") or item).fail(
                f"leaves at {fmt(ev.leave_s)} s, not after it arrives at {fmt(ev.arrive_s)} s"
            )
        evs.append((ev, item))
    by_port: dict[str, list[tuple[EvSpec, Value]]] = {}
    for ev, item in evs:
        by_port.setdefault(ev.port, []).append((ev, item))
    for plugins in by_port.values():
        plugins.sort(key=lambda pair: pair[0].arrive_s)
        for (before, _), (after, where) in itertools.pairwise(plugins):
            if before.leave_s is None or before.leave_s > after.arrive_s:
                until = (
                    "never leaves" if before.leave_s is None else f"leaves at {before.leave_s:g} s"
                )
                where.fail(
                    f"arrives on port {after.port} at {fmt(after.arrive_s)} s while the EV "
                    f"that arrived at {fmt(before.arrive_s)} s is still plugged in ({until})"
                )
    return tuple(ev for ev, _ in evs)
