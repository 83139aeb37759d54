"""One station's share of a simulated bus: some of a `SimBus`'s ports as that station's hardware.

One job: a coordinated site is simulated on one shared bus (one physics, one clock, the
vehicles of every station on it), while each station runs its own loop on its own ports only.
`BusView` is the `hal.interfaces.Hardware` such a station is given: the named ports of the bus,
a jumper sense input of its own (a station of a coordinated site has no jumper), and the bus's
time. Advancing it advances the whole bus, as every station shares the one clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from hal.interfaces import PortHardware, leave_safe
from hal.sim.bus import SimBus, SimJumper

__all__ = ["BusView"]


class BusView:
    """The ports ``port_ids`` of ``bus``, as one station's `Hardware`."""

    def __init__(self, bus: SimBus, port_ids: Sequence[str]) -> None:
        self._bus = bus
        self._ports = tuple(PortHardware(p, p, p, p) for p in map(bus.port, port_ids))
        self._jumper = SimJumper(False)

    @property
    def ports(self) -> Sequence[PortHardware]:
        return self._ports

    @property
    def jumper(self) -> SimJumper:
        return self._jumper

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        # Only this station's ports are made safe: the other stations stop their own.
        leave_safe(self._ports)
        self._bus.advance(self._bus.now)

    def advance(self, now: float) -> None:
        self._bus.advance(now)

    def next_change(self, now: float) -> float | None:
        return self._bus.next_change(now)
