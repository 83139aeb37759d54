"""The RDM6300 125 kHz tag reader on a UART: its frames, and the reader service.

One job: turn the bytes an RDM6300 module sends into one ``TagRead`` per presentation of an
EM4100 card, without blocking the control tick.

The frame (RDM630/RDM6300 datasheet, "Output format"; the card's data is EM4100's 40 bits:
one version/customer byte and a 32-bit id). 9600 baud, 8N1, the module only sends::

    0x02 | 10 ASCII hex characters: the 5 data bytes | 2 ASCII hex characters: checksum | 0x03

The checksum is the XOR of the 5 data bytes; the datasheet's example: data ``62E3086CED``,
checksum ``62 ^ E3 ^ 08 ^ 6C ^ ED = 08``. The tag id is the 10 data characters as read,
upper-cased: ``"62E3086CED"``. The module repeats the frame while a card stays in the field
(at a rate the datasheet leaves open; several a second); ``hal.rfid.reader.Debouncer`` makes
that one read per presentation (``HOLD_OFF_S`` without a frame of the card ends a presentation).
A clone that sends the frame once per presentation reads the same way.

Parsing (``FrameParser``): the output is exactly the well-formed frames (the layout above with a
matching checksum) that occur in the byte stream, in order, however the stream is cut into
reads. That holds whatever surrounds a frame (noise, a truncated frame, a frame with a bad
checksum, a lost byte) because a frame's last 13 bytes can never be 0x02: a candidate that
meets a byte out of place is dropped, and an 0x02 out of place starts the next candidate. So a
damaged frame never costs the good frame after it, and at most 13 bytes are ever held back.

I/O (as ``hal.serial.link``): pyserial opens and configures the device, and the asyncio loop
watches its non-blocking file descriptor (``loop.add_reader``): no thread, and the tick reads a
list. A device that cannot be opened, or that disappears (a USB adapter unplugged), is logged
once and reopened every ``reopen`` seconds in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import operator
import os
import time
from dataclasses import asdict, dataclass
from urllib.parse import parse_qs, urlsplit

import serial

from hal.clock import Clock
from hal.durations import parse_duration
from hal.registry import BackendError
from hal.rfid.reader import HOLD_OFF_S, Debouncer, TagRead
from hal.tasks import cancel_and_wait

__all__ = [
    "DEFAULT_BAUD",
    "ETX",
    "FRAME_LEN",
    "MAX_PENDING_READS",
    "STX",
    "FrameParser",
    "ParserStats",
    "Rdm6300Reader",
    "ReaderSettings",
    "ReaderStats",
    "encode_frame",
    "open_reader",
    "parse_url",
]

log = logging.getLogger("ampshare.rfid")

STX = 0x02
ETX = 0x03
DATA_CHARS = 10  # 5 bytes: a version/customer byte and the 32-bit id
FRAME_LEN = 1 + DATA_CHARS + 2 + 1
DEFAULT_BAUD = 9600  # the datasheet's rate
# Reads nobody takes are dropped beyond this many (oldest first): the tick takes every 50 ms,
# so only a stalled station gets here, and then old presentations are stale anyway.
MAX_PENDING_READS = 32
_HEX = frozenset(b"0123456789ABCDEFabcdef")
# Position of the checksum's last character, after which only ETX may come.
_LAST_HEX = DATA_CHARS + 2


def _checksum(data_hex: bytes) -> int:
    return functools.reduce(operator.xor, bytes.fromhex(data_hex.decode("ascii")), 0)


def encode_frame(tag: str) -> bytes:
    """The frame an RDM6300 sends for the card ``tag`` (10 hex characters): the parser's
    inverse, for tests, the simulator and a bench. ``ValueError`` unless 10 hex digits."""
    data = tag.encode("ascii")
    if len(data) != DATA_CHARS or not set(data) <= _HEX:
        raise ValueError(f"{tag!r} is not an EM4100 tag id ({DATA_CHARS} hex digits)")
    return bytes([STX]) + data + b"%02X" % _checksum(data) + bytes([ETX])


@dataclass(slots=True)
class ParserStats:
    """What the parser found: good frames, and why anything else was skipped."""

    frames: int = 0
    bad_checksum: int = 0  # well laid out, but the checksum does not match
    malformed: int = 0  # a byte out of place: truncated, noise, a lost byte, non-hex data
    skipped_bytes: int = 0  # every byte not part of a good frame

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class FrameParser:
    """Bytes in, tag ids out (see the module docstring for what it guarantees). Never raises;
    every problem is counted in ``stats``."""

    def __init__(self) -> None:
        self._buf = bytearray()  # empty, or a candidate frame: 0x02 and what fits after it
        self.stats = ParserStats()

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame (at most ``FRAME_LEN - 1``)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[str]:
        """The tag ids of the frames that ``data`` completes, in order."""
        out: list[str] = []
        buf = self._buf
        for byte in data:
            pos = len(buf)  # where this byte falls in the candidate (0: none yet)
            if pos == 0:
                if byte == STX:
                    buf.append(byte)
                else:
                    self.stats.skipped_bytes += 1
            elif pos <= _LAST_HEX and byte in _HEX:
                buf.append(byte)
            elif pos == _LAST_HEX + 1 and byte == ETX:
                if _checksum(bytes(buf[1 : 1 + DATA_CHARS])) == int(buf[1 + DATA_CHARS :], 16):
                    self.stats.frames += 1
                    out.append(bytes(buf[1 : 1 + DATA_CHARS]).decode("ascii").upper())
                else:
                    self.stats.bad_checksum += 1
                    self.stats.skipped_bytes += FRAME_LEN
                buf.clear()
            else:
                # Not a frame. The candidate holds no 0x02 after its first byte (only hex
                # did fit), so nothing in it can start a frame: drop it whole. This byte
                # may start the next one.
                self.stats.malformed += 1
                self.stats.skipped_bytes += pos
                buf.clear()
                if byte == STX:
                    buf.append(byte)
                else:
                    self.stats.skipped_bytes += 1
        return out


@dataclass(frozen=True, slots=True)
class ReaderSettings:
    """``rdm6300:///dev/ttyS0?baud=9600&reopen=1s``."""

    device: str
    baud: int = DEFAULT_BAUD
    reopen_s: float = 1.0  # a device that failed is tried again this often


