"""`ampshare allocate SITE.yaml STATE.yaml`: one allocation of a site in a given state, as JSON.

One job: read a site file and a state file (docs/design.md, "Command line"), ask the allocation
core (`controller.limits`, `controller.allocate`) once, and print its answer on stdout:

    {"ports": {"<port id>": amps, ...},                     every port of the site (idle: 0)
     "groups": {"<limit id>": {"limit": x, "load": y}},     every limit of the tree
     "binding": {"<port id>": "<limit id>" | "port" | "demand" | "paused"},  charging ports
     "paused": ["<port id>", ...]}                          charging ports given 0 (round robin)

The state's ``time:`` applies the site's time-of-use schedules at that moment (without it, no
schedule applies: the configured limits). ``site_load_kw:`` is the unmanaged load a site meter
reads: it feeds every group with a ``meter:`` (the group's maximum minus it); with no ``meter:``
in the site it lowers the root group's kW limit, as before schedules and meters existed. A site
with a ``meter:`` and no ``site_load_kw`` in the state has no reading: its conservative limit
applies. All of it through `controller.dynamic.dynamic_limits`, the coordinator's function.

Errors are one line on stderr (``FILE:LINE: FIELD: message`` for config errors), exit 2.
"""

from __future__ import annotations

import json
import sys

from controller.allocate import Allocation, PortRequest, allocate
from controller.dynamic import dynamic_limits
from controller.limits import LimitTree, TreeError
from controller.model import SiteSpec
from controller.site import SiteConfig
from firmware.config import ConfigError, State, load_site_config, load_state

EXIT_OK = 0
EXIT_INVALID = 2


def allocate_command(site_path: str, state_path: str) -> int:
    """Print one allocation of the site at ``site_path`` in the state at ``state_path``."""
    try:
        config = load_site_config(site_path)
        site = config.spec
        state = load_state(state_path, site, site_meter=bool(config.meters))
        tree = LimitTree.from_spec(site)
        tree = _with_dynamic_limits(tree, config, state)
        result = allocate(tree, requests(site, state), site.policy)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    except (
        TreeError,
        ValueError,
    ) as exc:  # the core's own refusals: the loader's should come first
        print(f"{site_path}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(json.dumps(to_json(site, result), indent=2))
    return EXIT_OK


def requests(site: SiteSpec, state: State) -> dict[str, PortRequest]:
    """What each charging port asks for: its demand (default: its cap), floor and session order.

    A port without ``since`` takes its position in the state file (1, 2, ...) as its session
    order, so FCFS follows the order the file lists the ports in.
    """
    caps = {port.id: port for port in site.ports}
    out: dict[str, PortRequest] = {}
    for position, (port_id, demand) in enumerate(state.ports.items(), start=1):
        port = caps[port_id]
        since = float(position) if demand.since is None else demand.since
        want = port.cap_a if demand.demand_a is None else demand.demand_a
        out[port_id] = PortRequest(want_a=want, min_a=port.min_a, priority=since, since=since)
    return out


def _with_dynamic_limits(tree: LimitTree, config: SiteConfig, state: State) -> LimitTree:
    """Time of use and dynamic load management (module docstring; the guide, "How to set the
    Limits?" 2 and 3). with_limits only lowers."""
    readings = dict.fromkeys(config.meters, state.site_load_kw)
    limits = dynamic_limits(config, state.time, readings)
    if not config.meters and state.site_load_kw is not None:
        # No meter: group: the root's kW limit is the site maximum (`load_state` checked it).
        root = next(group for group in config.spec.groups if group.parent is None)
        assert root.limit_kw is not None
        key = f"{root.id}:kW"
        value = max(0.0, root.limit_kw - state.site_load_kw)
        limits[key] = min(limits.get(key, value), value)
    return tree.with_limits(limits)


def _num(value: float) -> float | int:
    rounded = round(value, 3)
    return int(rounded) if rounded == int(rounded) else rounded


def to_json(site: SiteSpec, result: Allocation) -> dict[str, object]:
    """The docs/design.md allocation shape; numbers rounded to 1 mA so output is stable."""
    return {
        "ports": {port.id: _num(result.amps.get(port.id, 0.0)) for port in site.ports},
        "groups": {
            lid: {"limit": _num(limit), "load": _num(result.loads.get(lid, 0.0))}
            for lid, limit in result.limits.items()
        },
        "binding": dict(result.binding),
        "paused": sorted(result.paused),
    }
