"""Offline fallback: what each port is offered when the coordinator link is down.

This module's one job is to run the fallback level (the guide, "Handling Offline Stations":
stations "automatically revert to their fallback power level. This level is hard programmed
such that even if all stations were in their fall-back power level, the power level would be
below the NEC ratings of the upstream electrical equipment"):

* `fallback_requests` turns the connected ports into allocation requests for their fallback
  level, so that even then every local limit in force is kept (a limit may have been lowered
  since the config was checked) and the offers go through sequencing like any other;
* `fallback_level` and `fallback_violations` are the names other modules know for
  `PortSpec.fallback_level_a` and `controller.validate.fallback_overloads`, where the level
  and the check live (the validator refuses a site whose ports at fallback could overload it).

A port's fallback level is ``min(fallback_a, cap_a)`` (Power Select applies), 0 when
``fallback_a`` is None. A level under the port's minimum is not offered (J1772: 0 or at least
the minimum; the validator refuses fallbacks between 0 and 6 A).
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.allocate import PortRequest
from controller.limits import LimitTree
from controller.model import J1772_MIN_A, PortSpec
from controller.validate import fallback_overloads

__all__ = ["fallback_level", "fallback_requests", "fallback_violations"]


def fallback_level(port: PortSpec) -> float:
    """The current a port is offered offline: its fallback_a under its cap, or 0."""
    return port.fallback_level_a


def fallback_violations(tree: LimitTree) -> list[str]:
    """Every limit id whose load, with every port beneath at its fallback level, exceeds it.

    Uses the limit values and port caps the tree has now (a tree from `LimitTree.with_limits`
    is checked against its lowered values). Sorted by limit id, so a message built from it is
    stable. The check itself is `controller.validate.fallback_overloads`.
    """
    return sorted(fallback_overloads(tree))


def fallback_requests(tree: LimitTree, since: Mapping[str, float]) -> dict[str, PortRequest]:
    """Allocation requests for the connected ports (``since``: session start per port).

    Each asks for its fallback level with its minimum as floor; ports whose level is under
    their minimum ask for nothing and are left out.
    """
    out: dict[str, PortRequest] = {}
    for pid in sorted(since):
        port = tree.ports.get(pid)
        if port is None:
            continue
        floor = max(port.min_a, J1772_MIN_A)
        level = fallback_level(port)
        if level < floor:
            continue
        out[pid] = PortRequest(want_a=level, min_a=floor, priority=0.0, since=since[pid])
    return out