_KNOWN = ("baud", "reopen")


def parse_url(url: str) -> ReaderSettings:
    """The reader's settings from its URL (``BackendError`` naming what is wrong)."""
    parts = urlsplit(url)
    if parts.scheme != "rdm6300" or parts.netloc or not parts.path or parts.fragment:
        raise BackendError(f"{url!r}: expected rdm6300:///path/to/device[?baud=9600&reopen=1s]")
    raw = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(raw) - set(_KNOWN))
    if unknown:
        raise BackendError(
            f"{url!r}: unknown parameter {unknown[0]!r} (known: {', '.join(_KNOWN)})"
        )
    twice = [k for k, v in raw.items() if len(v) > 1]
    if twice:
        raise BackendError(f"{url!r}: {twice[0]} given more than once")
    query = {k: v[0] for k, v in raw.items()}
    baud = DEFAULT_BAUD
    if "baud" in query:
        if not query["baud"].isdigit() or int(query["baud"]) <= 0:
            raise BackendError(f"{url!r}: baud={query['baud']!r} is not a positive integer")
        baud = int(query["baud"])
    reopen_s = 1.0
    if "reopen" in query:
        try:
            reopen_s = parse_duration(query["reopen"])
        except ValueError as exc:
            raise BackendError(f"{url!r}: reopen: {exc}") from None
        if not 0.01 <= reopen_s <= 60.0:
            raise BackendError(f"{url!r}: reopen must be within 10ms..60s")
    return ReaderSettings(parts.path, baud, reopen_s)


