"""``ampshare run``: the station firmware in real time, with a live table or log lines.

On a terminal, a live table (``tools.live``); otherwise (journald, a file) one log record
(``tools.logs``) whenever a port's mode, offer, fault or what limits it changes. Either way the
last record says how the run ended and that every port was left safe.

Lockouts and GFCI trip counts are kept in ``<state dir>/<station id>.ports.json``
(``firmware.portstate``): ``--state-dir``, by default ``$STATE_DIRECTORY`` (systemd's
``StateDirectory=``), else ``$XDG_STATE_HOME/ampshare`` or ``~/.local/state/ampshare``.
Charging sessions go to ``<state dir>/<station id>.sessions.db`` (``firmware.sessions``;
``ampshare sessions`` lists them). ``--broker URL`` puts the station's link on another broker
than its config names. Under a ``Type=notify`` unit (``$NOTIFY_SOCKET``) it tells systemd
when it is ready, that its loop is alive, what it is doing and that it stops
(``firmware.sdnotify``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
import time
from collections.abc import Callable

from rich.console import Console

from firmware.config import ConfigError, load_station
from firmware.portstate import attach, default_state_dir
from firmware.runner import RealtimeRunner
from firmware.sdnotify import StationNotifier
from firmware.sessions.live import StationSessions
from firmware.station import PortView, Snapshot
from hal.clock import StationClock
from hal.durations import format_duration
from hal.listen import ListenError
from hal.registry import BackendError, scheme_of
from hal.sim.bus import SimBus
from tools.live import LiveView, limited_by

log = logging.getLogger("ampshare.station")


class _LogLines:
    """Without a terminal: one record whenever a port's mode, offer, fault or limit changes."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._seen: dict[str, tuple[str, float, str | None, str]] = {}
        self.last: Snapshot | None = None

    def update(self, snap: Snapshot) -> None:
        self.last = snap
        for view in snap.ports:
            key = (view.mode.value, view.offer_a, view.fault, view.binding)
            if self._seen.get(view.id) != key:
                self._seen[view.id] = key
                self._port(snap, view, "")
        if snap.inhibit and self._seen.get("") != (snap.inhibit, 0.0, None, ""):
            self._seen[""] = (snap.inhibit, 0.0, None, "")
            log.error("NOT ENERGIZING: %s", snap.inhibit)

    def final(self) -> None:
        """Each port as the run left it, energy included (what a live table would show)."""
        if self.last is not None:
            for view in self.last.ports:
                self._port(self.last, view, " at the end")

    def _port(self, snap: Snapshot, view: PortView, when: str) -> None:
        # Sped up, the wall clock of the record is not the station's: say the station's too.
        clock = "" if self.speed == 1.0 else f"[station time {format_duration(snap.t)}] "
        drawn = "-" if view.drawn_a is None else f"{view.drawn_a:.1f}"
        why = limited_by(view.binding)
        energy = f", {view.energy_wh / 1000:.2f} kWh" if when and view.energy_wh else ""
        log.info(
            "%sport %s%s: %s, offer %.1f A, drawn %s A%s%s%s",
            clock,
            view.id,
            when,
            view.mode.value,
            view.offer_a,
            drawn,
            "" if why == "-" else f", limited by {why}",
            f", fault {view.fault}" if view.fault else "",
            energy,
        )


def _notifying(
    notifier: StationNotifier, sessions: StationSessions, update: Callable[[Snapshot], None]
) -> Callable[[Snapshot], None]:
    """The runner's per-tick hook: systemd is told first (the watchdog's tick time is taken
    as close to the tick as it can be), then the session records are queued (never written
    here: firmware.sessions), then the table or the log lines."""

    def on_step(snap: Snapshot) -> None:
        notifier.ticked(snap)
        sessions.ticked(snap)
        update(snap)

    return on_step


