"""Remote limits: what a station takes from the outside, and the controller that applies it.

One job: the seam between a station's controller and every source of remote caps (the site
coordinator over MQTT today, `firmware.link.station_link.StationLink`; an OCPP central
system's smart-charging profiles next). A source is a `RemoteLimits`; `RemoteLimitedController`
runs the station's `Controller` under any number of them at once: each tick every port's cap
is the lowest any source puts on it, applied with `LimitTree.with_port_caps`, which only ever
lowers (the station's own breakers stay in its tree whatever a source says: docs/design.md,
"Safety is local"). A port held under its own cap by a source is said to be limited by that
source's ``label`` ("coordinator", "schedule"), never by "port". Pure, like the controller:
no clock, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol

from controller.core import Controller
from controller.fallback import fallback_level
from controller.limits import LimitTree
from controller.model import Decision, PortObservation

__all__ = ["RemoteLimitedController", "RemoteLimits"]


class RemoteLimits(Protocol):
    """A source of remote caps for the ports of one station (their local ids)."""

    @property
    def label(self) -> str:
        """What a port held by this source is limited by (``Decision.binding``): one of
        ``controller.limits.REMOTE_LABELS``."""
        ...

    @property
    def local_ids(self) -> tuple[str, ...]:
        """The station's ports this source caps (every port of the station)."""
        ...

    def set_fallback(self, levels: Mapping[str, float]) -> None:
        """Each port's fallback level (``controller.fallback.fallback_level``): what the
        source lets a port have when it knows nothing (its coordinator lost)."""

    def observe(self, now: float, observations: Mapping[str, PortObservation]) -> None:
        """What the station sees on its ports this tick (sessions, for the source's reports)."""

    def drop(self, now: float) -> None:
        """The station knows the source is gone: forget the limits in force now."""

    def in_force(self, now: float) -> dict[str, float]:
        """Every port's cap now (A), transitions included."""
        ...

    def up(self, now: float) -> bool:
        """Whether the source's own limits are in force (False: it is in its fallback)."""
        ...

    def applied(self, now: float, caps: Mapping[str, float]) -> None:
        """The tick at ``now`` applied ``caps`` (the lowest of every source's)."""

    def next_deadline(self, now: float | None) -> float | None:
        """The next time its answers change by themselves."""
        ...


class RemoteLimitedController:
    """A station's controller under remote limits: a `firmware.station.Allocator`.

    Each tick every source's caps are applied to the controller's tree (the lowest wins) and
    the controller runs in sharing mode while every source is up, in fallback mode
    (``link_up=False``: round robin starts afresh when it returns) otherwise. ``link_up=False``
    from the station loop (its link is known down) drops every source's limits at once; each
    source's own transition rule still applies.
    """

    def __init__(self, controller: Controller, *sources: RemoteLimits) -> None:
        if not sources:
            raise ValueError("a remote-limited controller needs at least one source")
        ports = set(controller.tree.ports)
        for source in sources:
            if ports != set(source.local_ids):
                raise ValueError(
                    f"a source's ports {sorted(source.local_ids)} are not the tree's "
                    f"{sorted(ports)}"
                )
        self.controller = controller
        self.sources: Sequence[RemoteLimits] = sources
        self._base = controller.tree
        self._applied: dict[str, float] | None = None
        self._now: float | None = None
        self._set_fallback()

    def _set_fallback(self) -> None:
        levels = {pid: fallback_level(p) for pid, p in self._base.ports.items()}
        for source in self.sources:
            source.set_fallback(levels)

    @property
    def tree(self) -> LimitTree:
        """The station's own tree (its breakers), without remote caps."""
        return self._base

    def set_tree(self, tree: LimitTree) -> None:
        """New local limit values (same ports); remote caps are re-applied on the next tick."""
        if set(tree.ports) != set(self._base.ports):
            raise ValueError("set_tree: the new tree must have the same ports")
        self._base = tree
        self._applied = None
        self._set_fallback()

    def update(
        self, now: float, observations: Mapping[str, PortObservation], *, link_up: bool = True
    ) -> Decision:
        caps: dict[str, float] = {}
        holder: dict[str, str] = {}
        up = True
        for source in self.sources:
            if not link_up:
                source.drop(now)
            source.observe(now, observations)
            up = source.up(now) and up
            for pid, cap in source.in_force(now).items():
                if pid not in caps or cap < caps[pid]:
                    caps[pid], holder[pid] = cap, source.label
        if caps != self._applied:
            self.controller.set_tree(self._base.with_port_caps(caps))
            self._applied = caps
        for source in self.sources:
            source.applied(now, caps)
        self._now = now
        decision = self.controller.update(now, observations, link_up=up)
        return self._said_why(decision, caps, holder) if up else decision

    def _said_why(
        self, decision: Decision, caps: Mapping[str, float], holder: Mapping[str, str]
    ) -> Decision:
        """``decision`` with the ports a source holds under their own cap limited by it: the
        allocation sees a remote cap as the port's cap ("port"), or, under the minimum, as no
        current at all ("paused")."""
        ports = self._base.ports
        said: dict[str, str] = {}
        for pid, why in decision.binding.items():
            cap = caps.get(pid)
            if cap is None or cap >= ports[pid].cap_a:
                continue
            if why == "port" or (why == "paused" and cap < ports[pid].min_a):
                said[pid] = holder[pid]
        if not said:
            return decision
        return dataclasses.replace(decision, binding={**decision.binding, **said})

    def next_deadline(self) -> float | None:
        times = [self.controller.next_deadline()]
        times += [source.next_deadline(self._now) for source in self.sources]
        due = [t for t in times if t is not None]
        return min(due) if due else None
