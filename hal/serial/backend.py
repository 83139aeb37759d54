"""The host side of the serial pilot board: ``serial:///dev/ttyAMA0?baud=115200``.

Its one job is to present a pilot/contactor board on a UART as the HAL (``Hardware`` with one
``PortHardware`` per port) without ever blocking the station loop: the latest status the board
reported is kept in memory, commands go out at once and are retried until acknowledged, and a
background task sends heartbeats, polls the status, resends what the board lost and decides
when the board is lost. Protocol and safety rules: ``docs/serial-protocol.md``.

I/O model: pyserial opens and configures the device (baud, 8N1, raw, exclusive lock); the
asyncio loop watches its file descriptor (``loop.add_reader``) and reads and writes it without
blocking. No thread: the reader runs on the loop's thread as soon as bytes arrive, so the HAL
getters the station calls are plain attribute reads, with no lock and no hand-over latency.
That needs a POSIX serial port (Linux: a Raspberry Pi's UART, a USB adapter, a pty), which is
where this backend runs; pyserial-asyncio would do the same and is one more dependency.

Board lost (no valid status for ``lost`` seconds, default 0.5 s, or a board reporting another
port count than the station's): every port's pilot reads as an error (NaN volts, outside every
J1772 band), so the port machines open and stop offering. The contactor feedback then reads
*closed* for as long as the board may still hold a contactor closed without the host seeing it:
until the board's own heartbeat watchdog must have opened it (the moment the last heartbeat
was on the wire + the watchdog time + a margin). Heartbeats are only sent after a valid status
was accepted and while one keeps arriving, so a board the host has never heard is never armed
and that moment is never far off (docs/serial-protocol.md, "Board lost").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import serial

from hal.interfaces import MeterReading, PilotSample, PortHardware
from hal.registry import BackendError
from hal.serial.protocol import (
    CURRENT_NONE,
    LOW_NONE,
    MAX_PORTS,
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

log = logging.getLogger("ampshare.serial")

# Heartbeats are sent only while a status was received within this many heartbeat periods.
# It bounds how long a board the host cannot hear stays armed (docs: "Board lost").
RENEW_PERIODS = 3
# Added to "last heartbeat on the wire + watchdog" before the host trusts that the board has
# opened: the board's own watchdog tick and frame handling (design margin).
WATCHDOG_MARGIN_S = 0.05
# The port machine's default weld detection time (firmware.port.PortConfig.weld_detect_s; this
# backend may not import firmware, so the value is repeated and a test keeps the two equal):
# a "maybe closed" window longer than this makes a lost board look like a weld (docs).
WELD_DETECT_DEFAULT_S = 0.5
# 8N1: a start bit, 8 data bits and a stop bit per byte (docs: "Physical layer").
BITS_PER_BYTE = 10
# The heartbeat-and-poll schedule may fill at most this share of the line in either direction;
# the rest is for events, commands and retries (design margin).
MAX_SCHEDULE_SHARE = 0.5
# A line error episode is over after this many good frames in a row (about a second).
_CLEAN_FRAMES = 20
# The transmit queue never holds more than this; a board that does not read gets nothing.
_TX_LIMIT = 4096
_PILOT_INVALID = PilotSample(math.nan, None)
_HEARTBEAT_BYTES = len(encode(Heartbeat(1), 0))
_STATE_C_CV = 600  # SAE J1772 Table 3: state C, +6 V (in 0.01 V)
_BAND_CV = 100  # SAE J1772 Table 3: +-1 V

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*$")


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """The URL's query parameters (docs/serial-protocol.md, "Backend URL")."""

    device: str
    baud: int = 115200
    heartbeat_s: float = 0.1  # heartbeat and status poll period
    watchdog_s: float = 0.5  # asked of the board in every heartbeat
    lost_s: float = 0.5  # no status for this long: board lost
    ack_s: float = 0.05  # a command not acknowledged within this is sent again
    retries: int = 5  # resends of one command before giving up on it
    gap_s: float = 0.05  # an idle line ends a partial frame (it will never complete)
    reopen_s: float = 1.0  # retry period for a device that cannot be opened
    weld_detect_s: float = WELD_DETECT_DEFAULT_S  # the station port machine's weld_detect_s

    @property
    def renew_s(self) -> float:
        return RENEW_PERIODS * self.heartbeat_s

    @property
    def byte_s(self) -> float:
        """Line time of one byte at the configured baud (8N1)."""
        return BITS_PER_BYTE / self.baud

    @property
    def maybe_closed_window_s(self) -> float:
        """The longest time a lost board's contactor reads "maybe closed" after the port
        machines see the board lost (docs/serial-protocol.md, "Board lost")."""
        return self.renew_s + self.watchdog_s + WATCHDOG_MARGIN_S - self.lost_s


