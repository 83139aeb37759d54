"""What the station tells systemd (sd_notify(3)): ready, alive, what it is doing, stopping.

One job: speak systemd's notification protocol for ``ampshare run`` under a ``Type=notify``
unit (``deploy/ampshare.service``), without libsystemd: one datagram per message to the
AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` is the abstract namespace),
newline-separated ``KEY=VALUE`` lines. Without the variable nothing is sent. Nothing here
raises into the control loop: a failed send is logged once and retried on the next tick.

What is said, and when (``StationNotifier``, fed each completed tick by the runner's hook):

* ``READY=1`` once every port is confirmed safe at start. The runner commands every port safe
  (PWM off, contactor open) right after the hardware starts; a port is confirmed on the first
  tick whose snapshot senses its contactor open, or shows it locked out (pilot F, contactor
  commanded open: a weld, which no restart mends, so waiting longer would only make systemd
  kill and restart a station that is already as safe as it can be). The port machine closes a
  contactor only after a pilot sample taken with PWM on and never while a weld is pending, so
  READY always precedes the first contactor closing; it may share its tick with the first
  offer (PWM) to a vehicle that was plugged in across the restart, which is not energy.
* ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC`` (unless ``$WATCHDOG_PID`` names another
  process), and only from a tick that completed on time: within ``ON_TIME_PERIODS`` loop
  periods of the tick before it (50 ms loop: 100 ms, J1772's contactor-opening bound). The ping
  is sent by the tick itself, not by a timer: a thread would go on pinging while the loop is
  stuck, and an asyncio task would go on pinging while the loop runs but the ticks do not (a
  hardware or service start that never returns, a tick that is late every time because
  something hogs the loop). A loop that is blocked, stalled or persistently late therefore
  goes quiet, and systemd kills and restarts it after ``WatchdogSec=``; a single late tick only
  delays the ping to the next on-time one. systemd arms the watchdog at READY=1, so the
  start-up (before the first tick) is bounded by ``TimeoutStartSec=`` instead.
* ``STATUS=`` a line for ``systemctl status`` ("2 ports, 1 charging at 16 A", "2 ports
  idle", "fallback: no coordinator; ..."), sent when it changes, not every tick.
* ``STOPPING=1`` when the runner begins to leave the ports safe, whatever ended the run.

The firmware's pure core (``controller/``, the port machine) knows nothing of this: it is
shell, called by ``tools/run_cmd.py`` through the runner's hooks.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from firmware.port import Mode
from firmware.station import Snapshot

__all__ = ["ON_TIME_PERIODS", "SdNotify", "StationNotifier", "status_line"]

log = logging.getLogger("ampshare.sdnotify")

# A tick is on time when it completes within this many loop periods of the previous one: at
# the 50 ms real-time period, the 100 ms within which a contactor must open after the pilot
# leaves C (SAE J1772, docs/design.md), which is what a late loop puts at risk.
ON_TIME_PERIODS = 2.0
# systemd.service(5), WatchdogSec=: a service should ping at half the interval.
_PING_FRACTION = 0.5
# Warn when no ping has gone out for this fraction of the interval: the restart is near.
_WARN_FRACTION = 0.75

_CONNECTED = (Mode.B1, Mode.B2, Mode.C1)
_TROUBLE = {
    Mode.FAULT: "fault",
    Mode.LOCKOUT: "locked out",
    Mode.GFCI_WAIT: "GFCI wait",
    Mode.E: "pilot error",
}


class SdNotify:
    """sd_notify(3) over a datagram socket: ``send("READY=1", "STATUS=...")`` is one message.

    ``watchdog_s`` is the watchdog interval systemd asks for (``$WATCHDOG_USEC``), None when
    there is none for this process.
    """

    def __init__(self, address: str | None, *, watchdog_s: float | None = None) -> None:
        self.address = address
        self.watchdog_s = watchdog_s if address is not None else None
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, pid: int | None = None
    ) -> SdNotify:
        """From ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID`` (systemd.exec(5))."""
        env = os.environ if environ is None else environ
        pid = os.getpid() if pid is None else pid
        raw = env.get("NOTIFY_SOCKET", "")
        address: str | None = None
        if raw.startswith("@"):
            address = "\0" + raw[1:]  # the abstract namespace (unix(7))
        elif raw.startswith("/"):
            address = raw
        elif raw:
            log.warning("NOTIFY_SOCKET=%r is not a socket path or @name: not notifying", raw)
        watchdog_s: float | None = None
        usec, owner = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec and (not owner or owner == str(pid)):
            try:
                watchdog_s = int(usec) / 1e6
            except ValueError:
                watchdog_s = None
            if watchdog_s is None or watchdog_s <= 0:
                log.warning("WATCHDOG_USEC=%r is not a positive integer: no watchdog", usec)
                watchdog_s = None
        return cls(address, watchdog_s=watchdog_s)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send one message of ``KEY=VALUE`` fields; False if it did not go (never raises)."""
        if self.address is None or not fields:
            return False
        try:
            if self._sock is None:
                # Non-blocking: a full queue on systemd's side must not stall the tick; the
                # caller keeps what did not go and sends it again on the next tick.
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                shown = self.address.replace("\0", "@", 1)
                log.warning("cannot notify systemd at %s: %s (said once)", shown, exc)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def status_line(snap: Snapshot) -> str:
    """The station in a few words, for ``systemctl status``: it changes when a port's mode,
    offer or fault does, never with a meter reading."""
    count = len(snap.ports)
    head = f"{count} port{'' if count == 1 else 's'}"
    if snap.inhibit is not None:
        return f"{head}, not energizing: {snap.inhibit}"
    charging = [v.offer_a for v in snap.ports if v.mode is Mode.C2]
    waiting = sum(v.mode in _CONNECTED for v in snap.ports)
    parts = []
    if charging:
        amps = " + ".join(f"{a:.1f}".removesuffix(".0") for a in charging)
        parts.append(f"{len(charging)} charging at {amps} A")
    if waiting:
        parts.append(f"{waiting} plugged in, not charging")
    for v in snap.ports:
        if v.mode in _TROUBLE:
            parts.append(f"port {v.id} {_TROUBLE[v.mode]}" + (f" ({v.fault})" if v.fault else ""))
    text = f"{head}, {', '.join(parts)}" if parts else f"{head} idle"
    if any(v.binding == "fallback" for v in snap.ports):
        text = f"fallback: no coordinator; {text}"
    return text