@dataclass(slots=True)
class ReaderStats:
    """Counters of the reader (besides its parser's)."""

    opened: int = 0
    open_failures: int = 0
    device_errors: int = 0  # the device failed or hung up while open
    reads: int = 0  # presentations reported (after debouncing)
    dropped: int = 0  # reads nobody took in time (MAX_PENDING_READS)


class Rdm6300Reader:
    """An RDM6300 on a serial device: a ``TagReader`` and a ``Service``.

    ``take()`` returns the presentations read since the last call, each stamped with
    ``clock`` (the station clock; default ``time.monotonic``) when its bytes arrived.
    """

    def __init__(
        self,
        settings: ReaderSettings,
        *,
        clock: Clock = time.monotonic,
        hold_off_s: float = HOLD_OFF_S,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.stats = ReaderStats()
        self.parser = FrameParser()
        # Kept across reopening: a card held while the adapter blinked is still one presentation.
        self._debouncer = Debouncer(hold_off_s)
        self._reads: list[TagRead] = []
        self._ser: serial.Serial | None = None
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # a device problem was logged and has not ended yet

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def take(self) -> list[TagRead]:
        reads, self._reads = self._reads, []
        return reads

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._open()
        self._task = asyncio.create_task(self._reopen_loop(), name="rfid-rdm6300")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._close()

    # --- the device -------------------------------------------------------------------

    async def _reopen_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reopen_s)
            if self._fd is None:
                self._open()

    def _open(self) -> None:
        device = self.settings.device
        ser: serial.Serial | None = None
        try:
            ser = serial.Serial(device, self.settings.baud, timeout=0, exclusive=True)
            ser.reset_input_buffer()  # what the module said while nobody listened is stale
            fd = ser.fileno()
            os.set_blocking(fd, False)
        except (serial.SerialException, OSError, ValueError) as exc:
            if ser is not None:
                with contextlib.suppress(OSError, serial.SerialException):
                    ser.close()
            self.stats.open_failures += 1
            if not self._failing:
                self._failing = True
                log.warning(
                    "RFID reader %s: cannot open: %s (retrying every %g s)",
                    device,
                    exc,
                    self.settings.reopen_s,
                )
            return
        if self._failing:
            self._failing = False
            log.info("RFID reader %s: open again", device)
        self.stats.opened += 1
        self._ser, self._fd = ser, fd
        # A frame cut by the reopening must not be glued to the first bytes that follow.
        self.parser = FrameParser()
        assert self._loop is not None
        self._loop.add_reader(fd, self._on_readable)

    def _close(self) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
        if self._ser is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                self._ser.close()
        self._ser = self._fd = None

    def _device_error(self, exc: BaseException) -> None:
        self.stats.device_errors += 1
        if not self._failing:
            self._failing = True
            log.warning(
                "RFID reader %s: %s (closed; reopening every %g s)",
                self.settings.device,
                exc,
                self.settings.reopen_s,
            )
        self._close()

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
        self._received(data, self._clock())

    def _received(self, data: bytes, now: float) -> None:
        stats = self.parser.stats
        refused = stats.bad_checksum + stats.malformed
        tags = self.parser.feed(data)
        if stats.bad_checksum + stats.malformed > refused:
            # Debug only: a card entering or leaving the field garbles frames as a matter of
            # course; the counters say whether a line is really bad.
            log.debug("RFID reader %s: damaged frame refused (%s)", self.settings.device, stats)
        for tag in tags:
            if not self._debouncer.seen(tag, now):
                continue
            self.stats.reads += 1
            log.debug("RFID reader %s: tag %s", self.settings.device, tag)
            if len(self._reads) >= MAX_PENDING_READS:
                self.stats.dropped += 1
                del self._reads[0]
            self._reads.append(TagRead(tag, now))


def open_reader(url: str, *, clock: Clock | None = None) -> Rdm6300Reader:
    """The registry's entry point: ``rdm6300:///dev/ttyS0?baud=9600[&reopen=1s]``; ``clock``
    stamps the reads (default ``time.monotonic``). Opens nothing until ``start()``."""
    settings = parse_url(url)
    return Rdm6300Reader(settings, clock=time.monotonic if clock is None else clock)
