"""A virtual-time stand-in for the MQTT broker: topics and payload bytes, with latency and loss.

One job: carry the same encoded messages the MQTT shells carry (firmware.link.messages through
firmware.link.topics) between a coordinator and stations living in one process, in virtual
time, so that `ampshare sim` and the tests exercise the real codecs, validation and timing.
Pure: the caller says what time it is.

API::

    bus = InProcessTransport(latency_s=0.2)
    bus.send(now, topic, payload)                 # delivered at now + latency (+ jitter)
    bus.deliver(now) -> list[tuple[str, bytes]]   # everything due by now, in arrival order
    bus.next_delivery() -> float | None
    bus.set_up(False)  /  bus.set_up(False, station="st2")   # cut the link (all, or one)
    bus.sent, bus.dropped                         # counters

Loss: while the link is down (for every station, or for the station a topic names) a message
is dropped when it is sent, and one still in flight is dropped when it would arrive. Delivery
order is arrival order (ties in sending order); with ``jitter_s`` > 0 messages may overtake
each other, as they may on a real network.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random

from firmware.link.topics import station_of

__all__ = ["InProcessTransport"]


class InProcessTransport:
    """Messages in flight between the coordinator and the stations of one simulated site."""

    def __init__(self, latency_s: float = 0.2, *, jitter_s: float = 0.0, seed: int = 0) -> None:
        if not (math.isfinite(latency_s) and latency_s >= 0.0):
            raise ValueError(f"latency_s must be >= 0 and finite, not {latency_s}")
        if not (math.isfinite(jitter_s) and jitter_s >= 0.0):
            raise ValueError(f"jitter_s must be >= 0 and finite, not {jitter_s}")
        self.latency_s = latency_s
        self.jitter_s = jitter_s
        self._rng = random.Random(seed)
        self._queue: list[tuple[float, int, str, bytes]] = []
        self._order = itertools.count()
        self._down_all = False
        self._down: set[str] = set()
        self.sent = 0
        self.delivered = 0
        self.dropped = 0

    def set_up(self, up: bool, station: str | None = None) -> None:
        """Restore (``up``) or cut the link of every station, or of one station."""
        if station is None:
            self._down_all = not up
            if up:
                self._down.clear()
        elif up:
            self._down.discard(station)
        else:
            self._down.add(station)

    def is_up(self, topic: str) -> bool:
        if self._down_all:
            return False
        station = station_of(topic)
        return station is None or station not in self._down

    def send(self, now: float, topic: str, payload: bytes) -> None:
        """Send ``payload`` on ``topic`` at ``now``; lost if the link is down now."""
        self.sent += 1
        if not self.is_up(topic):
            self.dropped += 1
            return
        delay = self.latency_s
        if self.jitter_s > 0.0:
            delay += self._rng.uniform(0.0, self.jitter_s)
        heapq.heappush(self._queue, (now + delay, next(self._order), topic, bytes(payload)))

    def deliver(self, now: float) -> list[tuple[str, bytes]]:
        """Every message due by ``now`` whose link is up at arrival, in arrival order."""
        out: list[tuple[str, bytes]] = []
        while self._queue and self._queue[0][0] <= now:
            _, _, topic, payload = heapq.heappop(self._queue)
            if self.is_up(topic):
                out.append((topic, payload))
                self.delivered += 1
            else:
                self.dropped += 1
        return out

    def next_delivery(self) -> float | None:
        """When the next message in flight arrives, if any."""
        return self._queue[0][0] if self._queue else None
