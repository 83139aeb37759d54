"""The host's model of the board: what it last reported, what the station wants of it.

This module's one job is to keep that model and say what follows from it, without I/O
(docs/serial-protocol.md, "What the host does" and "Board lost"): accept or refuse each status
(a board reporting another port count than the station's is never accepted; a restart, missed
events and watchdog trips are noticed and logged), say when the board is lost, what each
port's pilot reads (an error while lost), whether a contactor may still be closed unseen, and
which commands the board's report shows it lacks (reconciliation). Pilot states are
``hal.pilot``'s (SAE J1772 Table 3), never a band of this module's own.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Container, Iterator

from hal.interfaces import PilotSample
from hal.pilot import PilotError, PilotState, state_from_high_voltage
from hal.serial.link import Episode, LinkStats, Slot
from hal.serial.protocol import (
    CV_PER_V,
    LOW_NONE,
    SEQ_MASK,
    TRIPS_MASK,
    Event,
    Message,
    Output,
    PwmOff,
    SetContactor,
    SetPwm,
    StateF,
    Status,
)

__all__ = ["PILOT_INVALID", "BoardState", "discrete", "pilot_in_c", "pilot_message"]

log = logging.getLogger("ampshare.serial")

# What a port's pilot reads while the board is lost or not heard yet: NaN volts are outside
# every SAE J1772 band (hal.pilot.state_from_high_voltage refuses them), so the port machine
# goes to E and holds the port open.
PILOT_INVALID = PilotSample(math.nan, None)

# What the station asks of a port's pilot: the generator's output and its duty (0 unless PWM).
Want = tuple[Output, int]


def pilot_in_c(pilot_high_cv: int) -> bool:
    """Whether a reported positive plateau (0.01 V) is in state C (SAE J1772 Table 3, by
    ``hal.pilot.state_from_high_voltage``); a plateau outside every band is not."""
    try:
        return state_from_high_voltage(pilot_high_cv / CV_PER_V) is PilotState.C
    except PilotError:
        return False


def pilot_message(index: int, want: Want) -> Message:
    """The command that puts port ``index``'s pilot where the station wants it."""
    output, duty = want
    if output is Output.PWM:
        return SetPwm(index, duty)
    if output is Output.F:
        return StateF(index)
    return PwmOff(index)


def discrete(status: Status | None) -> object:
    """The discrete inputs and outputs of a status: a change of any of them is worth an early
    tick of the station (``SerialBoard.on_input_change``); a change of current is not."""
    if status is None:
        return None
    return (
        status.jumper,
        status.safe,
        tuple(
            (
                # Floored to whole volts: a change of pilot state (nominal plateaus 3 V apart
                # or more, SAE J1772 Table 3) always shows; most measurement noise does not.
                p.pilot_high_cv // CV_PER_V,
                p.pilot_low_cv == LOW_NONE,
                p.output,
                p.contactor_fb,
                p.gfci,
                p.ground_ok,
            )
            for p in status.ports
        ),
    )


