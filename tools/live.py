"""The live station table of ``ampshare run``: one row per port, one per limit; and the words
for what limits a port (``limited_by``) that the table and the run's log lines share."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from firmware.station import Snapshot

SocLookup = Callable[[str], float | None]

# Redraw at most this often: a terminal cannot show more, and the loop runs at 20 Hz.
REFRESH_HZ = 4.0


# What `controller.model.Decision.binding`'s words mean to someone reading a station's table.
_LIMITED_BY = {
    "": "-",
    "idle": "-",
    "port": "port rating",
    "demand": "vehicle",
    "finished": "vehicle (finished)",
    "not-responding": "vehicle not responding",
    "paused": "rotation (paused)",
    "fallback": "fallback (no coordinator)",
    "sequencing": "sequencing",
    "coordinator": "coordinator",
    "schedule": "schedule",
}


def limited_by(binding: str) -> str:
    """What limits a port, in words: ``coordinator``, ``breaker feed``, ``breaker panel L2``,
    ``site kW limit``, ``port rating``, ``vehicle``..."""
    said = _LIMITED_BY.get(binding)
    if said is not None:
        return said
    group, _, part = binding.partition(":")
    if part == "kW":
        return f"{group} kW limit"
    return f"breaker {group} {part}" if part else f"breaker {group}"


def _fmt_a(value: float | None) -> str:
    return "-" if value is None else f"{value:5.1f}"


def _clock(t: float) -> str:
    s = int(t)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def render(snap: Snapshot, title: str, soc: SocLookup | None = None) -> Group:
    """The table for one snapshot."""
    ports = Table(title=f"{title}  t={_clock(snap.t)}", title_justify="left", expand=False)
    for name, justify in (
        ("port", "left"),
        ("mode", "left"),
        ("pilot", "center"),
        ("duty %", "right"),
        ("offer A", "right"),
        ("eff. A", "right"),
        ("drawn A", "right"),
        ("contactor", "center"),
        ("kWh", "right"),
        ("SoC", "right"),
        ("limited by", "left"),
    ):
        ports.add_column(name, justify=justify)  # type: ignore[arg-type]
    for view in snap.ports:
        level = None if soc is None else soc(view.id)
        mode = Text(view.mode.value + (f" ({view.fault})" if view.fault else ""))
        if view.fault:
            mode.stylize("bold red")
        elif view.mode.value == "C2":
            mode.stylize("green")
        ports.add_row(
            view.id,
            mode,
            "-" if view.pilot is None else view.pilot.value,
            "-" if view.duty_pct is None else f"{view.duty_pct:.1f}",
            _fmt_a(view.offer_a),
            _fmt_a(view.effective_a),
            _fmt_a(view.drawn_a),
            "closed" if view.contactor else "open",
            "-" if view.energy_wh is None else f"{view.energy_wh / 1000:.2f}",
            "-" if level is None else f"{level:.0%}",
            limited_by(view.binding),
        )
    limits = Table(expand=False)
    limits.add_column("limit")
    limits.add_column("load A/kW", justify="right")
    limits.add_column("limit A/kW", justify="right")
    for lid, limit in snap.limits.items():
        load = snap.loads.get(lid, 0.0)
        limits.add_row(lid, f"{load:.1f}", f"{limit:.1f}")
    parts: list[Table | Text] = [ports, limits]
    if snap.inhibit:
        parts.insert(0, Text(f"NOT ENERGIZING: {snap.inhibit}", style="bold red"))
    return Group(*parts)


class LiveView:
    """Shows snapshots as a live table on a terminal, at most ``REFRESH_HZ`` times a second."""

    def __init__(self, title: str, console: Console, soc: SocLookup | None = None) -> None:
        self.title = title
        self.soc = soc
        self.console = console
        self._live: Live | None = None
        self._last_draw = 0.0
        self.last: Snapshot | None = None

    def __enter__(self) -> LiveView:
        self._live = Live(console=self.console, auto_refresh=False, transient=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            if self.last is not None:
                self._live.update(render(self.last, self.title, self.soc), refresh=True)
            self._live.__exit__(None, None, None)

    def update(self, snap: Snapshot) -> None:
        self.last = snap
        wall = time.monotonic()
        if self._live is not None and wall - self._last_draw >= 1.0 / REFRESH_HZ:
            self._last_draw = wall
            self._live.update(render(snap, self.title, self.soc), refresh=True)
