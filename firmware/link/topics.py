"""The MQTT topic tree of a site (docs/mqtt.md): one place that spells every topic.

``ampshare/v1/<site>/station/<station>/telemetry``  station -> coordinator, JSON Telemetry
``ampshare/v1/<site>/station/<station>/status``     retained; last will ``offline``
``ampshare/v1/<site>/station/<station>/limits``     coordinator -> station, JSON Limits (never
                                                    retained: a limit is only good while fresh)
``ampshare/v1/<site>/coordinator/status``           retained; last will ``offline``
``ampshare/v1/<site>/meter/<group>``                unmanaged load of a group for DLM, kW
"""

from __future__ import annotations

ROOT = "ampshare/v1"


def station_telemetry(site: str, station: str) -> str:
    return f"{ROOT}/{site}/station/{station}/telemetry"


def station_status(site: str, station: str) -> str:
    return f"{ROOT}/{site}/station/{station}/status"


def station_limits(site: str, station: str) -> str:
    return f"{ROOT}/{site}/station/{station}/limits"


def coordinator_status(site: str) -> str:
    return f"{ROOT}/{site}/coordinator/status"


def site_meter(site: str, group: str) -> str:
    return f"{ROOT}/{site}/meter/{group}"


def all_telemetry(site: str) -> str:
    """The coordinator's subscription to every station's telemetry."""
    return f"{ROOT}/{site}/station/+/telemetry"


def all_station_status(site: str) -> str:
    return f"{ROOT}/{site}/station/+/status"


def station_of(topic: str) -> str | None:
    """The station id in a ``.../station/<id>/...`` topic, or None."""
    parts = topic.split("/")
    if len(parts) >= 5 and "/".join(parts[:2]) == ROOT and parts[3] == "station":
        return parts[4]
    return None
