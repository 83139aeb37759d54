"""The simulator's port meters served as real Modbus meters, so a station reads them over TCP.

One job: a ``Service`` that serves one unit per simulated port (unit = port index + 1) with a
meter model's register map, and copies what each simulated meter reads into its registers ten
times a second. A station whose ports' ``meter:`` URLs point at it then runs the sim pilot bus
with real Modbus meters over loopback: the whole backend (pymodbus client, batching, decoding,
staleness) is in the loop the simulated cars' current reaches the allocation through.

A unit whose copy fails (any error, or no reading) answers every read with exception 4
(server device failure) until a copy succeeds again: the station's meter then publishes
nothing and goes stale, which is safe, instead of reading frozen values as fresh. The feed
never stops on an error; each failure episode is logged once when it starts and once when it
ends (docs/meters.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from hal.interfaces import Meter
from hal.modbus.server import MeterServer
from hal.tasks import cancel_and_wait

__all__ = ["SimMeterFeed"]

log = logging.getLogger(__name__)

# Ten copies a second: well under the backend's default poll interval (0.5 s), so what the
# station reads over Modbus is at most ~0.1 s older than the simulated meter.
FEED_PERIOD_S = 0.1
# MODBUS Application Protocol Specification V1.1b3, 7: exception 04 "server device failure",
# "an unrecoverable error occurred while the server was attempting to perform the requested
# action": what a meter whose measurement failed answers.
DEVICE_FAILURE = 4


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
        self.failing: dict[int, str] = {}  # unit -> why its last copy failed (it answers 4)
        self.failures = 0  # failed copies, in all

    def copy(self) -> None:
        """Copy every simulated meter's latest reading into its unit's registers; a unit whose
        copy fails answers exception 4 until one succeeds (never raises)."""
        for unit, meter in enumerate(self.meters, start=1):
            try:
                reading = meter.latest()
                if reading is None:
                    raise LookupError("the simulated meter has no reading")
                self.server.set_reading(unit, reading)
            except Exception as exc:  # any error: this unit stops answering, the rest go on
                self._failed(unit, f"{type(exc).__name__}: {exc}")
            else:
                self._recovered(unit)

    def _failed(self, unit: int, why: str) -> None:
        self.failures += 1
        self.server.exception[unit] = DEVICE_FAILURE
        if unit not in self.failing:
            log.warning(
                "sim meter feed: unit %d cannot be updated (%s); it answers exception %d "
                "(server device failure) until it can (logged once)",
                unit,
                why,
                DEVICE_FAILURE,
            )
        self.failing[unit] = why

    def _recovered(self, unit: int) -> None:
        if self.failing.pop(unit, None) is not None:
            self.server.exception.pop(unit, None)
            log.info("sim meter feed: unit %d updated again", unit)

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
        await cancel_and_wait(task)
        await self.server.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            self.copy()  # never raises: a failing unit stops answering, the feed goes on