def _seconds(name: str, text: str) -> float:
    match = _DURATION.match(text)
    if match is None:
        raise BackendError(f"serial:// {name}={text!r} is not a duration (e.g. 0.5, 500ms, 2s)")
    value = float(match.group(1))
    return value / 1000.0 if match.group(2) == "ms" else value


def parse_url(url: str) -> LinkSettings:
    """``serial:///dev/ttyAMA0?baud=115200&heartbeat=100ms&watchdog=500ms&lost=500ms...``

    The line's capacity for the heartbeat schedule is checked when the board is opened
    (``SerialBoard``), which knows the port count.
    """
    parts = urlsplit(url)
    if parts.scheme != "serial" or not parts.path or parts.netloc:
        raise BackendError(f"{url!r}: expected serial:///path/to/device[?baud=115200&...]")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    known = {"baud", "heartbeat", "watchdog", "lost", "ack", "retries", "gap", "weld_detect"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise BackendError(
            f"{url!r}: unknown parameter {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
    kwargs: dict[str, Any] = {"device": parts.path}
    if "baud" in query:
        if not query["baud"].isdigit() or int(query["baud"]) <= 0:
            raise BackendError(f"{url!r}: baud={query['baud']!r} is not a positive integer")
        kwargs["baud"] = int(query["baud"])
    if "retries" in query:
        if not query["retries"].isdigit():
            raise BackendError(f"{url!r}: retries={query['retries']!r} is not an integer >= 0")
        kwargs["retries"] = int(query["retries"])
    for key, attr in (("heartbeat", "heartbeat_s"), ("watchdog", "watchdog_s"), ("ack", "ack_s")):
        if key in query:
            kwargs[attr] = _seconds(key, query[key])
    if "gap" in query:
        kwargs["gap_s"] = _seconds("gap", query["gap"])
    if "weld_detect" in query:
        kwargs["weld_detect_s"] = _seconds("weld_detect", query["weld_detect"])
    if "lost" in query:
        kwargs["lost_s"] = _seconds("lost", query["lost"])
    elif "watchdog" in query:
        kwargs["lost_s"] = kwargs["watchdog_s"]  # see the docs: keeps the weld window short
    settings = LinkSettings(**kwargs)
    if not 0.1 <= settings.watchdog_s <= 60.0:
        raise BackendError(f"{url!r}: watchdog must be within 100ms..60s")
    if not 0.01 <= settings.heartbeat_s <= settings.watchdog_s / RENEW_PERIODS:
        raise BackendError(
            f"{url!r}: heartbeat must be within 10ms..watchdog/{RENEW_PERIODS} "
            "(several heartbeats per watchdog time)"
        )
    if not settings.renew_s < settings.lost_s:
        raise BackendError(f"{url!r}: lost must be longer than {RENEW_PERIODS} heartbeats")
    if not 0.001 <= settings.ack_s <= 1.0 or not 0.001 <= settings.gap_s <= 1.0:
        raise BackendError(f"{url!r}: ack and gap must be within 1ms..1s")
    if not 0.01 <= settings.weld_detect_s <= 60.0:
        raise BackendError(f"{url!r}: weld_detect must be within 10ms..60s")
    return settings


def schedule_bytes(ports: int) -> tuple[int, int]:
    """Bytes one heartbeat period puts on the line (host -> board, board -> host): a
    heartbeat and a status request out; their acknowledgement and a status back."""
    out = len(encode(Heartbeat(1), 0)) + len(encode(ReadStatus(), 0))
    idle = PortStatus(0, LOW_NONE, Output.STEADY, 0, False, False, False, True, 0)
    status = Status(0, False, True, 0, 0, 0, (idle,) * ports)
    back = len(encode(Ack(int(AckCode.OK)), 0)) + len(encode(status, 0))
    return out, back


def check_line_capacity(settings: LinkSettings, ports: int) -> None:
    """Refuse a baud rate too slow for the heartbeat-and-poll schedule (``BackendError``)."""
    need = max(schedule_bytes(ports))
    capacity = settings.heartbeat_s / settings.byte_s  # bytes per heartbeat period
    if need <= MAX_SCHEDULE_SHARE * capacity:
        return
    least = math.ceil(need * BITS_PER_BYTE / (MAX_SCHEDULE_SHARE * settings.heartbeat_s))
    raise BackendError(
        f"serial://{settings.device}: baud={settings.baud} is too slow for a heartbeat and a "
        f"{ports}-port status every {settings.heartbeat_s * 1000:g} ms ({need} bytes of "
        f"{capacity:.0f} per period; at most {MAX_SCHEDULE_SHARE:.0%} of the line): use "
        f"baud >= {least} or a longer heartbeat"
    )


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
class _Episode:
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


# Slots of commands that supersede each other: a port's pilot, its contactor, its GFCI reset.
_Slot = tuple[int, str]


class SerialPort:
    """One port of the board: PilotDriver, Contactor, GroundMonitor and Meter in one object."""

    def __init__(self, board: SerialBoard, index: int, port_id: str, voltage_v: float) -> None:
        self._board = board
        self.index = index
        self.id = port_id
        self.voltage_v = voltage_v
        self.energy_wh = 0.0
        self._amps: float | None = None
        self._amps_at: float | None = None

    # PilotDriver
    def pwm(self, duty_pct: float) -> None:
        self._board.set_pilot(self.index, Output.PWM, round(duty_pct * 10))

    def steady(self) -> None:
        self._board.set_pilot(self.index, Output.STEADY, 0)

    def state_f(self) -> None:
        self._board.set_pilot(self.index, Output.F, 0)

    def sample(self) -> PilotSample:
        return self._board.pilot_sample(self.index)

    # Contactor
    def command(self, closed: bool) -> None:
        self._board.set_contactor(self.index, closed)

    def feedback(self) -> bool:
        return self._board.contactor_feedback(self.index)

    # GroundMonitor: before the first status nothing is known, and the pilot then reads as an
    # error anyway (the port is held open); afterwards, the last status the board sent.
    def gfci_tripped(self) -> bool:
        status = self._board.last_status
        return status is not None and status.ports[self.index].gfci

    def ground_ok(self) -> bool:
        status = self._board.last_status
        return status is None or status.ports[self.index].ground_ok

    def reset_gfci(self) -> None:
        self._board.command((self.index, "gfci"), ResetGfci(self.index))

    # Meter: the board's current transformer, if it has one (CURRENT_NONE otherwise).
    def latest(self) -> MeterReading | None:
        if self._amps is None or self._amps_at is None:
            return None
        amps = self._amps
        return MeterReading(
            amps=(amps,),
            volts=(self.voltage_v,),
            power_w=amps * self.voltage_v,
            energy_wh=self.energy_wh,
            timestamp=self._board.station_time(self._amps_at),
        )

    def _measured(self, current_ca: int, at: float) -> None:
        """A new current reading: integrate energy over the interval since the last one.

        Not over a gap longer than ``lost``: nobody knows what flowed while the board was not
        heard, and the last current held over an hour would add phantom kWh."""
        if current_ca == CURRENT_NONE:
            self._amps = self._amps_at = None
            return
        if (
            self._amps is not None
            and self._amps_at is not None
            and 0.0 < at - self._amps_at <= self._board.settings.lost_s
        ):
            self.energy_wh += self._amps * self.voltage_v * (at - self._amps_at) / 3600.0
        self._amps, self._amps_at = current_ca / 100.0, at


class _Jumper:
    def __init__(self, board: SerialBoard, configured: bool) -> None:
        self._board = board
        self._configured = configured

    def installed(self) -> bool:
        # Until the board has reported, the configured value: the ports are held open by the
        # unknown pilot anyway, and a spurious "jumper mismatch" would only confuse.
        status = self._board.last_status
        return self._configured if status is None else status.jumper


class SerialBoard:
    """A pilot/contactor board on a serial line, as the station's ``Hardware``."""

    def __init__(
        self,
        settings: LinkSettings,
        port_ids: Sequence[str],
        voltage_v: Sequence[float],
        *,
        jumper: bool = False,
        clock: Callable[[], float] = time.monotonic,
        weld_detect_s: float | None = None,
    ) -> None:
        """``weld_detect_s``: the station port machine's weld detection time, when the caller
        knows it (it overrides the URL's ``weld_detect``, default 0.5 s as the port machine's)."""
        if not 1 <= len(port_ids) <= MAX_PORTS:
            raise BackendError(f"a serial board serves 1..{MAX_PORTS} ports, not {len(port_ids)}")
        if weld_detect_s is not None:
            settings = replace(settings, weld_detect_s=weld_detect_s)
        check_line_capacity(settings, len(port_ids))
        self.settings = settings
        self._clock = clock
        if settings.maybe_closed_window_s >= settings.weld_detect_s:
            log.warning(
                "%s: a lost board may read closed for %.2f s after the ports open, longer than "
                "the port machine's weld detection (%g s): a board lost while charging would "
                "lock the port out as a weld; lower watchdog or raise lost",
                settings.device,
                settings.maybe_closed_window_s,
                settings.weld_detect_s,
            )
        self._ports = [
            SerialPort(self, i, pid, v)
            for i, (pid, v) in enumerate(zip(port_ids, voltage_v, strict=True))
        ]
        self._hardware = tuple(PortHardware(p, p, p, p) for p in self._ports)
        self._jumper = _Jumper(self, jumper)
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
        self._pending: dict[_Slot, _Pending] = {}
        self._backoff: dict[_Slot, float] = {}
        n = len(self._ports)
        self._want_pilot: list[tuple[Output, int] | None] = [None] * n
        self._want_closed: list[bool | None] = [None] * n
        self._close_unconfirmed = [False] * n
        self.last_status: Status | None = None
        self._status_at: float | None = None  # when the last valid status arrived (clock)
        self._opened_at = math.inf  # when the device was last opened (clock)
        self._wrong_board = False  # the last status reported another port count
        # When the last heartbeat was (at the latest) wholly on the wire, on the clock.
        self._last_hb_sent: float | None = None
        self._next_hb = 0.0
        self._last_event_seq: int | None = None
        self._last_byte_at = 0.0
        self._next_open = 0.0
        self._lost = False
        self._lost_since: float | None = None
        self._offset: float | None = None  # station time - clock
        self._errors_seen = 0
        self._clean_frames = 0
        self._line = _Episode("serial line errors, resynchronising")
        self._open_episode = _Episode(f"serial device {settings.device}")
        self._nak_episode = _Episode("board refused commands")
        self._unacked_episode = _Episode("board did not acknowledge commands")
        self._gap_episode = _Episode("board events missed")
        self._wrong_episode = _Episode("wrong board", logging.ERROR)
        # Called (on the loop) whenever the board reports a change of a discrete input or
        # output; a loop that wants to react faster than its period can tick from here.
        self.on_input_change: Callable[[], None] | None = None

    # --- Hardware protocol ------------------------------------------------------------

    @property
    def ports(self) -> Sequence[PortHardware]:
        return self._hardware

    @property
    def jumper(self) -> _Jumper:
        return self._jumper

    async def start(self) -> None:
        """Open the device (or keep trying in the background) and start the link task.

        Waits at most ``lost`` seconds for the first status, so that the station's first tick
        sees the pilot rather than an unknown; a board that is not there is not waited for.
        """
        self._loop = asyncio.get_running_loop()
        self._open()
        self._task = asyncio.create_task(self._housekeeping(), name="serial-board")
        deadline = self._clock() + self.settings.lost_s
        while self._fd is not None and self.last_status is None and self._clock() < deadline:
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """Command every port safe, wait briefly for the board to take it, release the device.

        The board's watchdog opens everything anyway once the heartbeats stop.
        """
        for index in range(len(self._ports)):
            self.set_contactor(index, False)
            self.set_pilot(index, Output.STEADY, 0)
        deadline = self._clock() + max(0.5, 3 * self.settings.ack_s)
        while self._fd is not None and self._pending and self._clock() < deadline:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._close()

    def advance(self, now: float) -> None:
        # Real hardware moves by itself; the station's time is noted to stamp meter readings.
        self._offset = now - self._clock()

    def next_change(self, now: float) -> float | None:
        return None

    # --- what the ports read ----------------------------------------------------------

    def station_time(self, at: float) -> float:
        """A clock reading as station time (the runner's clock differs by a constant)."""
        return at + (self._offset or 0.0)

    @property
    def lost(self) -> bool:
        """No valid status for ``lost`` seconds (or none yet), or a board reporting another
        port count than the station's. A closed device counts the same way, from the last
        status: the board may well be alive behind an unplugged adapter, and the "maybe closed"
        window (docs: "Board lost") is measured from there."""
        return (
            self._wrong_board
            or self._status_at is None
            or self._clock() - self._status_at > self.settings.lost_s
        )

    def pilot_sample(self, index: int) -> PilotSample:
        status = self.last_status
        if status is None or self.lost:
            return _PILOT_INVALID
        port = status.ports[index]
        low = None if port.pilot_low_cv == LOW_NONE else port.pilot_low_cv / 100.0
        return PilotSample(port.pilot_high_cv / 100.0, low)

    def contactor_feedback(self, index: int) -> bool:
        status = self.last_status
        if status is not None and not self.lost:
            return status.ports[index].contactor_fb
        # Lost: closed for as long as the board may hold it closed unseen.
        maybe_closed = self._close_unconfirmed[index] or (
            status is not None
            and (status.ports[index].contactor_fb or status.ports[index].contactor_cmd)
        )
        if not maybe_closed:
            return False
        if self._last_hb_sent is None and self._hb_end is None:
            return False  # never armed by this host, and the board refuses to close unarmed
        return self._clock() < self.safe_at()

    def safe_at(self) -> float:
        """When the board's watchdog must have opened everything, on the clock (if it has not
        been heard since the last heartbeat was sent): the moment that heartbeat was wholly on
        the wire + the watchdog + a margin. Never, while a heartbeat waits in the transmit
        queue: it may still go out and arm the board."""
        if self._hb_end is not None:
            return math.inf
        sent = self._last_hb_sent if self._last_hb_sent is not None else self._clock()
        watchdog = self.settings.watchdog_s
        if self.last_status is not None:
            watchdog = max(watchdog, self.last_status.watchdog_ms / 1000.0)
        return sent + watchdog + WATCHDOG_MARGIN_S

    def link_stats(self) -> dict[str, int]:
        """Every counter of the link: the host's and the frame parser's."""
        counters = {k: getattr(self.stats, k) for k in self.stats.__dataclass_fields__}
        counters.update({f"rx_{k}": v for k, v in self._parser.stats.as_dict().items()})
        return counters

    # --- commands from the ports --------------------------------------------------------

    def set_pilot(self, index: int, output: Output, duty_permille: int) -> None:
        want = (output, duty_permille if output is Output.PWM else 0)
        self._want_pilot[index] = want
        self.command((index, "pilot"), self._pilot_message(index, want))

    def set_contactor(self, index: int, closed: bool) -> None:
        self._want_closed[index] = closed
        if closed:
            self._close_unconfirmed[index] = True
        self.command((index, "contactor"), SetContactor(index, closed))

    def command(self, slot: _Slot, msg: Message) -> None:
        """Send ``msg`` now; it supersedes (and stops the retries of) the slot's last one."""
        self._pending.pop(slot, None)
        if self._fd is None:
            return  # sent on reconnection by reconciling with the board's status
        seq = self._next_seq()
        frame = encode(msg, seq)
        self.stats.commands += 1
        self._pending[slot] = _Pending(seq, frame, self._clock())
        self._write(frame)

    @staticmethod
    def _pilot_message(index: int, want: tuple[Output, int]) -> Message:
        output, duty = want
        if output is Output.PWM:
            return SetPwm(index, duty)
        if output is Output.F:
            return StateF(index)
        return PwmOff(index)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _send(self, msg: Message) -> None:
        self._write(encode(msg, self._next_seq()))

    # --- the device ---------------------------------------------------------------------

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
        self._last_event_seq = None  # maybe another board, or the same one restarted
        assert self._loop is not None
        self._loop.add_reader(fd, self._on_readable)
        # Ask at once: the first status ends the unknown state.
        self._next_hb = now
        self._heartbeat_and_poll(now)

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
        return now + max(backlog - trailing, _HEARTBEAT_BYTES) * self.settings.byte_s

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

    # --- what the board says ------------------------------------------------------------

    def _received(self, frames: list[tuple[int, Message]]) -> None:
        stats = self._parser.stats
        if stats.errors > self._errors_seen:
            self._errors_seen = stats.errors
            self._clean_frames = 0
            self._line.bad(f"parser counters {stats.as_dict()}")
            # Something was lost: an event, an acknowledgement. Ask for the whole state now.
            self._send(ReadStatus())
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

    def _status(self, seq: int, status: Status) -> None:
        now = self._clock()
        if len(status.ports) != len(self._ports):
            # Not this station's board (or a misconfigured one): its statuses are never
            # accepted, so it is lost at once, never armed, and every port held open.
            self.stats.wrong_board += 1
            self._wrong_board = True
            self._wrong_episode.bad(
                f"the board on {self.settings.device} reports {len(status.ports)} ports, the "
                f"station has {len(self._ports)}: treated as lost, never armed, every port "
                "held open"
            )
            return
        self._wrong_board = False
        self._wrong_episode.good()
        previous = self.last_status
        restarted = previous is not None and status.uptime_ms < previous.uptime_ms
        if restarted:
            log.warning("the board restarted (uptime %.1f s)", status.uptime_ms / 1000.0)
            self._last_event_seq = None  # its event numbering starts over
        if isinstance(status, Event):
            self.stats.events += 1
            if self._last_event_seq is not None:
                missed = (seq - self._last_event_seq - 1) & 0xFF
                if missed:
                    self.stats.event_gaps += missed
                    self._gap_episode.bad(f"{missed} event(s) missed before #{seq}")
                    self._send(ReadStatus())
                else:
                    self._gap_episode.good()
            self._last_event_seq = seq
        else:
            self.stats.statuses += 1
        trips_before = 0 if previous is None or restarted else previous.watchdog_trips
        if previous is not None and status.watchdog_trips != trips_before:
            self.stats.board_trips += (status.watchdog_trips - trips_before) & 0xFFFF
            log.warning("the board's heartbeat watchdog tripped: it made every port safe")
        if self._lost_since is not None:
            log.info("board back after %.2f s without a status", now - self._lost_since)
            self._lost_since = None
        self._lost = False
        self.last_status = status
        self._status_at = now
        for port, reported in zip(self._ports, status.ports, strict=True):
            port._measured(reported.current_ca, now)
            if (port.index, "contactor") not in self._pending:
                # Every close sent before this status has been taken (or refused) by now:
                # the board's own report is the truth again.
                self._close_unconfirmed[port.index] = False
        if status.safe and self._may_heartbeat(now):
            self._send_heartbeat(now)  # re-arm before reconciling energising commands
        self._reconcile(now)
        if self.on_input_change is not None and _discrete(previous) != _discrete(status):
            self.on_input_change()

    def _reconcile(self, now: float) -> None:
        """Resend what the board's report shows it lacks (a lost command, a board that reset
        or was made safe by its watchdog), once per slot until it is acknowledged."""
        status = self.last_status
        if status is None:
            return
        for index, reported in enumerate(status.ports):
            want = self._want_pilot[index]
            if want is not None:
                duty = reported.duty_permille if reported.output == Output.PWM else 0
                if (reported.output, duty) != (int(want[0]), want[1]):
                    self._resend((index, "pilot"), self._pilot_message(index, want), now)
            closed = self._want_closed[index]
            if closed is None or reported.contactor_cmd == closed:
                continue
            # J1772: close only in C with PWM on. The port machine checked that when it asked;
            # a resend checks it again against the board's present report (after a board
            # reset the EV may have left C), and otherwise leaves it to the next tick.
            in_c = abs(reported.pilot_high_cv - _STATE_C_CV) <= _BAND_CV
            if closed and not (in_c and reported.output == Output.PWM):
                continue
            self._resend((index, "contactor"), SetContactor(index, closed), now)

    def _resend(self, slot: _Slot, msg: Message, now: float) -> None:
        if slot in self._pending or self._backoff.get(slot, 0.0) > now:
            return
        self.stats.reconciled += 1
        self.command(slot, msg)

    # --- the background task ------------------------------------------------------------

    def _may_heartbeat(self, now: float) -> bool:
        # A heartbeat arms the board. Only once a valid status from this board on this opening
        # of the device was accepted, and while statuses keep coming: a board the host has
        # never heard, or cannot hear, must never be armed, or must fall back to its watchdog
        # soon (docs: "Board lost").
        return (
            self._status_at is not None
            and not self._wrong_board
            and self._status_at >= self._opened_at
            and now - self._status_at < self.settings.renew_s
        )

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

    async def _housekeeping(self) -> None:
        tick = min(0.01, self.settings.ack_s / 2)
        while True:
            try:
                self._housekeeping_once(self._clock())
            except Exception:  # never let one bad turn end the link
                log.exception("serial link housekeeping failed")
            await asyncio.sleep(tick)

    def _housekeeping_once(self, now: float) -> None:
        lost = self.lost
        if lost and not self._lost and self.last_status is not None:
            self._lost = True
            self._lost_since = self._status_at
            self.stats.lost += 1
            self._pending.clear()  # nothing to retry into the void; reconciled on return
            # Nothing queued may reach the board late, a stale heartbeat least of all.
            self._drop_tx()
            log.warning(
                "board lost: %s%s; ports held open, heartbeats stopped",
                "it reports another port count"
                if self._wrong_board
                else f"no status for {now - (self._status_at or now):.2f} s",
                "" if self._fd is not None else " (device closed)",
            )
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


def _discrete(status: Status | None) -> object:
    if status is None:
        return None
    return (
        status.jumper,
        status.safe,
        tuple(
            (
                p.pilot_high_cv // 100,
                p.pilot_low_cv == LOW_NONE,
                p.output,
                p.contactor_fb,
                p.gfci,
                p.ground_ok,
            )
            for p in status.ports
        ),
    )


def open_hardware(url: str, **context: Any) -> SerialBoard:
    """``serial:///dev/ttyAMA0?baud=115200``: the station's pilot board on a serial line.

    The station passes ``port_ids`` (wire port i is the i-th), ``voltage_v`` (for the power
    and energy computed from the board's current readings) and ``jumper`` (the configured
    value, reported until the board has said otherwise); optionally ``weld_detect_s`` (its
    port machine's weld detection time, else the URL's ``weld_detect``, default 0.5 s).
    ``evs`` is for ``sim://`` only. Raises ``BackendError`` for a bad URL or a baud rate too
    slow for the heartbeat schedule.
    """
    settings = parse_url(url)
    port_ids = list(context["port_ids"])
    volts = context.get("voltage_v", 208.0)
    voltages = (
        [float(volts)] * len(port_ids)
        if isinstance(volts, int | float)
        else [float(v) for v in volts]
    )
    weld = context.get("weld_detect_s")
    return SerialBoard(
        settings,
        port_ids,
        voltages,
        jumper=bool(context.get("jumper", False)),
        weld_detect_s=None if weld is None else float(weld),
    )
