"""Station, site and state files -> validated, typed objects; every refusal names file:line:field.

What an installer or operator wrote becomes the objects the firmware and the allocation core
run on (``StationConfig``, ``SiteSpec`` / ``SiteConfig``, ``State``), or one ``ConfigError``
whose ``str()`` is ``FILE:LINE: FIELD: message`` and says what is allowed. A config value can
never make a station offer more than its breaker's continuous rating allows (docs/design.md,
"Safety is local"): what would, is refused before anything runs. Shapes: docs/design.md, "File
shapes"; the station file as documented at the top of configs/ct4000-jumper.yaml. "The guide"
is ChargePoint's Power Sharing Reference Guide.

One module per kind of file: ``station`` (station files), ``site`` (site files: schedules,
site meters), ``state`` (state files for ``ampshare allocate``), ``link`` (a station's
``link:`` block, broker URLs), ``common`` (the checks and the groups and ports station and
site files share). A hardware backend's own section of a station file (``sim:``) is read by
that backend (``hal.registry.parse_section``, ``hal.sim.config``), not here. The YAML reader
itself is ``hal.yamlnodes``.
"""

from __future__ import annotations

from controller.site import SiteConfig
from firmware.config.link import LinkConfig, parse_broker_url, redact_url
from firmware.config.site import (
    load_site,
    load_site_config,
    site_config_from_value,
    site_from_value,
)
from firmware.config.state import PortDemand, State, load_state
from firmware.config.station import StationConfig, load_station, parse_control, station_from_value
from hal.durations import parse_duration
from hal.yamlnodes import ConfigError, load_document

__all__ = [
    "ConfigError",
    "LinkConfig",
    "PortDemand",
    "SiteConfig",
    "State",
    "StationConfig",
    "load_document",
    "load_site",
    "load_site_config",
    "load_state",
    "load_station",
    "parse_broker_url",
    "parse_control",
    "parse_duration",
    "redact_url",
    "site_config_from_value",
    "site_from_value",
    "station_from_value",
]