class BoardState:
    """The board as last reported and as wanted, for a station of ``port_count`` ports."""

    def __init__(self, port_count: int, stats: LinkStats, device: str) -> None:
        self.port_count = port_count
        self.stats = stats  # the link's counters: statuses, events, trips... are counted here
        self._device = device
        self.last_status: Status | None = None
        self.status_at: float | None = None  # when the last valid status arrived (clock)
        self.wrong_board = False  # the last status reported another port count
        self.last_event_seq: int | None = None
        self.declared_lost = False
        self.lost_since: float | None = None
        self.want_pilot: list[Want | None] = [None] * port_count
        self.want_closed: list[bool | None] = [None] * port_count
        # A close was sent and no status since has shown the board's answer to it.
        self.close_unconfirmed = [False] * port_count
        self._gap_episode = Episode("board events missed")
        self._wrong_episode = Episode("wrong board", logging.ERROR)

    # --- what the station asks ------------------------------------------------------------

    def want_pilot_as(self, index: int, output: Output, duty_permille: int) -> Message:
        """Note what the station wants of a port's pilot; the command that asks for it."""
        want = (output, duty_permille if output is Output.PWM else 0)
        self.want_pilot[index] = want
        return pilot_message(index, want)

    def want_contactor(self, index: int, closed: bool) -> Message:
        """Note what the station wants of a port's contactor; the command that asks for it."""
        self.want_closed[index] = closed
        if closed:
            self.close_unconfirmed[index] = True
        return SetContactor(index, closed)

    # --- what the board says --------------------------------------------------------------

    def accept(self, seq: int, status: Status, now: float, ask_status: Callable[[], None]) -> bool:
        """Take a status (or event) that arrived at ``now``; False if it is refused (another
        port count: the board is then lost at once, never armed). ``ask_status`` is called
        when events were missed, to get the whole state at once."""
        if len(status.ports) != self.port_count:
            # Not this station's board (or a misconfigured one): its statuses are never
            # accepted, so it is lost at once, never armed, and every port held open.
            self.stats.wrong_board += 1
            self.wrong_board = True
            self._wrong_episode.bad(
                f"the board on {self._device} reports {len(status.ports)} ports, the "
                f"station has {self.port_count}: treated as lost, never armed, every port "
                "held open"
            )
            return False
        self.wrong_board = False
        self._wrong_episode.good()
        previous = self.last_status
        restarted = previous is not None and status.uptime_ms < previous.uptime_ms
        if restarted:
            log.warning("the board restarted (uptime %.1f s)", status.uptime_ms / 1000.0)
            self.last_event_seq = None  # its event numbering starts over
        if isinstance(status, Event):
            self.stats.events += 1
            if self.last_event_seq is not None:
                missed = (seq - self.last_event_seq - 1) & SEQ_MASK
                if missed:
                    self.stats.event_gaps += missed
                    self._gap_episode.bad(f"{missed} event(s) missed before #{seq}")
                    ask_status()
                else:
                    self._gap_episode.good()
            self.last_event_seq = seq
        else:
            self.stats.statuses += 1
        trips_before = 0 if previous is None or restarted else previous.watchdog_trips
        if previous is not None and status.watchdog_trips != trips_before:
            self.stats.board_trips += (status.watchdog_trips - trips_before) & TRIPS_MASK
            log.warning("the board's heartbeat watchdog tripped: it made every port safe")
        if self.lost_since is not None:
            log.info("board back after %.2f s without a status", now - self.lost_since)
            self.lost_since = None
        self.declared_lost = False
        self.last_status = status
        self.status_at = now
        return True

    def settle_closes(self, pending: Container[Slot]) -> None:
        """After an accepted status: every close sent before it and no longer pending has been
        taken (or refused) by now, so the board's own report is the truth again."""
        for index in range(self.port_count):
            if (index, "contactor") not in pending:
                self.close_unconfirmed[index] = False

    def lacking(self) -> Iterator[tuple[Slot, Message]]:
        """What the last status shows the board lacks (a lost command, a board that reset or
        was made safe by its watchdog): the command for each such slot."""
        status = self.last_status
        if status is None:
            return
        for index, reported in enumerate(status.ports):
            want = self.want_pilot[index]
            if want is not None:
                duty = reported.duty_permille if reported.output == Output.PWM else 0
                if (reported.output, duty) != (int(want[0]), want[1]):
                    yield (index, "pilot"), pilot_message(index, want)
            closed = self.want_closed[index]
            if closed is None or reported.contactor_cmd == closed:
                continue
            # J1772: close only in C with PWM on. The port machine checked that when it asked;
            # a resend checks it again against the board's present report (after a board
            # reset the EV may have left C), and otherwise leaves it to the next tick.
            if closed and not (
                pilot_in_c(reported.pilot_high_cv) and reported.output == Output.PWM
            ):
                continue
            yield (index, "contactor"), SetContactor(index, closed)

    # --- what follows -----------------------------------------------------------------------

    def is_lost(self, now: float, lost_s: float) -> bool:
        """No valid status for ``lost_s`` (or none yet), or a board reporting another port
        count than the station's."""
        return self.wrong_board or self.status_at is None or now - self.status_at > lost_s

    def went_lost(self, lost: bool) -> bool:
        """Whether the board has just become lost (counted once per loss; a board never heard
        is not "lost")."""
        if lost and not self.declared_lost and self.last_status is not None:
            self.declared_lost = True
            self.lost_since = self.status_at
            self.stats.lost += 1
            return True
        return False

    def heard_since(self, opened_at: float, now: float, renew_s: float) -> bool:
        """A valid status from this board arrived since the device was opened at
        ``opened_at``, and within ``renew_s`` of ``now``: the condition for a heartbeat."""
        return (
            self.status_at is not None
            and not self.wrong_board
            and self.status_at >= opened_at
            and now - self.status_at < renew_s
        )

    def reported_pilot(self, index: int) -> PilotSample:
        """Port ``index``'s pilot as last reported (there must be a status)."""
        assert self.last_status is not None
        port = self.last_status.ports[index]
        low = None if port.pilot_low_cv == LOW_NONE else port.pilot_low_cv / CV_PER_V
        return PilotSample(port.pilot_high_cv / CV_PER_V, low)

    def maybe_closed(self, index: int) -> bool:
        """Whether port ``index``'s contactor may be closed, by what was reported and sent."""
        status = self.last_status
        return self.close_unconfirmed[index] or (
            status is not None
            and (status.ports[index].contactor_fb or status.ports[index].contactor_cmd)
        )

    def watchdog_in_force(self, asked_s: float) -> float:
        """The board's watchdog time: what the host asks, or longer if the board reports so."""
        watchdog = asked_s
        if self.last_status is not None:
            watchdog = max(watchdog, self.last_status.watchdog_ms / 1000.0)
        return watchdog