def run_command(
    config_path: str,
    duration: float | None,
    speed: float,
    *,
    live: bool,
    state_dir: str | None = None,
    broker: str | None = None,
) -> int:
    try:
        config = load_station(config_path)
    except ConfigError as exc:
        print(f"ampshare: {exc}", file=sys.stderr)
        return 2
    if broker is not None:
        if config.link is None:
            print(f"ampshare: --broker: {config_path} has no link: block", file=sys.stderr)
            return 2
        try:
            config = dataclasses.replace(config, link=config.link.with_broker(broker))
        except ValueError as exc:
            print(f"ampshare: --broker: {exc}", file=sys.stderr)
            return 2
    try:
        if speed != 1.0 and scheme_of(config.hardware_url) != "sim":
            print("ampshare: --speed needs simulated hardware (sim://)", file=sys.stderr)
            return 2
        from firmware.app import build_station

        clock = StationClock(speed)
        station = build_station(config, clock=clock)
    except (BackendError, ValueError) as exc:
        print(f"ampshare: {config_path}: {exc}", file=sys.stderr)
        return 2

    def to_unix(t: float) -> float:
        # Station seconds (sped up on simulated hardware) to the wall clock, for the file's
        # human readers only: nothing is timed by it.
        return time.time() + (t - clock()) / speed

    # Before the first tick: ports start from what the last run left. The loader never fails
    # (a bad file starts every port locked out, loudly); writing is a service of the runner.
    directory = state_dir or default_state_dir()
    attach(station, config.id, directory, to_unix=to_unix)
    # Charging sessions, durable across power cuts, in the same state directory.
    sessions = StationSessions(
        station, config.id, {p.id: p.voltage_v for p in config.site.ports}, directory
    )
    hardware = station.hardware

    def soc(port_id: str) -> float | None:
        if isinstance(hardware, SimBus):
            ev = hardware.port(port_id).ev
            return None if ev is None else ev.soc
        return None

    console = Console(highlight=False)
    title = f"ampshare {config.id} ({config.model}{', jumper' if config.jumper else ''})"
    # Under systemd (Type=notify): READY once the ports are confirmed safe, the watchdog pinged
    # by on-time ticks, STATUS, STOPPING (firmware.sdnotify); nothing without $NOTIFY_SOCKET.
    notifier = StationNotifier.from_environ(period_s=config.loop_period_s)
    runner = RealtimeRunner(
        station,
        period_s=config.loop_period_s,
        speed=speed,
        clock=clock,
        on_stopping=notifier.stopping,
    )
    link = "" if config.link is None else f", site {config.link.site} via {config.link.broker}"
    log.info(
        "station %s (%s%s): ports %s, hardware %s%s%s",
        config.id,
        config.model,
        ", jumper" if config.jumper else "",
        ", ".join(config.port_ids),
        config.hardware_url,
        link,
        "" if speed == 1.0 else f", clock {speed:g}x",
    )
    stopped_by: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, _stop, sig)
        # Always: a service manager's reload must never end a station (SIGHUP's default).
        loop.add_signal_handler(signal.SIGHUP, _reload_tags)
        await sessions.start()
        try:
            if live and console.is_terminal:
                with LiveView(title, console, soc) as view:
                    await runner.run(duration, _notifying(notifier, sessions, view.update))
            else:
                lines = _LogLines(speed)
                await runner.run(duration, _notifying(notifier, sessions, lines.update))
                lines.final()
        finally:
            await sessions.stop()

    def _reload_tags() -> None:
        # SIGHUP, as daemons re-read their lists: a bad file keeps the list in force.
        if config.auth.settings.tags_file is None:
            log.info("SIGHUP: nothing to reload (no tags_file)")
            return
        try:
            tags = config.auth.reloaded_tags()
        except (OSError, ValueError) as exc:
            log.error("tags not reloaded, the list in force stays: %s", exc)
            return
        station.authorizer.reload(tags)
        log.info("tags reloaded: %d on the allow-list", len(tags))

    def _stop(sig: signal.Signals) -> None:
        stopped_by.append(sig.name)
        runner.stop()

    try:
        asyncio.run(main())
    except ListenError as exc:  # a backend's listener (a sim meter server's port) is taken
        # Only this is bad input; any other failure is not (exit 1: systemd restarts it).
        print(f"ampshare: {config_path}: {exc}", file=sys.stderr)
        return 2
    # The runner returns only after Station.shutdown: PWM off and contactor open on each port.
    why = f"stopped by {stopped_by[0]}" if stopped_by else "stopped (--for elapsed)"
    log.info("%s: every port left safe (PWM off, contactor open)", why)
    return 0
