"""The simulator's independent checker: each port's effective offer, and every limit checked twice.

One job: on every tick of a simulated run, from what the simulated hardware did (the offers
on the pilots, what the port meters read), say which limits were breached, by the sum of the
ports' effective offers (the safe-offer invariant) and by the load the vehicles really drew.

The effective offer here is DELIBERATELY a second implementation of the safe-offer invariant
(docs/design.md, "The safe-offer invariant"), written apart from `controller.sequence` and
sharing no code or state with it: if the controller's sequencing had a bug, checking the run
with the controller's own account would let that bug hide itself. The rule, from the spec:

    a port's effective offer is the highest offer it had in the last 5 s, until a meter
    reading taken at or after the decrease reads at most the new offer + 0.5 A (a class 1
    meter's accuracy); reading + 0.5 A then counts until the 5 s have passed; a reading of
    0 A confirms fully.

A tick's reading is taken by the station loop at the tick's instant, the same instant as an
offer the loop writes on that tick: it is a reading taken at the decrease.

API::

    offers = EffectiveOffers(port_ids)
    offers.update(t, port, offer_a, metered_a) -> effective offer (A)
    find_breaches(t, limit_ids, limits, loads, effective_loads) -> list[Breach]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hal.pilot import EV_RESPONSE_S

__all__ = [
    "CAME_DOWN_TOLERANCE_A",
    "LIMIT_EPSILON",
    "OFFER_WINDOW_S",
    "Breach",
    "EffectiveOffers",
    "find_breaches",
]

# docs/design.md "The safe-offer invariant": an EV may take up to 5 s to follow a lower offer.
OFFER_WINDOW_S = EV_RESPONSE_S
# A meter "shows the EV came down" when it reads no more than the new offer plus its accuracy
# (a class 1 meter, 0.5 A at these currents); the vehicle may then still draw up to the reading
# plus that accuracy, which keeps counting until the 5 s have passed.
CAME_DOWN_TOLERANCE_A = 0.5
# Loads are floats summed over many ports: a breach must exceed the limit by more than this.
LIMIT_EPSILON = 1e-6


@dataclass(frozen=True, slots=True)
class Breach:
    """A tick at which a limit was exceeded: by the effective offers or by the real load."""

    t: float
    limit: str
    kind: str  # "invariant" (effective offers) | "load" (what the vehicles drew)
    load: float
    value: float

    def __str__(self) -> str:
        what = "sum of effective offers" if self.kind == "invariant" else "metered load"
        return f"t={self.t:.3f}s limit {self.limit}: {what} {self.load:.2f} > {self.value:.2f}"


class EffectiveOffers:
    """The checker's own account of each port's effective offer (the module's rule)."""

    def __init__(self, ports: Iterable[str]) -> None:
        self.offer = dict.fromkeys(ports, 0.0)
        self.recent: dict[str, deque[tuple[float, float]]] = {p: deque() for p in self.offer}

    def update(self, t: float, pid: str, offer: float, metered: float | None) -> float:
        """Port ``pid`` offers ``offer`` from ``t`` on, its meter read ``metered`` at ``t``
        (None: no reading); returns its effective offer now."""
        old = self.offer[pid]
        if offer != old:
            self.recent[pid].append((t, old))  # ``old`` stayed on the pilot until t
            self.offer[pid] = offer
        window = self.recent[pid]
        while window and window[0][0] <= t - OFFER_WINDOW_S:
            window.popleft()
        if metered is not None and metered <= offer + CAME_DOWN_TOLERANCE_A:
            # The meter shows the vehicle has come down: older offers count only up to what
            # it may still be drawing.
            ceiling = max(offer, metered + CAME_DOWN_TOLERANCE_A if metered > 0.0 else 0.0)
            clipped = [(t, min(o, ceiling)) for t, o in window if min(o, ceiling) > offer]
            window.clear()
            window.extend(clipped)
        return max([offer, *(o for _, o in window)])


def find_breaches(
    t: float,
    limit_ids: Iterable[str],
    limits: Mapping[str, float],
    loads: Mapping[str, float],
    effective_loads: Mapping[str, float],
) -> list[Breach]:
    """Every limit checked twice at tick ``t``: the load of the effective offers, and the real
    load. A limit without a value in ``limits`` is not in force (no limit)."""
    found: list[Breach] = []
    for lid in limit_ids:
        limit = limits.get(lid, float("inf"))
        if effective_loads[lid] > limit + LIMIT_EPSILON:
            found.append(Breach(t, lid, "invariant", effective_loads[lid], limit))
        if loads[lid] > limit + LIMIT_EPSILON:
            found.append(Breach(t, lid, "load", loads[lid], limit))
    return found
