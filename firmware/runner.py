"""When the station ticks: in real time (a Raspberry Pi, a bench) or in virtual time (CI).

Both runners call the same ``Station.step``; only the choice of ``now`` differs. The virtual
runner never sleeps: it jumps to the next moment anything can change (a hardware event such as
an EV following a PWM change, a port-machine or controller timer, a scenario event), so a
simulated day takes seconds and no tick that could matter is skipped. `SiteRunner` does the same
for several stations on one simulated bus with a coordinator and its transport (issue 7).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from firmware.station import Snapshot, Station
from hal.clock import StationClock
from hal.interfaces import Hardware, Service, leave_safe

# The station loop's period on real hardware. The contactor must open within 100 ms of the
# pilot leaving C (J1772, docs/design.md), so a tick must come at least that often.
REALTIME_PERIOD_S = 0.05
# Ticks closer together than this in virtual time are merged (1 ms: below any J1772 timing).
MIN_VIRTUAL_STEP_S = 0.001

StepHook = Callable[[Snapshot], None]


@dataclass(order=True)
class _Event:
    at: float
    order: int
    action: Callable[[], None] = field(compare=False)


class VirtualRunner:
    """Drives a station through virtual time, event to event."""

    def __init__(self, station: Station, *, max_step_s: float = 60.0) -> None:
        self.station = station
        self.max_step_s = max_step_s
        self.now = 0.0
        self.ticks = 0
        self._events: list[_Event] = []
        self._order = itertools.count()

    def at(self, t: float, action: Callable[[], None]) -> None:
        """Run ``action`` at virtual time ``t`` (hardware advanced to ``t`` first), then tick."""
        heapq.heappush(self._events, _Event(t, next(self._order), action))

    def run(self, until: float, on_step: StepHook | None = None) -> Snapshot:
        """Tick from the present time to ``until`` (inclusive) and return the last snapshot."""
        hardware = self.station.hardware
        while True:
            while self._events and self._events[0].at <= self.now:
                event = heapq.heappop(self._events)
                hardware.advance(self.now)
                event.action()
            snap = self.station.step(self.now)
            self.ticks += 1
            if on_step is not None:
                on_step(snap)
            if self.now >= until:
                return snap
            self.now = self._next_time(until)

    def _next_time(self, until: float) -> float:
        candidates: Iterable[float | None] = (
            self.station.next_deadline(),
            self.station.hardware.next_change(self.now),
            self._events[0].at if self._events else None,
            until,
            self.now + self.max_step_s,
        )
        nxt = min(t for t in candidates if t is not None)
        return max(nxt, self.now + MIN_VIRTUAL_STEP_S) if nxt < until else until


class RealtimeRunner:
    """Drives a station on a ``StationClock``, optionally sped up (simulated hardware).

    The clock is shared with the station's services (meters stamp their readings with it); a
    runner made without one makes its own. ``on_stopping`` is called once when the ports are
    about to be left safe, whatever ends the run (systemd's STOPPING=1: firmware.sdnotify).
    """

    def __init__(
        self,
        station: Station,
        *,
        period_s: float = REALTIME_PERIOD_S,
        speed: float = 1.0,
        clock: StationClock | None = None,
        on_stopping: Callable[[], None] | None = None,
    ) -> None:
        if not period_s > 0.0 or period_s > 0.1:
            raise ValueError("the loop period must be in (0, 0.1] s (contactor opens in 100 ms)")
        if not speed > 0.0:
            raise ValueError("speed must be > 0")
        # The clock the station's services stamp readings with, if it was built with one.
        clock = clock if clock is not None else station.clock
        if clock is not None and clock.speed != speed:
            raise ValueError(f"the clock runs at {clock.speed}x, the runner at {speed}x")
        self.station = station
        self.period_s = period_s
        self.speed = speed
        self.clock = clock if clock is not None else StationClock(speed)
        self.stop_event = asyncio.Event()
        self._wake = asyncio.Event()
        self.on_stopping = on_stopping

    def stop(self) -> None:
        self.stop_event.set()
        self._wake.set()

    def _input_changed(self) -> None:
        self._wake.set()

    async def run(self, until: float | None = None, on_step: StepHook | None = None) -> None:
        """Tick until ``until`` (station seconds) or ``stop()``; always leaves the ports safe."""
        loop = asyncio.get_running_loop()
        hardware = self.station.hardware
        clock = self.clock
        started: list[Service] = []
        # Zero before anything can stamp a reading, so no stamp is ever ahead of the loop.
        clock.start()
        if hasattr(hardware, "on_input_change"):
            # A backend that hears of input changes (a board's pilot event) gets a tick at
            # once rather than at the next period: the contactor opens sooner after an unplug.
            hardware.on_input_change = self._input_changed
        try:
            # Inside the try: a start that fails half way still ends in Station.shutdown.
            await hardware.start()
            # Safe before anything else: a previous run that died (a watchdog kill) may have
            # left a PWM on or a contactor closed, and starting the services can take seconds.
            # The first tick then confirms it by sensing (firmware.sdnotify's READY=1).
            leave_safe(hardware.ports)
            for service in self.station.services:
                await service.start()
                started.append(service)
            while True:
                now = clock()
                if until is not None:
                    now = min(now, until)
                snap = self.station.step(now)
                if on_step is not None:
                    on_step(snap)
                if until is not None and now >= until:
                    return
                # Sped up, the simulated hardware says when it changes next, so nothing is
                # missed between ticks; at speed 1 the real period alone sets the pace.
                nxt = now + self.period_s * self.speed
                for t in (self.station.next_deadline(), hardware.next_change(now), until):
                    if t is not None and now < t < nxt:
                        nxt = t
                delay = max(0.0, clock.monotonic_at(nxt) - loop.time())
                if not self._wake.is_set():
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                    # cancellation of the task running the station.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                self._wake.clear()
                if self.stop_event.is_set():
                    return
        finally:
            try:
                if self.on_stopping is not None:
                    self.on_stopping()
            finally:  # leaving the ports safe never depends on the hook
                await self.station.shutdown()
                for service in reversed(started):
                    await service.stop()


SiteHook = Callable[[float, list[Snapshot]], None]


class SiteRunner:
    """Drives several stations sharing one simulated bus, and the site around them (a
    coordinator, a transport), through virtual time, event to event.

    A tick at ``now``: scheduled actions due, then ``before(now)`` (deliver messages, run the
    coordinator; it returns the indices of the stations it gave something to), then the
    stations' ``step(now)``, then ``after(now, snapshots)`` (send telemetry). With
    ``changed(i, now)`` (did the hardware of station ``i`` change at ``now``?) a station is
    stepped only when something concerns it: its own deadline, a change on its ports, a
    message, a scheduled action; otherwise its last snapshot stands (its loop would decide the
    same). The next tick is the earliest of every station's deadline, the bus's next change,
    the next scheduled action and whatever ``deadlines()`` adds (messages in flight, the
    coordinator's timers).
    """

    def __init__(
        self,
        stations: Iterable[Station],
        hardware: Hardware,
        *,
        before: Callable[[float], Iterable[int] | None] | None = None,
        after: SiteHook | None = None,
        deadlines: Callable[[], Iterable[float | None]] | None = None,
        changed: Callable[[int, float], bool] | None = None,
        max_step_s: float = 60.0,
    ) -> None:
        self.stations = list(stations)
        self.hardware = hardware
        self.before = before
        self.after = after
        self.deadlines = deadlines
        self.changed = changed
        self.max_step_s = max_step_s
        self.now = 0.0
        self.ticks = 0
        self.steps = 0  # station steps (at most ticks x stations)
        self._events: list[_Event] = []
        self._order = itertools.count()
        self._snaps: list[Snapshot | None] = [None] * len(self.stations)
        self._due: list[float | None] = [None] * len(self.stations)

    def at(self, t: float, action: Callable[[], None]) -> None:
        """Run ``action`` at virtual time ``t`` (hardware advanced to ``t`` first), then tick."""
        heapq.heappush(self._events, _Event(t, next(self._order), action))

    def run(self, until: float, on_step: SiteHook | None = None) -> list[Snapshot]:
        """Tick from the present time to ``until`` (inclusive); the last snapshots."""
        while True:
            now = self.now
            self.hardware.advance(now)
            fired = False
            while self._events and self._events[0].at <= now:
                event = heapq.heappop(self._events)
                event.action()
                fired = True
            woken = set(self.before(now) or ()) if self.before is not None else set()
            for i, station in enumerate(self.stations):
                due = self._due[i]
                if (
                    fired
                    or self.changed is None
                    or self._snaps[i] is None
                    or i in woken
                    or (due is not None and due <= now)
                    or self.changed(i, now)
                ):
                    self._snaps[i] = station.step(now)
                    self._due[i] = station.next_deadline()
                    self.steps += 1
            snaps = [s for s in self._snaps if s is not None]
            if self.after is not None:
                self.after(now, snaps)
            self.ticks += 1
            if on_step is not None:
                on_step(now, snaps)
            if now >= until:
                return snaps
            self.now = self._next_time(until)

    def _next_time(self, until: float) -> float:
        candidates: list[float | None] = list(self._due)
        candidates.append(self.hardware.next_change(self.now))
        candidates.append(self._events[0].at if self._events else None)
        if self.deadlines is not None:
            candidates.extend(self.deadlines())
        candidates.extend((until, self.now + self.max_step_s))
        nxt = min(t for t in candidates if t is not None)
        return max(nxt, self.now + MIN_VIRTUAL_STEP_S) if nxt < until else until
