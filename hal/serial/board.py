"""A simulated pilot/contactor board that speaks the serial protocol on a pseudo-terminal.

Its one job is to be the peer that ``hal.serial.backend`` is tested against, through a real
serial device: it answers the wire protocol (``docs/serial-protocol.md``) on the master side of a
pty, and its physics are the ``sim://`` pilot bus (``hal.sim.bus.SimBus``, the EV models), run on
the board's own monotonic clock. It models the safety a real board must have: without a host
heartbeat for longer than the watchdog time it releases every contactor and stops every PWM by
itself, and it refuses to energise anything until a heartbeat arms it again.

Tests drive it in-process (``plug``/``unplug``, ``bus.inject`` for faults, ``inject_bytes`` and
``corrupt_next`` for line noise, ``mute`` for a board that stops answering, ``silent`` for a
broken line towards the host (the board hears and acts but is never heard), ``reply_delay_s``
for one that answers late); ``ampshare board-sim`` wraps the same class.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import random
import tty
from collections.abc import Callable
from dataclasses import dataclass

from hal.serial.protocol import (
    CA_PER_A,
    CURRENT_NONE,
    CV_PER_V,
    GAP_S,
    LOW_NONE,
    MAX_DUTY_PERMILLE,
    MAX_PORTS,
    MIN_WATCHDOG_S,
    PERMILLE_PER_PCT,
    SEQ_MASK,
    TRIPS_MASK,
    Ack,
    AckCode,
    Event,
    FrameParser,
    Heartbeat,
    Message,
    Output,
    PortStatus,
    PwmOff,
    ReadStatus,
    ResetGfci,
    SetContactor,
    SetPwm,
    StateF,
    Status,
    encode,
)
from hal.sim.bus import SimBus, SimPort
from hal.sim.ev import EvSpec
from hal.tasks import cancel_and_wait

__all__ = [
    "DEFAULT_WATCHDOG_S",
    "GAP_S",
    "MIN_WATCHDOG_S",
    "BoardSim",
    "BoardStats",
    "Trip",
    "open_pty",
]

log = logging.getLogger("ampshare.board")

# The shortest watchdog time the board accepts from a heartbeat is the protocol's
# MIN_WATCHDOG_S (the host refuses to ask for less).
# The board's default (and longest) watchdog time; a heartbeat may ask for less, never more.
DEFAULT_WATCHDOG_S = 1.0
# The board re-reads its inputs at least this often even when its models predict no change
# (a real board samples the pilot every PWM period; the simulated bus is exact between
# changes, so this only bounds how stale the reported current gets).
_MAX_IDLE_S = 0.1
# A partial frame the line leaves idle for the protocol's GAP_S will never complete and is
# dropped, as the host does with its default ``gap`` (docs/serial-protocol.md, "Frames":
# resynchronisation at both ends). Without it a stray start byte and length would swallow the
# host's next frames, its heartbeats among them, until enough bytes arrived to fail the CRC.
_OUTPUT = {"steady": Output.STEADY, "pwm": Output.PWM, "F": Output.F}


@dataclass(frozen=True, slots=True)
class Trip:
    """One watchdog trip, on the board's clock."""

    at: float
    last_heartbeat: float
    watchdog_s: float


@dataclass(slots=True)
class BoardStats:
    """What the simulated board has received and done."""

    commands: int = 0
    duplicates: int = 0  # a command repeated with a recent sequence number (a resend)
    naks: int = 0
    events: int = 0
    statuses: int = 0
    tx_dropped: int = 0  # frames the pty would not take (no host reading)
    ignored: int = 0  # board -> host types arriving at the board


