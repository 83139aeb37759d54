"""The host end of the serial line: frames to and from the board's device, never blocking.

This module's one job is the transport (docs/serial-protocol.md, "What the host does"): open
the device (and reopen it every ``reopen`` seconds after a failure), write frames without
blocking (a bounded transmit queue; a board that does not read gets nothing), read and
resynchronise (``FrameParser``, with the ``gap`` that ends a partial frame), number what goes
out, resend each command until it is acknowledged (``ack``, ``retries``, a command superseding
its slot's last one), send the heartbeat and the status poll every ``heartbeat``, and know when
the last heartbeat was wholly on the wire. Line errors are counted and logged once per episode.

What the board's statuses mean (when it is lost, which commands it lacks, when heartbeats may
go out at all) is not decided here: ``SerialLink`` calls hooks that its subclass
(``hal.serial.backend.SerialBoard``) provides from ``hal.serial.state.BoardState``.

I/O model: pyserial opens and configures the device (baud, 8N1, raw, exclusive lock); the
asyncio loop watches its file descriptor (``loop.add_reader``) and reads and writes it without
blocking. No thread: the reader runs on the loop's thread as soon as bytes arrive, so what the
station reads is plain attributes, with no lock and no hand-over latency. That needs a POSIX
serial port (Linux: a Raspberry Pi's UART, a USB adapter, a pty), which is where this backend
runs; pyserial-asyncio would do the same and is one more dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import serial

from hal.serial.protocol import (
    SEQ_MASK,
    Ack,
    AckCode,
    FrameParser,
    Heartbeat,
    Message,
    ReadStatus,
    Status,
    encode,
)
from hal.serial.settings import HEARTBEAT_BYTES, WATCHDOG_MARGIN_S, LinkSettings
from hal.tasks import cancel_and_wait

__all__ = ["Episode", "LinkStats", "SerialLink", "Slot"]

log = logging.getLogger("ampshare.serial")

# A line error episode is over after this many good frames in a row (about a second).
_CLEAN_FRAMES = 20
# The transmit queue never holds more than this; a board that does not read gets nothing.
_TX_LIMIT = 4096

# Slots of commands that supersede each other: a port's pilot, its contactor, its GFCI reset.
Slot = tuple[int, str]


@dataclass(slots=True)
class LinkStats:
    """Counters of the host side of the link (besides the frame parser's)."""

    opened: int = 0
    open_failures: int = 0
    device_errors: int = 0
    frames_sent: int = 0
    commands: int = 0
    retries: int = 0
    acks: int = 0
    naks: int = 0
    unacked: int = 0  # commands given up after every retry
    statuses: int = 0
    events: int = 0
    event_gaps: int = 0  # events missed, by the board's event sequence numbers
    reconciled: int = 0  # commands resent because the board's state differed from the host's
    lost: int = 0  # times the board was declared lost
    wrong_board: int = 0
    tx_dropped: int = 0
    board_trips: int = 0  # watchdog trips the board reported (increase seen)


@dataclass(slots=True)
class _Pending:
    seq: int
    frame: bytes
    sent_at: float
    tries: int = 1


@dataclass(slots=True)
class Episode:
    """Logs a problem when it starts and once when it ends, never per occurrence."""

    what: str
    level: int = logging.WARNING
    active: bool = False
    count: int = 0
    details: list[str] = field(default_factory=list)

    def bad(self, detail: str) -> None:
        self.count += 1
        if not self.active:
            self.active = True
            log.log(self.level, "%s: %s", self.what, detail)

    def good(self, detail: str = "") -> None:
        if self.active:
            self.active = False
            log.info("%s: over after %d occurrence(s)%s", self.what, self.count, detail)
            self.count = 0


class SerialLink:
    """The transport of one serial line (see the module docstring).

    Hooks for the subclass that knows what the board's statuses mean: ``_status`` (a status or
    event arrived), ``_may_heartbeat`` (whether a heartbeat may arm the board now),
    ``_check_lost`` (called first on every housekeeping turn: whether the board is lost, in
    which case nothing is retried) and ``_device_opened`` (the device was opened again).
    """

    def __init__(self, settings: LinkSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self._clock = clock
        self.stats = LinkStats()
        self._parser = FrameParser()
        self._ser: serial.Serial | None = None
        self._fd: int | None = None
        self._tx = bytearray()
        self._tx_out = 0  # bytes handed to the device since the backend was made
        # Stream position (in _tx_out terms) just past a heartbeat still in self._tx, not yet
        # handed to the device: it may still arm the board whenever it goes out.
        self._hb_end: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._seq = 0
        self._pending: dict[Slot, _Pending] = {}
        self._backoff: dict[Slot, float] = {}
        self._opened_at = math.inf  # when the device was last opened (clock)
        # When the last heartbeat was (at the latest) wholly on the wire, on the clock.
        self._last_hb_sent: float | None = None
        self._next_hb = 0.0
        self._last_byte_at = 0.0
        self._next_open = 0.0
        self._errors_seen = 0
        self._clean_frames = 0
        self._line = Episode("serial line errors, resynchronising")
        self._open_episode = Episode(f"serial device {settings.device}")
        self._nak_episode = Episode("board refused commands")
        self._unacked_episode = Episode("board did not acknowledge commands")

    # --- hooks ------------------------------------------------------------------------

    def _status(self, seq: int, status: Status) -> None:
        """A status (or event) arrived; the subclass decides what it means."""

    def _may_heartbeat(self, now: float) -> bool:
        """Whether a heartbeat may arm the board now (never, without a subclass)."""
        return False

    def _check_lost(self, now: float) -> bool:
        """Whether the board is lost (then nothing is retried)."""
        return False

    # --- life cycle -------------------------------------------------------------------

    def _start_link(self) -> None:
        """Open the device (or keep trying in the background) and start the link task."""
        self._loop = asyncio.get_running_loop()
        self._open()
        self._task = asyncio.create_task(self._housekeeping(), name="serial-board")

    async def _stop_link(self) -> None:
        """End the link task and release the device."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._close()

    def link_stats(self) -> dict[str, int]:
        """Every counter of the link: the host's and the frame parser's."""
        counters = {k: getattr(self.stats, k) for k in self.stats.__dataclass_fields__}
        counters.update({f"rx_{k}": v for k, v in self._parser.stats.as_dict().items()})
        return counters

    # --- commands ---------------------------------------------------------------------

    def command(self, slot: Slot, msg: Message) -> None:
        """Send ``msg`` now; it supersedes (and stops the retries of) the slot's last one."""
        self._pending.pop(slot, None)
        if self._fd is None:
            return  # sent on reconnection by reconciling with the board's status
        seq = self._next_seq()
        frame = encode(msg, seq)
        self.stats.commands += 1
        self._pending[slot] = _Pending(seq, frame, self._clock())
        self._write(frame)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & SEQ_MASK
        return self._seq

    def _send(self, msg: Message) -> None:
        self._write(encode(msg, self._next_seq()))

    def _ask_status(self) -> None:
        """Ask for the board's whole state now (something was lost on the way)."""
        self._send(ReadStatus())

    def _acked(self, seq: int, ack: Ack) -> None:
        self.stats.acks += 1
        for slot, pending in list(self._pending.items()):
            if pending.seq == seq:
                del self._pending[slot]
                if ack.code != AckCode.OK:
                    self.stats.naks += 1
                    self._backoff[slot] = self._clock() + self.settings.heartbeat_s
                    try:
                        reason = AckCode(ack.code).name
                    except ValueError:
                        reason = f"code {ack.code}"
                    self._nak_episode.bad(f"port {slot[0]} {slot[1]}: {reason}")
                else:
                    self._nak_episode.good()
                    self._unacked_episode.good()
                return

    # --- the device -------------------------------------------------------------------

    def _open(self) -> None:
        now = self._clock()
        self._next_open = now + self.settings.reopen_s
        try:
            ser = serial.Serial(self.settings.device, self.settings.baud, timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            self.stats.open_failures += 1
            self._open_episode.bad(
                f"cannot open: {exc} (retrying every {self.settings.reopen_s:g} s)"
            )
            return
        self._open_episode.good("; open again")
        self.stats.opened += 1
        self._opened_at = now
        ser.reset_input_buffer()  # whatever the board said while nobody listened is stale
        fd = ser.fileno()
        os.set_blocking(fd, False)
        self._ser, self._fd = ser, fd
        self._parser = FrameParser()
        self._errors_seen = 0
        self._device_opened()
        assert self._loop is not None
        self._loop.add_reader(fd, self._on_readable)
        # Ask at once: the first status ends the unknown state.
        self._next_hb = now
        self._heartbeat_and_poll(now)

    def _device_opened(self) -> None:
        """Hook: the device was (re)opened; maybe another board is behind it now."""

    def _close(self) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        if self._ser is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                self._ser.close()
        self._ser = self._fd = None
        self._tx.clear()
        self._hb_end = None
        self._pending.clear()

    def _device_error(self, exc: BaseException) -> None:
        self.stats.device_errors += 1
        self._open_episode.bad(f"{exc} (closed; reopening every {self.settings.reopen_s:g} s)")
        self._close()
        self._next_open = self._clock() + self.settings.reopen_s

    def _write(self, frame: bytes) -> int | None:
        """Send ``frame`` or queue what the device does not take. Returns the stream position
        just past its last byte (``_tx_out`` terms), or None if it was not sent at all."""
        if self._fd is None:
            return None
        self.stats.frames_sent += 1
        if self._tx:
            return self._queue(frame)
        try:
            written = os.write(self._fd, frame)
        except (BlockingIOError, InterruptedError):
            written = 0
        except OSError as exc:
            self._device_error(exc)
            return None
        self._tx_out += written
        if written < len(frame):
            return self._queue(frame[written:])
        return self._tx_out

    def _queue(self, data: bytes) -> int | None:
        if len(self._tx) + len(data) > _TX_LIMIT:
            # The board is not reading: what is queued is stale. Drop it; the reconciliation
            # resends whatever the board turns out to lack.
            self.stats.tx_dropped += 1
            self._drop_tx()
            return None
        if not self._tx and self._loop is not None and self._fd is not None:
            self._loop.add_writer(self._fd, self._on_writable)
        self._tx += data
        return self._tx_out + len(self._tx)

    def _drop_tx(self) -> None:
        """Forget what waits to be sent (a queued heartbeat with it: it never goes out)."""
        self._tx.clear()
        self._hb_end = None
        if self._loop is not None and self._fd is not None:
            self._loop.remove_writer(self._fd)

    def _heartbeat_on_wire_by(self, now: float, trailing: int) -> float:
        """When a heartbeat just handed to the device is wholly on the wire: once the device
        has sent what it holds up to the heartbeat's last byte (its output queue, by TIOCOUTQ,
        less the ``trailing`` bytes handed over after the heartbeat), at the configured baud.
        At least the heartbeat's own line time: some drivers (a pty) report no queue."""
        backlog = 0
        if self._ser is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                backlog = int(self._ser.out_waiting)
        return now + max(backlog - trailing, HEARTBEAT_BYTES) * self.settings.byte_s

    def _on_writable(self) -> None:
        if self._fd is None:
            return
        try:
            written = os.write(self._fd, self._tx)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._device_error(exc)
            return
        del self._tx[:written]
        self._tx_out += written
        if self._hb_end is not None and self._tx_out >= self._hb_end:
            trailing = self._tx_out - self._hb_end
            self._hb_end = None
            self._last_hb_sent = self._heartbeat_on_wire_by(self._clock(), trailing)
        if not self._tx and self._loop is not None:
            self._loop.remove_writer(self._fd)

    def _on_readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._device_error(exc)
            return
        if not data:
            self._device_error(EOFError("the device hung up"))
            return
        self._last_byte_at = self._clock()
        self._received(self._parser.feed(data))

    def _received(self, frames: list[tuple[int, Message]]) -> None:
        stats = self._parser.stats
        if stats.errors > self._errors_seen:
            self._errors_seen = stats.errors
            self._clean_frames = 0
            self._line.bad(f"parser counters {stats.as_dict()}")
            # Something was lost: an event, an acknowledgement. Ask for the whole state now.
            self._ask_status()
        elif frames and self._line.active:
            # Over after a clean stretch, not at the first good frame: a noisy line is one
            # episode, not one log line per burst.
            self._clean_frames += len(frames)
            if self._clean_frames >= _CLEAN_FRAMES:
                self._line.good(f", {stats.skipped_bytes} bytes skipped in all")
        for seq, msg in frames:
            if isinstance(msg, Ack):
                self._acked(seq, msg)
            elif isinstance(msg, Status):
                self._status(seq, msg)

    # --- heartbeats -------------------------------------------------------------------

    def _send_heartbeat(self, now: float) -> None:
        end = self._write(
            encode(Heartbeat(round(self.settings.watchdog_s * 1000)), self._next_seq())
        )
        if end is None:
            return  # not sent: it cannot arm anything
        if end > self._tx_out:
            self._hb_end = end  # queued: its time on the wire is known when it leaves the queue
        else:
            self._last_hb_sent = self._heartbeat_on_wire_by(now, 0)

    def _heartbeat_and_poll(self, now: float) -> None:
        self._next_hb = max(self._next_hb + self.settings.heartbeat_s, now)
        if self._may_heartbeat(now):
            self._send_heartbeat(now)
        self._send(ReadStatus())  # also while lost: it is how the board is found again

    def armed_until(self, watchdog_s: float) -> float:
        """When a board armed by the last heartbeat, with ``watchdog_s`` in force, must have
        made itself safe (if it has not been heard since), on the clock: the moment that
        heartbeat was wholly on the wire + the watchdog + a margin. Never, while a heartbeat
        waits in the transmit queue: it may still go out and arm the board."""
        if self._hb_end is not None:
            return math.inf
        sent = self._last_hb_sent if self._last_hb_sent is not None else self._clock()
        return sent + watchdog_s + WATCHDOG_MARGIN_S

    @property
    def may_have_armed(self) -> bool:
        """A heartbeat was sent or is queued: the board may be armed by this host."""
        return self._last_hb_sent is not None or self._hb_end is not None

    # --- the background task ----------------------------------------------------------

    async def _housekeeping(self) -> None:
        tick = min(0.01, self.settings.ack_s / 2)
        while True:
            try:
                self._housekeeping_once(self._clock())
            except Exception:  # never let one bad turn end the link
                log.exception("serial link housekeeping failed")
            await asyncio.sleep(tick)

    def _housekeeping_once(self, now: float) -> None:
        lost = self._check_lost(now)
        if self._fd is None:
            if now >= self._next_open:
                self._open()
            return
        if self._parser.pending and now - self._last_byte_at > self.settings.gap_s:
            self._received(self._parser.expire())
        if now >= self._next_hb:
            self._heartbeat_and_poll(now)
        if lost:
            return
        for slot, pending in list(self._pending.items()):
            if now - pending.sent_at < self.settings.ack_s:
                continue
            if pending.tries > self.settings.retries:
                del self._pending[slot]
                self.stats.unacked += 1
                self._backoff[slot] = now + self.settings.heartbeat_s
                self._unacked_episode.bad(f"port {slot[0]} {slot[1]}, seq {pending.seq}")
                continue
            pending.tries += 1
            pending.sent_at = now
            self.stats.retries += 1
            self._write(pending.frame)  # the same sequence number: the board sees a repeat
