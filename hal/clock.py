"""The station clock of real-time runs: monotonic seconds since the station started.

The port machines and the controller never read a clock; the runner hands them ``now``. But
objects with background work (a polling meter, a serial link) stamp what they receive, and a
stamp is only comparable with ``now`` if both come from the same clock, so the runner and
every such object share one ``StationClock``. In virtual time there is no clock object: the
simulated backends are told the time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# What an object with background work is given to stamp its readings with.
Clock = Callable[[], float]


class StationClock:
    """``time.monotonic`` (the asyncio loop's clock) since ``start()``, optionally sped up.

    A clock that was never started reads from its creation. Speed-up is for simulated
    hardware only: station seconds then run ``speed`` times faster than wall seconds.
    """

    def __init__(self, speed: float = 1.0) -> None:
        if not speed > 0.0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._t0 = time.monotonic()

    def start(self) -> None:
        """Make now 0."""
        self._t0 = time.monotonic()

    def __call__(self) -> float:
        return (time.monotonic() - self._t0) * self.speed

    def monotonic_at(self, station_t: float) -> float:
        """The ``time.monotonic()`` value at station time ``station_t`` (to sleep until it)."""
        return self._t0 + station_t / self.speed
