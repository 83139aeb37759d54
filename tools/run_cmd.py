"""``ampshare run``: the station firmware in real time, with a live table or log lines.

Lockouts and GFCI trip counts are kept in ``<state dir>/<station id>.ports.json``
(``firmware.portstate``): ``--state-dir``, by default ``$STATE_DIRECTORY`` (systemd's
``StateDirectory=``), else ``$XDG_STATE_HOME/ampshare`` or ``~/.local/state/ampshare``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

from rich.console import Console

from firmware.config import ConfigError, load_station
from firmware.portstate import attach, default_state_dir
from firmware.runner import RealtimeRunner
from firmware.station import Snapshot
from hal.clock import StationClock
from hal.registry import BackendError, scheme_of
from hal.sim.bus import SimBus
from tools.live import LiveView, render


class _LogLines:
    """Without a terminal: one line whenever a port's mode, offer or fault changes."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._seen: dict[str, tuple[str, float, str | None]] = {}
        self.last: Snapshot | None = None

    def update(self, snap: Snapshot) -> None:
        self.last = snap
        for view in snap.ports:
            key = (view.mode.value, view.offer_a, view.fault)
            if self._seen.get(view.id) != key:
                self._seen[view.id] = key
                drawn = "-" if view.drawn_a is None else f"{view.drawn_a:.1f}"
                fault = f" fault={view.fault}" if view.fault else ""
                self.console.print(
                    f"t={snap.t:9.2f}s port {view.id}: {view.mode.value:9s} "
                    f"offer={view.offer_a:5.1f} A drawn={drawn} A ({view.binding}){fault}"
                )


def run_command(
    config_path: str,
    duration: float | None,
    speed: float,
    *,
    live: bool,
    state_dir: str | None = None,
) -> int:
    try:
        config = load_station(config_path)
    except ConfigError as exc:
        print(f"ampshare: {exc}", file=sys.stderr)
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
    attach(station, config.id, state_dir or default_state_dir(), to_unix=to_unix)
    hardware = station.hardware

    def soc(port_id: str) -> float | None:
        if isinstance(hardware, SimBus):
            ev = hardware.port(port_id).ev
            return None if ev is None else ev.soc
        return None

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=132)  # log files: no 80-column truncation
    title = f"ampshare {config.id} ({config.model}{', jumper' if config.jumper else ''})"
    runner = RealtimeRunner(station, period_s=config.loop_period_s, speed=speed, clock=clock)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.stop)
        if live and console.is_terminal:
            with LiveView(title, console, soc) as view:
                await runner.run(duration, view.update)
        else:
            lines = _LogLines(console)
            await runner.run(duration, lines.update)
            if lines.last is not None:
                console.print(render(lines.last, title, soc))

    asyncio.run(main())
    return 0