def open_pty() -> tuple[int, int, str]:
    """A pseudo-terminal pair in raw mode: (master fd, slave fd, slave path).

    Raw before any host opens it, so that nothing the board writes is echoed back to it.
    """
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class BoardSim:
    """The board: the wire protocol on ``fd`` (a pty master), the physics in ``bus``.

    Wire port ``i`` is the bus's ``i``-th port. Must be started and used on one asyncio loop.
    """

    def __init__(
        self,
        bus: SimBus,
        fd: int,
        *,
        heartbeat_timeout_s: float = DEFAULT_WATCHDOG_S,
        slave_fd: int | None = None,
        path: str | None = None,
        temperature_c: float = 35.0,
        seed: int = 0,
    ) -> None:
        if len(bus.ports) > MAX_PORTS:
            raise ValueError(f"a board serves at most {MAX_PORTS} ports, not {len(bus.ports)}")
        if not heartbeat_timeout_s >= MIN_WATCHDOG_S:
            raise ValueError(f"the heartbeat timeout must be >= {MIN_WATCHDOG_S} s")
        self.bus = bus
        self.fd = fd
        self.path = path
        self._slave_fd = slave_fd
        self.max_watchdog_s = heartbeat_timeout_s
        self.watchdog_s = heartbeat_timeout_s
        self.temperature_c = temperature_c
        self._sim_ports: list[SimPort] = []
        for hw in bus.ports:
            if not isinstance(hw.pilot, SimPort):
                raise TypeError("the board simulator runs on a SimBus's own ports")
            self._sim_ports.append(hw.pilot)
        self._rng = random.Random(seed)
        self._parser = FrameParser()
        self._last_rx = 0.0  # board time of the last bytes received
        self.stats = BoardStats()
        self.trips: list[Trip] = []
        self.armed = False
        self.last_heartbeat: float | None = None
        # Test controls: a board whose link is cut (both ways), one whose line towards the
        # host is cut (it still acts on what it receives), one that answers late, one whose
        # next frames get a flipped bit.
        self.mute = False
        self.silent = False
        self.reply_delay_s = 0.0
        self._corrupt = 0
        # Called with (board time, seq, message) for every frame the board receives (bench).
        self.on_frame: Callable[[float, int, Message], None] | None = None
        # Called with (board time, status) for every event the board sends (the CLI's log).
        self.on_event: Callable[[float, Status], None] | None = None
        self._event_seq = 0
        self._recent: collections.deque[tuple[int, Message]] = collections.deque(maxlen=16)
        self._last_key: tuple[object, ...] | None = None
        self._t0 = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None

    @classmethod
    def on_pty(cls, bus: SimBus, **kwargs: object) -> BoardSim:
        """A board on a new pseudo-terminal; the host opens ``board.path``."""
        master, slave, path = open_pty()
        return cls(bus, master, slave_fd=slave, path=path, **kwargs)  # type: ignore[arg-type]

    @property
    def parser_stats(self) -> dict[str, int]:
        return self._parser.stats.as_dict()

    # --- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self._loop.add_reader(self.fd, self._on_readable)
        self._task = asyncio.create_task(self._run(), name="board-sim")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.fd)
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def close(self) -> None:
        """Close the pty (after ``stop``)."""
        for fd in (self.fd, self._slave_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._slave_fd = None

    def now(self) -> float:
        """The board's clock: seconds since ``start``."""
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        return loop.time() - self._t0

    # --- test controls ---------------------------------------------------------------

    def plug(self, spec: EvSpec) -> None:
        """Plug a vehicle in now (its arrive/leave times are ignored)."""
        now = self._advance()
        self.bus.schedule(dataclasses.replace(spec, arrive_s=now, leave_s=None))
        self._advance()
        self._check_events()
        self._kick()

    def unplug(self, port_id: str) -> float:
        """Unplug the vehicle on ``port_id`` now; returns the board time it happened."""
        now = self._advance()
        port = self.bus.port(port_id)
        port.ev = None
        self.bus.changed(port)
        self._advance()
        self._check_events()
        self._kick()
        return now

    def inject_bytes(self, data: bytes) -> None:
        """Garbage on the line towards the host."""
        self._write_raw(data)

    def inject_to_board(self, data: bytes) -> None:
        """Garbage on the line towards the board (written on the host's side of the pty)."""
        if self._slave_fd is None:
            raise RuntimeError("this board does not hold the host side of its pty")
        os.write(self._slave_fd, data)

    def corrupt_next(self, frames: int) -> None:
        """Flip one bit in each of the next ``frames`` frames the board sends."""
        self._corrupt += frames

    def port_status(self, index: int) -> PortStatus:
        """What the board would report for wire port ``index`` now."""
        self._advance()
        return self._port_status(self._sim_ports[index])

    # --- the board's main loop -------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._on_readable()  # a heartbeat waiting in the pty counts before the watchdog
            now = self._advance()
            if self._parser.pending and now - self._last_rx >= GAP_S:
                for seq, msg in self._parser.expire():
                    self._received(seq, msg)
            self._check_watchdog(now)
            self._check_events()
            wake = [now + _MAX_IDLE_S]
            if self._parser.pending:
                wake.append(self._last_rx + GAP_S)
            nxt = self.bus.next_change(now)
            if nxt is not None:
                wake.append(nxt)
            if self.armed and self.last_heartbeat is not None:
                wake.append(self.last_heartbeat + self.watchdog_s + 1e-3)
            await self._sleep(max(0.0, min(wake) - self.now()))

    async def _sleep(self, delay: float) -> None:
        """Sleep until ``delay`` has passed or ``_kick`` is called (a frame, a test control).

        A future and a timer rather than ``wait_for(event.wait())``, whose cancellation can be
        lost on Python 3.11 when the wait completes at the same moment (``stop`` would hang).
        """
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        self._wake = wake
        timer = loop.call_later(delay, self._kick)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    def _kick(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _advance(self) -> float:
        now = max(self.now(), self.bus.now)
        self.bus.advance(now)
        return now

    def _check_watchdog(self, now: float) -> None:
        if not self.armed or self.last_heartbeat is None:
            return
        if now - self.last_heartbeat <= self.watchdog_s:
            return
        # The host is gone (or cannot reach us): nothing may stay energised on its behalf.
        for port in self._sim_ports:
            port.command(False)
            port.steady()
        self.armed = False
        self.trips.append(Trip(now, self.last_heartbeat, self.watchdog_s))
        log.warning(
            "no heartbeat for %.3f s (watchdog %.3f s): contactors open, PWM off",
            now - self.last_heartbeat,
            self.watchdog_s,
        )
        self._advance()

    # --- receiving -------------------------------------------------------------------

    def _on_readable(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # no host side open (EIO): nothing to read
            if not data:
                return
            if self.mute:
                continue
            self._last_rx = self.now()
            for seq, msg in self._parser.feed(data):
                self._received(seq, msg)
            if self._parser.pending:
                self._kick()  # the main loop times the gap that ends a partial frame

    def _received(self, seq: int, msg: Message) -> None:
        if self.reply_delay_s > 0.0 and self._loop is not None:
            self._loop.call_later(self.reply_delay_s, self._handle, seq, msg)
        else:
            self._handle(seq, msg)

    def _handle(self, seq: int, msg: Message) -> None:
        if self.mute:
            return
        now = self._advance()
        if self.on_frame is not None:
            self.on_frame(now, seq, msg)
        if isinstance(msg, ReadStatus):
            self.stats.statuses += 1
            self._send(self._status(Status), seq)
            return
        if isinstance(msg, Ack | Status):  # Status covers Event
            self.stats.ignored += 1
            return
        self.stats.commands += 1
        if (seq, msg) in self._recent:
            # A retry of a command already applied (its acknowledgement was lost or late).
            # Commands set a state and the host never resends a superseded one, so applying
            # it again changes nothing; it is counted and acknowledged again.
            self.stats.duplicates += 1
        else:
            self._recent.append((seq, msg))
        code = self._apply(now, msg)
        if code is not AckCode.OK:
            self.stats.naks += 1
        self._send(Ack(int(code)), seq)
        self._advance()
        self._check_events()
        self._kick()

    def _apply(self, now: float, msg: Message) -> AckCode:
        if isinstance(msg, Heartbeat):
            if msg.timeout_ms == 0:
                return AckCode.BAD_VALUE
            self.watchdog_s = min(max(msg.timeout_ms / 1000.0, MIN_WATCHDOG_S), self.max_watchdog_s)
            self.last_heartbeat = now
            self.armed = True
            return AckCode.OK
        port_index = getattr(msg, "port", None)
        if port_index is None or not 0 <= port_index < len(self._sim_ports):
            return AckCode.BAD_PORT
        port = self._sim_ports[port_index]
        if isinstance(msg, SetPwm):
            if msg.duty_permille > MAX_DUTY_PERMILLE:
                return AckCode.BAD_VALUE
            if not self.armed:
                return AckCode.DISARMED
            port.pwm(msg.duty_permille / PERMILLE_PER_PCT)
        elif isinstance(msg, PwmOff):
            port.steady()
        elif isinstance(msg, StateF):
            port.state_f()
        elif isinstance(msg, SetContactor):
            if msg.closed and not self.armed:
                return AckCode.DISARMED
            port.command(msg.closed)
        elif isinstance(msg, ResetGfci):
            port.reset_gfci()
        return AckCode.OK

    # --- sending ---------------------------------------------------------------------

    def _port_status(self, port: SimPort) -> PortStatus:
        sample = port.sample()
        duty = port.duty_pct if port.pilot_out == "pwm" and port.duty_pct is not None else 0.0
        amps = port.metered_amps()
        return PortStatus(
            pilot_high_cv=round(sample.high_v * CV_PER_V),
            pilot_low_cv=LOW_NONE if sample.low_v is None else round(sample.low_v * CV_PER_V),
            output=int(_OUTPUT[port.pilot_out]),
            duty_permille=round(duty * PERMILLE_PER_PCT),
            contactor_cmd=port.commanded_closed,
            contactor_fb=port.feedback(),
            gfci=port.gfci_tripped(),
            ground_ok=port.ground_ok(),
            current_ca=min(round(amps * CA_PER_A), CURRENT_NONE - 1),
        )

    def _status(self, cls: type[Status]) -> Status:
        return cls(
            uptime_ms=int(self.now() * 1000) & 0xFFFFFFFF,
            jumper=self.bus.jumper.installed(),
            safe=not self.armed,
            temperature_dc=round(self.temperature_c * 10),
            watchdog_ms=round(self.watchdog_s * 1000),
            watchdog_trips=len(self.trips) & TRIPS_MASK,
            ports=tuple(self._port_status(p) for p in self._sim_ports),
        )

    def _check_events(self) -> None:
        """Send an event when a discrete input or output changed (not on current changes)."""
        status = self._status(Event)
        key: tuple[object, ...] = (
            status.jumper,
            status.safe,
            tuple(dataclasses.replace(p, current_ca=0) for p in status.ports),
        )
        if key == self._last_key:
            return
        self._last_key = key
        self._event_seq = (self._event_seq + 1) & SEQ_MASK
        self.stats.events += 1
        self._send(status, self._event_seq)
        if self.on_event is not None:
            self.on_event(self.now(), status)

    def _send(self, msg: Message, seq: int) -> None:
        if self.mute or self.silent:
            return
        frame = bytearray(encode(msg, seq))
        if self._corrupt > 0:
            self._corrupt -= 1
            bit = self._rng.randrange(8 * (len(frame) - 1)) + 8  # never the start byte
            frame[bit // 8] ^= 1 << (bit % 8)
        self._write_raw(bytes(frame))

    def _write_raw(self, data: bytes) -> None:
        try:
            written = os.write(self.fd, data)
        except (BlockingIOError, InterruptedError):
            written = 0
        except OSError:
            written = 0
        if written < len(data):
            # Nobody is reading the host side: a real UART would drop the bytes too.
            self.stats.tx_dropped += 1