class StationNotifier:
    """The station's side of the protocol: ``ticked`` after every completed tick (the
    runner's ``on_step``), ``stopping`` when the runner begins to leave the ports safe."""

    def __init__(
        self,
        notify: SdNotify,
        *,
        period_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notify = notify
        # Wall seconds: sped-up simulated hardware still ticks every period_s of the wall.
        self.tolerance_s = ON_TIME_PERIODS * period_s
        self.ready = False
        self._monotonic = monotonic
        self._confirmed: set[str] = set()
        self._status: str | None = None
        self._last_tick: float | None = None
        self._last_ping: float | None = None
        self._quiet_since: float | None = None  # the last ping, or the first tick
        self._warned = False
        if notify.enabled:
            interval = notify.watchdog_s
            log.info(
                "systemd notification socket %s%s",
                (notify.address or "").replace("\0", "@", 1),
                ""
                if interval is None
                else f", watchdog {interval:g} s (pinged every {interval * _PING_FRACTION:g} s "
                f"while ticks are on time, {self.tolerance_s * 1000:g} ms apart)",
            )

    @classmethod
    def from_environ(cls, *, period_s: float) -> StationNotifier:
        return cls(SdNotify.from_environ(), period_s=period_s)

    def ticked(self, snap: Snapshot) -> None:
        if not self.notify.enabled:
            return
        now = self._monotonic()
        on_time = self._last_tick is not None and now - self._last_tick <= self.tolerance_s
        self._last_tick = now
        fields: list[str] = []
        if not self.ready:
            self._confirmed.update(
                v.id for v in snap.ports if not v.contactor or v.mode is Mode.LOCKOUT
            )
            if len(self._confirmed) == len(snap.ports):
                fields.append("READY=1")
        status = status_line(snap)
        if status != self._status:
            fields.append(f"STATUS={status}")
        ping = self._ping_due(now) and on_time
        if ping:
            fields.append("WATCHDOG=1")
        if fields and self.notify.send(*fields):
            # Only what went is marked as said: the rest goes again with the next tick.
            self.ready = self.ready or "READY=1" in fields
            self._status = status
            if ping:
                self._last_ping = self._quiet_since = now
                self._warned = False
        if self._quiet_since is None:
            self._quiet_since = now
        self._warn_if_starving(now)

    def stopping(self) -> None:
        self.notify.send("STOPPING=1", "STATUS=stopping: leaving every port safe")

    def _ping_due(self, now: float) -> bool:
        interval = self.notify.watchdog_s
        if interval is None:
            return False
        return self._last_ping is None or now - self._last_ping >= interval * _PING_FRACTION

    def _warn_if_starving(self, now: float) -> None:
        """Say once, in the journal, why systemd is about to restart the station."""
        interval = self.notify.watchdog_s
        since = self._quiet_since
        if interval is None or since is None or self._warned:
            return
        if now - since >= interval * _WARN_FRACTION:
            self._warned = True
            log.warning(
                "no tick on time (within %g ms of the previous one) for %.1f s: the watchdog "
                "is not pinged, and systemd restarts the station %g s after the last ping",
                self.tolerance_s * 1000,
                now - since,
                interval,
            )
