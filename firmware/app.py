"""Assemble a station from its validated configuration: hardware, meters, controller, loop."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from controller.core import Controller, ControlSettings
from controller.limits import LimitTree
from firmware.config import StationConfig
from firmware.station import Station
from hal import registry
from hal.clock import StationClock
from hal.interfaces import Hardware, Meter

# A per-port meter URL that means "the meter the hardware backend itself provides".
BUILTIN_METER = "sim://"


def control_settings(values: Mapping[str, float]) -> ControlSettings:
    """The controller's settings: defaults, overridden by a config's ``control:`` block (its
    keys and types were checked against ControlSettings when the file was loaded)."""
    overrides: dict[str, Any] = dict(values)
    return dataclasses.replace(ControlSettings(), **overrides)


def open_station_hardware(config: StationConfig) -> Hardware:
    """Open the backend named by the config's ``hardware:`` URL for this station's ports."""
    return registry.open_hardware(
        config.hardware_url,
        port_ids=[p.id for p in config.site.ports],
        evs=config.sim_evs,
        voltage_v=[p.voltage_v for p in config.site.ports],
        jumper=config.jumper,
    )


def build_station(
    config: StationConfig, hardware: Hardware | None = None, clock: StationClock | None = None
) -> Station:
    """A ready station: the given hardware, or the one the config names. ``clock`` is the
    real-time runner's (meters with polling tasks stamp their readings with it)."""
    hw = hardware if hardware is not None else open_station_hardware(config)
    clock = clock if clock is not None else StationClock()
    meters: list[Meter] = []
    for url, port_hw in zip(config.meter_urls, hw.ports, strict=True):
        meters.append(
            port_hw.meter if url == BUILTIN_METER else registry.open_meter(url, clock=clock)
        )
    controller = Controller(LimitTree.from_spec(config.site), control_settings(config.control))
    return Station(
        config.site,
        hw,
        controller,
        jumper=config.jumper,
        port_config=config.port_config,
        meters=meters,
    )
