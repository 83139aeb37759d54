"""Sequencing: turn the offers the controller wants into offers that are safe to send now.

This module's one job is the safe-offer invariant (docs/design.md "The safe-offer invariant"): an
EV may take up to 5 s to follow a lower PWM offer, so a port's *effective offer* is the highest
offer it was given in the last 5 s, until its meter shows it has come down; for every limit of
the tree the load of the effective offers stays within the limit, on every tick, including the
tick an offer changes.

How (`Sequencer.step`):

1. Superseded offers older than the window are forgotten; a meter reading at or under the
   port's offer (plus a small tolerance) shows the vehicle has come down, so the superseded
   offers above it stop counting. A stale meter (None) never shows that.
2. Decreases go out at once: a lower offer can only lower a load. The offer it replaces keeps
   counting (step 1) until the vehicle has followed.
3. Increases get what fits now: each port rises to its target, or as far as the headroom
   left by everybody's effective offer allows (`LimitTree.room`). A port at 0 (paused, new)
   starts only with at least its minimum, or not at all. Whatever is held back is retried on
   the next tick, when decreases have been confirmed by meters or aged out of the window.

The targets themselves come from an allocation that fits the limits, so once the decreases
they depend on have taken effect (at most one window later) every target is reached.

Assumption behind meter confirmation (the spec's rule): a vehicle that changes its draw for
its own reasons does so against the pilot it sees now; so a vehicle the meter shows at or under
the new offer can only rise again up to the new offer. A vehicle that has not yet looked at the
new pilot and happens to ramp up within those 5 s is what the window alone would have covered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.limits import LimitTree
from hal.pilot import EV_RESPONSE_S

__all__ = ["SequenceResult", "Sequencer", "floor_dA"]

# Offers are on the pilot's 0.1 A grid (allocate floors to 0.1 A). This absorbs the float
# error of values like 16.1 * 10 = 160.99999999999997; it may lift a value by at most 1e-10 A,
# well inside the limits' LOAD_TOLERANCE (1e-9), so flooring never overloads.
_GRID_EPS = 1e-9


def floor_dA(amps: float) -> float:
    """``amps`` floored to the 0.1 A grid (never rounded up: rounding up could overload)."""
    if amps <= 0.0:
        return 0.0
    if math.isinf(amps):
        return amps
    return math.floor(amps * 10.0 + _GRID_EPS) / 10.0


@dataclass(slots=True)
class _PortSeq:
    offer: float = 0.0
    # Offers this port has been given and that were since lowered:
    # (counts until, amps, when it was lowered).
    superseded: list[tuple[float, float, float]] = field(default_factory=list)

    def effective(self) -> float:
        return max([self.offer, *(a for _, a, _ in self.superseded)])

    def expire(self, now: float) -> None:
        self.superseded = [e for e in self.superseded if e[0] > now and e[1] > self.offer]

    def confirm(self, metered: float | None, tolerance_a: float, taken_at: float | None) -> None:
        """The meter shows the vehicle at or under its offer: older, higher offers stop counting.

        The meter may read low by up to its tolerance, so what the vehicle may really draw
        (the reading plus the tolerance) still counts: the effective offer never falls below
        what the vehicle could be drawing. A reading of exactly 0 A is no current at all (a
        meter below its starting current reads 0; an open contactor carries nothing). Only a
        reading taken at or after an offer was lowered says anything about following it
        (``taken_at``; None means this tick): a meter that stopped answering on a low reading
        must not confirm a decrease it never saw.
        """
        if metered is None or metered > self.offer + tolerance_a:
            return
        floor = max(self.offer, metered + tolerance_a if metered > 0.0 else 0.0)
        kept = []
        for until, amps, lowered_at in self.superseded:
            if taken_at is None or taken_at >= lowered_at:
                amps = min(amps, floor)
            if amps > self.offer:
                kept.append((until, amps, lowered_at))
        self.superseded = kept


@dataclass(frozen=True, slots=True)
class SequenceResult:
    """One tick of sequencing: what to send, what counts, and who waits."""

    offers: dict[str, float]
    effective: dict[str, float]
    held: frozenset[str]  # ports whose increase waits for headroom (offer < target)


class Sequencer:
    """The offer history of every port, and the rule that releases changes safely."""

    def __init__(self, window_s: float = EV_RESPONSE_S, tolerance_a: float = 0.0) -> None:
        if window_s < 0.0 or tolerance_a < 0.0:
            raise ValueError("window_s and tolerance_a must be >= 0")
        self.window_s = window_s
        self.tolerance_a = tolerance_a
        self._ports: dict[str, _PortSeq] = {}

    def offer(self, port_id: str) -> float:
        """The offer last sent on a port (0.0 if none)."""
        p = self._ports.get(port_id)
        return 0.0 if p is None else p.offer

    def effective(self, port_id: str, now: float) -> float:
        """A port's effective offer at ``now`` (ignoring meter readings not yet seen)."""
        p = self._ports.get(port_id)
        if p is None:
            return 0.0
        return max([p.offer, *(a for t, a, _ in p.superseded if t > now)])

    def deadline(self, after: float) -> float | None:
        """When the next superseded offer stops counting (after ``after``), if any."""
        times = [t for p in self._ports.values() for t, _, _ in p.superseded if t > after]
        return min(times) if times else None

    def step(
        self,
        now: float,
        tree: LimitTree,
        targets: Mapping[str, float],
        metered: Mapping[str, float | None],
        mins: Mapping[str, float],
        metered_at: Mapping[str, float | None] | None = None,
    ) -> SequenceResult:
        """Send what is safe now towards ``targets`` (each 0 or >= the port's minimum).

        ``tree`` gives the limits increases must fit under (the newest ones); ``metered`` the
        ports' meter readings this tick and ``metered_at`` when each was taken (missing: this
        tick); ``mins`` each port's minimum offer. Ports of the tree missing from ``targets``
        are driven to 0.
        """
        taken = metered_at or {}
        ports = self._ports
        for pid in tree.ports:
            ports.setdefault(pid, _PortSeq())
        target = {pid: max(0.0, float(targets.get(pid, 0.0))) for pid in ports}

        # 1. Age out and confirm with this tick's meters.
        for pid, p in ports.items():
            p.expire(now)
            p.confirm(metered.get(pid), self.tolerance_a, taken.get(pid))

        # 2. Decreases at once; the replaced offer keeps counting until followed or aged out.
        for pid, p in ports.items():
            if target[pid] < p.offer:
                p.superseded.append((now + self.window_s, p.offer, now))
                p.offer = target[pid]
                p.confirm(metered.get(pid), self.tolerance_a, taken.get(pid))
                p.expire(now)

        effective = {pid: p.effective() for pid, p in ports.items()}

        # 3. Increases within the headroom left now. Lowest offers first, so a paused or new
        # port is not starved by a running one taking a partial step. A port that rose may
        # now be confirmed by this tick's reading (it draws no more than its new offer),
        # which frees headroom for the ones still held: repeat until nothing moves, so the
        # result does not depend on whether another tick comes with the same readings.
        rising = sorted(
            (pid for pid in ports if target[pid] > ports[pid].offer),
            key=lambda q: (ports[q].offer, q),
        )
        while rising:
            raised = [pid for pid in rising if self._raise(pid, tree, target, mins, effective)]
            freed = False
            for pid in raised:
                p = ports[pid]
                p.confirm(metered.get(pid), self.tolerance_a, taken.get(pid))
                if p.effective() < effective[pid]:
                    effective[pid] = p.effective()
                    freed = True
            rising = [pid for pid in rising if ports[pid].offer < target[pid]] if freed else []
        held = {pid for pid in ports if ports[pid].offer < target[pid]}

        return SequenceResult(
            offers={pid: p.offer for pid, p in ports.items()},
            effective=effective,
            held=frozenset(held),
        )

    def _raise(
        self,
        pid: str,
        tree: LimitTree,
        target: Mapping[str, float],
        mins: Mapping[str, float],
        effective: dict[str, float],
    ) -> bool:
        """Raise one port's offer towards its target as far as the headroom allows now."""
        p = self._ports[pid]
        own = effective[pid]  # what already counts for this port (>= its offer)
        if pid in tree.ports:
            others = {q: a for q, a in effective.items() if q != pid and q in tree.ports}
            room = tree.room(others, pid)
        else:
            room = math.inf  # unknown to the tree: no limit above it (not normally used)
        # Only within the room under the limits now in force, even below what already counts
        # for this port: once its older, higher offers age out, the new one must still fit
        # (after a lowered limit, `own` may be above what the new limit leaves).
        new = min(target[pid], floor_dA(room))
        if new <= p.offer:
            return False
        if p.offer == 0.0 and new < mins.get(pid, 0.0):
            return False  # J1772: offers are 0 or >= the minimum; wait for more headroom
        p.offer = new
        effective[pid] = max(own, new)
        return True
