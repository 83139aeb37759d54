"""Assemble a station from its validated configuration: hardware, meters, controller, loop."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from controller.core import Controller
from controller.limits import LimitTree
from firmware.config import StationConfig
from firmware.station import Allocator, Station
from hal import registry
from hal.clock import StationClock
from hal.interfaces import BackendContext, Hardware, Meter, Service


def backend_context(config: StationConfig, clock: StationClock | None = None) -> BackendContext:
    """What the config's hardware backend opens with: this station's ports and what the config
    says of them, and the backend's own section (``sim:``) handed back as it was read."""
    return BackendContext(
        port_ids=config.port_ids,
        voltage_v=tuple(p.voltage_v for p in config.site.ports),
        jumper=config.jumper,
        # A board backend checks that it cannot lose sight of a contactor for longer than
        # the port machine takes to call a disagreement a weld.
        weld_detect_s=config.port_config.weld_detect_s,
        section=config.hardware_section,
        clock=clock,
    )


def open_station_hardware(config: StationConfig, clock: StationClock | None = None) -> Hardware:
    """Open the backend named by the config's ``hardware:`` URL for this station's ports."""
    return registry.open_hardware(config.hardware_url, backend_context(config, clock))


def build_station(
    config: StationConfig, hardware: Hardware | None = None, clock: StationClock | None = None
) -> Station:
    """A ready station: the given hardware, or the one the config names. ``clock`` is the
    real-time runner's (meters with polling tasks stamp their readings with it)."""
    clock = clock if clock is not None else StationClock()
    hw = hardware if hardware is not None else open_station_hardware(config, clock)
    meters: list[Meter] = []
    for url, port_hw in zip(config.meter_urls, hw.ports, strict=True):
        meters.append(
            port_hw.meter
            if url == registry.BUILTIN_METER
            else registry.open_meter(url, clock=clock)
        )
    controller = Controller(LimitTree.from_spec(config.site), config.control)
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
    # Who may charge, and the tag reader it hears (hal.rfid; opened only when configured).
    from firmware.auth import Authorizer

    reader = (
        None
        if config.auth.reader is None
        else registry.open_tag_reader(config.auth.reader, clock=clock)
    )
    station = Station(
        config.site,
        hw,
        allocator,
        jumper=config.jumper,
        port_config=config.port_config,
        meters=meters,
        authorizer=Authorizer(config.auth.settings, config.port_ids),
        tag_reader=reader,
    )
    station.clock = clock
    # The backend's own background work (the sim bus's meter server) first among the
    # services, so that it listens before the station's meters poll it.
    backend_services: Sequence[Service] = getattr(hw, "services", ())
    station.services[:0] = backend_services
    if reader is not None and isinstance(reader, Service):  # a real reader reads in the background
        station.services.append(reader)
    if config.link is not None and link is not None:
        from firmware.link.mqtt import BrokerSettings, StationMqttLink

        settings = BrokerSettings.from_link(config.link)
        station.services.append(StationMqttLink(settings, link, lambda: station.last, clock))
    return station
