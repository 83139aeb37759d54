"""Baseline controllers for the benchmarks only (not part of the product).

Both implement the station loop's ``Allocator`` interface, so they run through the very same
loop, simulated bus and summary as ampshare's controller:

- ``StaticSplit``: how the 2013 CT4000 behaved: the limit is split equally among the
  vehicles plugged in, whatever they draw; no redistribution, applied at once.
- ``NaiveReallocator``: redistributes by metered draw like ampshare, but applies every new
  offer at once, with no decrease-first sequencing and no 5 s window. It re-allocates every
  5 s (and at once when a vehicle plugs in or out), as a simple periodic controller does: run
  on every tick it chases its own meters' noise, and each offer change it makes is a change
  the simulated vehicles follow 5 s later, so a simulated day never ends.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.allocate import PortRequest, allocate
from controller.limits import LimitTree
from controller.model import Decision, PortObservation

# How far under its offer a car must draw before the naive baseline lowers it, and the margin
# it leaves above the draw (the same order as ampshare's demand learning, for a fair contrast).
_UNDER_A = 2.0
_MARGIN_A = 1.0
# The naive baseline's control period: ampshare's own offer window, for a fair contrast.
_PERIOD_S = 5.0


class StaticSplit:
    """Equal split among plugged-in vehicles, blind to what they draw."""

    def __init__(self, tree: LimitTree) -> None:
        self.tree = tree

    def update(
        self, now: float, observations: Mapping[str, PortObservation], *, link_up: bool = True
    ) -> Decision:
        requests = {
            pid: PortRequest(want_a=self.tree.ports[pid].cap_a, min_a=self.tree.ports[pid].min_a)
            for pid, obs in observations.items()
            if obs.connected
        }
        return _decision(self.tree, allocate(self.tree, requests).amps)

    def next_deadline(self) -> float | None:
        return None


class NaiveReallocator:
    """Demand-aware re-allocation applied at once (no sequencing)."""

    def __init__(self, tree: LimitTree) -> None:
        self.tree = tree
        self.offers: dict[str, float] = {}
        self._next: float | None = None
        self._connected: frozenset[str] = frozenset()
        self._held: Decision | None = None

    def update(
        self, now: float, observations: Mapping[str, PortObservation], *, link_up: bool = True
    ) -> Decision:
        connected = frozenset(pid for pid, obs in observations.items() if obs.connected)
        if (
            self._held is not None
            and connected == self._connected
            and self._next is not None
            and now < self._next
        ):
            return self._held
        self._connected = connected
        self._next = now + _PERIOD_S
        requests = {}
        for pid, obs in observations.items():
            if not obs.connected:
                continue
            cap = self.tree.ports[pid].cap_a
            offer = self.offers.get(pid, 0.0)
            want = cap
            if obs.metered_a is not None and offer > 0 and obs.metered_a < offer - _UNDER_A:
                want = max(self.tree.ports[pid].min_a, obs.metered_a + _MARGIN_A)
            requests[pid] = PortRequest(want_a=want, min_a=self.tree.ports[pid].min_a)
        amps = allocate(self.tree, requests).amps
        self.offers = dict(amps)
        self._held = _decision(self.tree, amps)
        return self._held

    def next_deadline(self) -> float | None:
        return self._next


def _decision(tree: LimitTree, amps: Mapping[str, float]) -> Decision:
    offers = {pid: amps.get(pid, 0.0) for pid in tree.ports}
    return Decision(
        offers=offers,
        effective=offers,
        binding=dict.fromkeys(offers, "baseline"),
        loads=tree.loads(offers),
        limits=tree.limits(),
    )
