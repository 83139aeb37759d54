"""Assemble a station from its validated configuration: hardware, meters, controller, loop."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from controller.core import Controller, ControlSettings
from controller.limits import LimitTree
from firmware.config import StationConfig
from firmware.station import Allocator, Station
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
        # A board backend checks that it cannot lose sight of a contactor for longer than
        # the port machine takes to call a disagreement a weld.
        weld_detect_s=config.port_config.weld_detect_s,
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
    allocator: Allocator = controller
    link = None
    if config.link is not None:
        # Site sharing (docs/mqtt.md): the coordinator's caps only lower this station's own
        # tree. On the wire its ports are the site file's "<station>.<port>".
        from firmware.link.remote import RemoteLimitedController
        from firmware.link.station_link import StationLink

        wire = {f"{config.id}.{pid}": pid for pid in config.port_ids}
        link = StationLink(
            config.link.site,
            config.id,
            list(wire),
            local_ids=wire,
            telemetry_period_s=config.link.telemetry_period_s,
            keyring=config.link.keyring,
        )
        if config.link.keyring is None:
            logging.getLogger("ampshare.link").warning(
                "INSECURE: station %s has no site key (link: insecure: true): it applies "
                "unsigned limits, which anyone who can publish on the broker can forge "
                "(docs/mqtt.md, Threat model)",
                config.id,
            )
        allocator = RemoteLimitedController(controller, link)
    station = Station(
        config.site,
        hw,
        allocator,
        jumper=config.jumper,
        port_config=config.port_config,
        meters=meters,
    )
    station.clock = clock
    spec = config.sim_meter_server
    if spec is not None:
        # The simulated ports' meters served over Modbus TCP (``sim: meter_server:``), first
        # among the services so it listens before the station's Modbus meters poll it.
        from hal.modbus.simfeed import SimMeterFeed

        builtin = [port_hw.meter for port_hw in hw.ports]
        feed = SimMeterFeed(builtin, spec.model, host=spec.host, port=spec.port)
        station.services.insert(0, feed)
    if config.link is not None and link is not None:
        from firmware.link.mqtt import BrokerSettings, StationMqttLink

        settings = BrokerSettings.from_link(config.link)
        station.services.append(StationMqttLink(settings, link, lambda: station.last, clock))
    return station
