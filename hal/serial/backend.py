"""The host side of the serial pilot board as the HAL: ``serial:///dev/ttyAMA0?baud=115200``.

This module's one job is the adapter: present a pilot/contactor board on a UART as the
station's ``Hardware`` (``SerialBoard``, with one ``SerialPort`` per port as PilotDriver,
Contactor, GroundMonitor and Meter) without ever blocking the station loop. What the ports
read is the board's latest status, kept in memory; what they command goes out at once.
``open_hardware`` is the registry's entry point. Protocol and safety rules:
``docs/serial-protocol.md``.

The parts it joins, one job each: ``hal.serial.settings`` (the URL and its checks),
``hal.serial.link`` (the transport: device, frames, retries, heartbeats; ``SerialBoard`` is a
``SerialLink``), ``hal.serial.state`` (what the board reported and lacks, when it is lost).

Board lost (no valid status for ``lost`` seconds, default 0.5 s, or a board reporting another
port count than the station's): every port's pilot reads as an error (NaN volts, outside every
J1772 band), so the port machines open and stop offering. The contactor feedback then reads
*closed* for as long as the board may still hold a contactor closed without the host seeing it:
until the board's own heartbeat watchdog must have opened it (the moment the last heartbeat
was on the wire + the watchdog time + a margin). Heartbeats are only sent after a valid status
was accepted and while one keeps arriving, so a board the host has never heard is never armed
and that moment is never far off (docs/serial-protocol.md, "Board lost").

The names that lived here before the split (``LinkSettings``, ``parse_url``, ``LinkStats``,
the timing constants...) are still importable from here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from hal.interfaces import BackendContext, MeterReading, PilotSample, PortHardware, leave_safe
from hal.registry import BackendError
from hal.serial.link import LinkStats, SerialLink, Slot
from hal.serial.protocol import (
    CA_PER_A,
    CURRENT_NONE,
    MAX_PORTS,
    PERMILLE_PER_PCT,
    Message,
    Output,
    ResetGfci,
    Status,
)
from hal.serial.settings import (
    BITS_PER_BYTE,
    MAX_SCHEDULE_SHARE,
    RENEW_PERIODS,
    WATCHDOG_MARGIN_S,
    WELD_DETECT_DEFAULT_S,
    LinkSettings,
    check_line_capacity,
    parse_url,
    schedule_bytes,
)
from hal.serial.state import PILOT_INVALID, BoardState, discrete

__all__ = [
    "BITS_PER_BYTE",
    "MAX_SCHEDULE_SHARE",
    "RENEW_PERIODS",
    "WATCHDOG_MARGIN_S",
    "WELD_DETECT_DEFAULT_S",
    "LinkSettings",
    "LinkStats",
    "SerialBoard",
    "SerialPort",
    "check_line_capacity",
    "open_hardware",
    "parse_url",
    "schedule_bytes",
]

log = logging.getLogger("ampshare.serial")


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
        self._board.set_pilot(self.index, Output.PWM, round(duty_pct * PERMILLE_PER_PCT))

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
        self._amps, self._amps_at = current_ca / CA_PER_A, at


class _Jumper:
    def __init__(self, board: SerialBoard, configured: bool) -> None:
        self._board = board
        self._configured = configured

    def installed(self) -> bool:
        # Until the board has reported, the configured value: the ports are held open by the
        # unknown pilot anyway, and a spurious "jumper mismatch" would only confuse.
        status = self._board.last_status
        return self._configured if status is None else status.jumper


class SerialBoard(SerialLink):
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
        super().__init__(settings, clock)
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
        self._state = BoardState(len(self._ports), self.stats, settings.device)
        self._offset: float | None = None  # station time - clock
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
        self._start_link()
        deadline = self._clock() + self.settings.lost_s
        while self._fd is not None and self.last_status is None and self._clock() < deadline:
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """Command every port safe, wait briefly for the board to take it, release the device.

        The board's watchdog opens everything anyway once the heartbeats stop.
        """
        leave_safe(self._hardware)
        deadline = self._clock() + max(0.5, 3 * self.settings.ack_s)
        while self._fd is not None and self._pending and self._clock() < deadline:
            await asyncio.sleep(0.005)
        await self._stop_link()

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
    def last_status(self) -> Status | None:
        """The last status the board sent that the host accepted (None before the first)."""
        return self._state.last_status

    @property
    def lost(self) -> bool:
        """No valid status for ``lost`` seconds (or none yet), or a board reporting another
        port count than the station's. A closed device counts the same way, from the last
        status: the board may well be alive behind an unplugged adapter, and the "maybe closed"
        window (docs: "Board lost") is measured from there."""
        return self._state.is_lost(self._clock(), self.settings.lost_s)

    def pilot_sample(self, index: int) -> PilotSample:
        if self._state.last_status is None or self.lost:
            return PILOT_INVALID
        return self._state.reported_pilot(index)

    def contactor_feedback(self, index: int) -> bool:
        status = self._state.last_status
        if status is not None and not self.lost:
            return status.ports[index].contactor_fb
        # Lost: closed for as long as the board may hold it closed unseen.
        if not self._state.maybe_closed(index):
            return False
        if not self.may_have_armed:
            return False  # never armed by this host, and the board refuses to close unarmed
        return self._clock() < self.safe_at()

    def safe_at(self) -> float:
        """When the board's watchdog must have opened everything, on the clock (if it has not
        been heard since the last heartbeat was sent): the moment that heartbeat was wholly on
        the wire + the watchdog + a margin. Never, while a heartbeat waits in the transmit
        queue: it may still go out and arm the board."""
        return self.armed_until(self._state.watchdog_in_force(self.settings.watchdog_s))

    # --- commands from the ports --------------------------------------------------------

    def set_pilot(self, index: int, output: Output, duty_permille: int) -> None:
        self.command((index, "pilot"), self._state.want_pilot_as(index, output, duty_permille))

    def set_contactor(self, index: int, closed: bool) -> None:
        self.command((index, "contactor"), self._state.want_contactor(index, closed))

    # --- the link's hooks: what the board's statuses mean -------------------------------

    def _status(self, seq: int, status: Status) -> None:
        now = self._clock()
        previous = self._state.last_status
        if not self._state.accept(seq, status, now, self._ask_status):
            return
        for port, reported in zip(self._ports, status.ports, strict=True):
            port._measured(reported.current_ca, now)
        self._state.settle_closes(self._pending)
        if status.safe and self._may_heartbeat(now):
            self._send_heartbeat(now)  # re-arm before reconciling energising commands
        self._reconcile(now)
        if self.on_input_change is not None and discrete(previous) != discrete(status):
            self.on_input_change()

    def _reconcile(self, now: float) -> None:
        """Resend what the board's report shows it lacks, once per slot until it is
        acknowledged (and not while a refused or abandoned one backs off)."""
        for slot, msg in self._state.lacking():
            self._resend(slot, msg, now)

    def _resend(self, slot: Slot, msg: Message, now: float) -> None:
        if slot in self._pending or self._backoff.get(slot, 0.0) > now:
            return
        self.stats.reconciled += 1
        self.command(slot, msg)

    def _may_heartbeat(self, now: float) -> bool:
        # A heartbeat arms the board. Only once a valid status from this board on this opening
        # of the device was accepted, and while statuses keep coming: a board the host has
        # never heard, or cannot hear, must never be armed, or must fall back to its watchdog
        # soon (docs: "Board lost").
        return self._state.heard_since(self._opened_at, now, self.settings.renew_s)

    def _device_opened(self) -> None:
        self._state.last_event_seq = None  # maybe another board, or the same one restarted

    def _check_lost(self, now: float) -> bool:
        lost = self.lost
        if self._state.went_lost(lost):
            self._pending.clear()  # nothing to retry into the void; reconciled on return
            # Nothing queued may reach the board late, a stale heartbeat least of all.
            self._drop_tx()
            status_at = self._state.status_at
            log.warning(
                "board lost: %s%s; ports held open, heartbeats stopped",
                "it reports another port count"
                if self._state.wrong_board
                else f"no status for {now - (status_at or now):.2f} s",
                "" if self._fd is not None else " (device closed)",
            )
        return lost


def open_hardware(url: str, context: BackendContext) -> SerialBoard:
    """``serial:///dev/ttyAMA0?baud=115200``: the station's pilot board on a serial line.

    From ``context``: the ports (wire port i is the i-th), their voltages (for the power and
    energy computed from the board's current readings), the jumper (the configured value,
    reported until the board has said otherwise) and the port machine's weld detection time
    (else the URL's ``weld_detect``, default 0.5 s). Raises ``BackendError`` for a bad URL or
    a baud rate too slow for the heartbeat schedule.
    """
    return SerialBoard(
        parse_url(url),
        context.port_ids,
        context.voltage_v,
        jumper=context.jumper,
        weld_detect_s=context.weld_detect_s,
    )
