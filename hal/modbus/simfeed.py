"""The simulator's port meters served as real Modbus meters, so a station reads them over TCP.

One job: a ``Service`` that serves one unit per simulated port (unit = port index + 1) with a
meter model's register map, and copies what each simulated meter reads into its registers ten
times a second. A station whose ports' ``meter:`` URLs point at it then runs the sim pilot bus
with real Modbus meters over loopback: the whole backend (pymodbus client, batching, decoding,
staleness) is in the loop the simulated cars' current reaches the allocation through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from hal.interfaces import Meter
from hal.modbus.server import MeterServer

__all__ = ["SimMeterFeed"]

log = logging.getLogger(__name__)

# Ten copies a second: well under the backend's default poll interval (0.5 s), so what the
# station reads over Modbus is at most ~0.1 s older than the simulated meter.
FEED_PERIOD_S = 0.1


class SimMeterFeed:
    """Serve ``meters`` (the simulated ports' meters, in port order) as Modbus units 1..N."""

    def __init__(
        self,
        meters: Sequence[Meter],
        model: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        period_s: float = FEED_PERIOD_S,
    ) -> None:
        self.meters = tuple(meters)
        self.server = MeterServer(model, range(1, len(self.meters) + 1), host=host, port=port)
        self.period_s = period_s
        self._task: asyncio.Task[None] | None = None
        self._warned = False

    def copy(self) -> None:
        """Copy every simulated meter's latest reading into its unit's registers."""
        for unit, meter in enumerate(self.meters, start=1):
            reading = meter.latest()
            if reading is not None:
                self.server.set_reading(unit, reading)

    async def start(self) -> None:
        self.copy()
        await self.server.start()
        log.info(
            "serving %d simulated %s meters on %s (units 1..%d)",
            len(self.meters),
            self.server.map.model,
            self.server.url_base,
            len(self.meters),
        )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sim meter feed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.server.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            try:
                self.copy()
            except ValueError as exc:  # a simulated value the map cannot hold: keep serving
                if not self._warned:
                    log.warning("sim meter feed: %s (logged once)", exc)
                self._warned = True
