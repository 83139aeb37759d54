"""The ``--plot`` figure of ``ampshare sim``: what happened at each port and to each limit, for
an installer.

One job: draw a run's `tools.timeline.Timeline` as one PNG, top to bottom on one time axis
(clock time for time-of-use runs): each port's current (lines for a few ports, stacked for
many, so the circuit's share is visible); each port's status as a bar (charging, paused,
full, fault...) with its arrivals, departures, faults and lockouts, and each station's link
(fallback) in a coordinated site; the loads of the limits in amps against those limits; and
the kW limits on their own axes. The scenario's events (link down/up, coordinator restart,
injected faults) are vertical lines across all of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tools.timeline import Marker, Steps, Timeline

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["STACK_ABOVE", "build_figure", "plot_timeline", "port_colours"]

Rgba = tuple[float, float, float, float]

# Up to this many ports each gets its own line (and its offer, dashed); above it lines would
# overlap at the same few amps, so the currents are stacked and the status bars tell who is who.
STACK_ABOVE = 4

# What each status looks like in a port's bar (None: no bar). "charging" is the port's colour.
_STATE_STYLE: dict[str, tuple[str, str, str] | None] = {
    # state: (colour, hatch, legend text)
    "charging": ("", "", "charging (the port's colour)"),
    "connected": ("#d9d9d9", "", "plugged in, not drawing"),
    "paused": ("#ffffff", "////", "paused: waiting its turn or for power"),
    "full": ("#b7e4c7", "", "full: target reached"),
    "not-responding": ("#f4a261", "xx", "not responding"),
    "fault": ("#d62828", "", "fault / lockout"),
    "empty": None,
}
_FALLBACK = ("#f6bd60", "\\\\\\\\", "link: in fallback (no coordinator)")
_EVENT_COLOURS = {
    "link down": "#6a040f",
    "link up": "#2d6a4f",
    "coordinator restart": "#5a189a",
}
_NICE_STEPS_H = (1 / 60, 5 / 60, 10 / 60, 15 / 60, 0.5, 1, 2, 3, 4, 6, 12, 24, 48, 168)


def plot_timeline(timeline: Timeline, title: str, path: Path) -> list[Marker]:
    """Write the PNG; returns the markers drawn on it (arrivals, departures, faults, link)."""
    fig = build_figure(timeline, title)
    fig.savefig(path, dpi=110)
    return list(timeline.markers)


def port_colours(ports: list[str]) -> dict[str, Rgba]:
    """Distinct colours: tab10 for up to ten ports; for more, tab20's pairs by station (a
    station's two ports share a hue, dark and light) when the ids say ``station.port``, else
    tab20's ten dark colours and then its ten light ones."""
    from matplotlib import colormaps

    if len(ports) <= 10:
        tab10 = colormaps["tab10"]
        return {p: tab10(i) for i, p in enumerate(ports)}
    tab20 = colormaps["tab20"]
    stations: dict[str, list[str]] = {}
    for p in ports:
        stations.setdefault(p.rpartition(".")[0] or p, []).append(p)
    if len(stations) <= 10 and all(len(v) <= 2 for v in stations.values()):
        return {
            p: tab20(2 * k + j)
            for k, members in enumerate(stations.values())
            for j, p in enumerate(members)
        }
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    return {p: tab20(order[i % 20]) for i, p in enumerate(ports)}


def build_figure(timeline: Timeline, title: str) -> Figure:
    """The figure, not yet written: every artist that marks something has a ``gid`` saying
    what (``arrival:PORT``, ``departure:PORT``, ``fault:PORT``, ``lockout:PORT``,
    ``fallback:STATION``, ``event:TEXT``, ``state:PORT:STATE``, ``load:LIMIT``)."""
    from matplotlib.figure import Figure

    ports = timeline.ports
    colours = port_colours(ports)
    amp_limits = [lid for lid, u in timeline.limit_units.items() if u == "A"]
    kw_limits = [lid for lid, u in timeline.limit_units.items() if u == "kW"]
    rows = len(ports) + len(_link_rows(timeline))
    panels: list[tuple[str, float]] = [("current", 3.0), ("status", max(1.2, 0.28 * rows))]
    if amp_limits:
        panels.append(("amps", 2.2))
    if kw_limits:
        panels.append(("kw", 1.8))
    height = 1.6 + sum(h for _, h in panels)
    fig = Figure(figsize=(13, height), layout="constrained")
    axes_list = fig.subplots(
        len(panels), 1, sharex=True, height_ratios=[h for _, h in panels], squeeze=False
    )[:, 0]
    axes = {name: ax for (name, _), ax in zip(panels, axes_list, strict=True)}
    end_h = timeline.until / 3600.0

    _currents(axes["current"], timeline, colours)
    _status(axes["status"], timeline, colours)
    if amp_limits:
        _limits(axes["amps"], timeline, amp_limits, "A")
    if kw_limits:
        _limits(axes["kw"], timeline, kw_limits, "kW")
    _events(list(axes.values()), timeline)

    first = axes_list[0]
    first.set_title(title, loc="left", fontweight="bold")
    last = axes_list[-1]
    last.set_xlim(0.0, end_h)
    _time_axis(last, timeline, end_h)
    for ax in axes_list:
        ax.grid(axis="x", alpha=0.3)
    return fig


def _name(pid: str) -> str:
    """A station's ports are numbered (``1``, ``2``): say "port 1"; a site's ids say enough."""
    return f"port {pid}" if pid.isdigit() else pid


def _xy(steps: Steps, until: float) -> tuple[np.ndarray, np.ndarray]:
    """A step series as arrays in hours, held to the end of the run."""
    t = np.frombuffer(steps.t, dtype=float) / 3600.0
    v = np.frombuffer(steps.v, dtype=float)
    if len(t) == 0:
        return np.array([0.0, until / 3600.0]), np.zeros(2)
    return np.append(t, until / 3600.0), np.append(v, v[-1])


def _on_grid(steps: Steps, grid_h: np.ndarray) -> np.ndarray:
    """The step series' value at each time of ``grid_h`` (hours); 0 before its first point."""
    t = np.frombuffer(steps.t, dtype=float) / 3600.0
    v = np.frombuffer(steps.v, dtype=float)
    if len(t) == 0:
        return np.zeros_like(grid_h)
    i = np.searchsorted(t, grid_h, side="right") - 1
    out = v[np.clip(i, 0, None)]
    out[i < 0] = 0.0
    return out


def _currents(ax: Axes, timeline: Timeline, colours: dict[str, Rgba]) -> None:
    ports = timeline.ports
    if len(ports) <= STACK_ABOVE:
        for pid in ports:
            x, y = _xy(timeline.drawn[pid], timeline.until)
            ax.step(x, y, where="post", color=colours[pid], lw=1.6, label=f"{_name(pid)} drawn")
            x, y = _xy(timeline.offer[pid], timeline.until)
            ax.step(
                x, y, where="post", color=colours[pid], lw=0.9, ls="--", label=f"{_name(pid)} offer"
            )
        ax.set_ylabel("port current (A)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title="port")
    else:
        grid = np.unique(
            np.concatenate(
                [np.frombuffer(timeline.drawn[p].t, dtype=float) / 3600.0 for p in ports]
                + [np.array([0.0, timeline.until / 3600.0])]
            )
        )
        values = [_on_grid(timeline.drawn[p], grid) for p in ports]
        ax.stackplot(
            grid,
            values,
            labels=[_name(p) for p in ports],
            colors=[colours[p] for p in ports],
            step="post",
            lw=0.3,
            edgecolor="white",
        )
        ax.set_ylabel("port current (A)\nstacked: the total drawn")
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize="small",
            title="port",
            ncol=2 if len(ports) > 12 else 1,
            reverse=True,  # the legend reads top to bottom as the stack does
        )
    ax.set_ylim(bottom=0.0)
    ax.grid(axis="y", alpha=0.3)


def _runs(runs: list[tuple[float, str]], until: float) -> list[tuple[float, float, str]]:
    """(start h, length h, state) of each run of a status."""
    ends = [*(t for t, _ in runs[1:]), until]
    return [(t / 3600.0, (end - t) / 3600.0, s) for (t, s), end in zip(runs, ends, strict=True)]


def _link_rows(timeline: Timeline) -> dict[str, list[tuple[float, float]]]:
    """The stations whose link has a story (a fallback after they first shared, or a long
    one), with their spans out of sharing (start h, length h): only those get a row."""
    told = {m.subject for m in timeline.markers if m.kind in ("fallback", "sharing")}
    rows = {}
    for sid, statuses in timeline.link.items():
        spans = [(s, n) for s, n, st in _runs(statuses, timeline.until) if st != "sharing"]
        if sid in told or sum(n for _, n in spans) * 3600.0 > 3 * timeline.bucket_s:
            rows[sid] = spans
    return rows


def _status(ax: Axes, timeline: Timeline, colours: dict[str, Rgba]) -> None:
    labels: list[str] = []
    used: set[str] = set()
    row = 0
    for pid in timeline.ports:
        y = -row
        by_state: dict[str, list[tuple[float, float]]] = {}
        for start, length, state in _runs(timeline.states[pid], timeline.until):
            by_state.setdefault(state, []).append((start, length))
        for state, spans in by_state.items():
            style = _STATE_STYLE[state]
            if style is None:
                continue
            # The legend names what can be seen: a status held for more than a pixel or two.
            if sum(n for _, n in spans) * 3600.0 > 3 * timeline.bucket_s:
                used.add(state)
            colour, hatch, _ = style
            bars = ax.broken_barh(
                spans,
                (y - 0.38, 0.76),
                facecolors=colours[pid] if state == "charging" else colour,
                edgecolors="#777777" if hatch else "none",
                hatch=hatch or None,
                lw=0.0,
            )
            bars.set_gid(f"state:{pid}:{state}")
        labels.append(pid)
        row += 1
    for sid, spans in _link_rows(timeline).items():
        y = -row
        if spans:
            used.add("fallback")
            bars = ax.broken_barh(
                spans,
                (y - 0.3, 0.6),
                facecolors=_FALLBACK[0],
                edgecolors="#777777",
                hatch=_FALLBACK[1],
                lw=0.0,
            )
            bars.set_gid(f"fallback:{sid}")
        labels.append(f"{sid} link")
        row += 1
    rows = {p: -i for i, p in enumerate(labels)}
    _port_markers(ax, timeline, rows)
    names = [_name(k) for k in labels]
    ax.set_yticks([-i for i in range(len(labels))], names, fontsize="small")
    ax.set_ylim(-len(labels) + 0.4, 0.6)
    ax.set_ylabel("status")
    ax.legend(
        handles=_status_legend(timeline, used),
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize="small",
    )


def _status_legend(timeline: Timeline, used: set[str]) -> list[Artist]:
    """What the status panel shows, only what it shows."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Artist] = []
    for state, style in _STATE_STYLE.items():
        if style is not None and state in used:
            colour, hatch, text = style
            handles.append(
                Patch(
                    facecolor="#888888" if state == "charging" else colour,
                    hatch=hatch or None,
                    edgecolor="#777777",
                    label=text,
                )
            )
    if "fallback" in used:
        colour, hatch, text = _FALLBACK
        handles.append(Patch(facecolor=colour, hatch=hatch, edgecolor="#777777", label=text))
    marks = {m.kind for m in timeline.markers}
    for kind, (symbol, colour, text) in _MARKER_STYLE.items():
        if kind in marks:
            handles.append(
                Line2D(
                    [], [], ls="none", marker=symbol, color=colour, mec="black", mew=0.5, label=text
                )
            )
    return handles


# kind: (matplotlib marker, colour, legend text)
_MARKER_STYLE = {
    "arrival": (">", "#2d6a4f", "car arrives"),
    "departure": ("<", "#495057", "car leaves"),
    "fault": ("X", "#d62828", "fault"),
    "lockout": ("X", "#6a040f", "lockout"),
    "fallback": ("v", "#e85d04", "link: fallback"),
    "sharing": ("^", "#2d6a4f", "link: sharing again"),
}


def _port_markers(ax: Axes, timeline: Timeline, rows: dict[str, int]) -> None:
    for m in timeline.markers:
        style = _MARKER_STYLE.get(m.kind)
        if style is None:
            continue
        key = f"{m.subject} link" if m.kind in ("fallback", "sharing") else m.subject
        if key not in rows:
            continue
        symbol, colour, _ = style
        fault = m.kind in ("fault", "lockout")
        # A fault sits on the bar's top edge: a car often leaves at the moment its port locks
        # out, and both must stay visible.
        y = rows[key] + (0.38 if fault else 0.0)
        (line,) = ax.plot(
            [m.t / 3600.0],
            [y],
            ls="none",
            marker=symbol,
            ms=9 if fault else 7,
            color=colour,
            mec="black",
            mew=0.5,
            zorder=6 if fault else 5,
            clip_on=False,  # an arrival at the start or a departure at the end stays whole
        )
        line.set_gid(f"{m.kind}:{m.subject}")
        if fault:
            ax.annotate(
                m.text,
                (m.t / 3600.0, y),
                xytext=(7, 0),
                textcoords="offset points",
                va="center",
                fontsize="x-small",
                color=colour,
                fontweight="bold",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
                zorder=7,
            )


def _limits(ax: Axes, timeline: Timeline, limit_ids: list[str], unit: str) -> None:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    # Limits that are the same all along (four 48 A feeds) are one band: overlapping pale
    # bands of four colours would blend into a fifth that names none of them.
    same: dict[tuple[bytes, bytes], list[str]] = {}
    for lid in limit_ids:
        steps = timeline.limit[lid]
        same.setdefault((steps.t.tobytes(), steps.v.tobytes()), []).append(lid)
    for k, lid in enumerate(limit_ids):
        x, y = _xy(timeline.load[lid], timeline.until)
        label = f"{lid.removesuffix(':kW')} load"
        (line,) = ax.step(x, y, where="post", color=palette(k % 10), lw=1.5, label=label)
        line.set_gid(f"load:{lid}")
    for group in same.values():
        colour: Rgba | str = (
            palette(limit_ids.index(group[0]) % 10) if len(group) == 1 else "#7f7f7f"
        )
        x, y = _xy(timeline.limit[group[0]], timeline.until)
        names = ", ".join(lid.removesuffix(":kW") for lid in group)
        # A wide pale band under the loads: a load at its limit stays visible on top of it.
        ax.step(
            x, y, where="post", color=colour, lw=5.0, alpha=0.3, label=f"limit: {names}", zorder=1
        )
    if unit == "A":
        ax.set_ylabel("breaker load (A)\nwide pale line: its limit")
    else:
        ax.set_ylabel("power (kW)\nwide pale line: its limit")
    ax.set_ylim(bottom=0.0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize="small",
        ncol=2 if len(limit_ids) > 6 else 1,
    )


def _events(axes: list[Axes], timeline: Timeline) -> None:
    """The scenario's events as vertical lines through every panel, named on the top one."""
    top = axes[0]
    for m in timeline.markers:
        if m.kind != "event":
            continue
        colour = next((c for key, c in _EVENT_COLOURS.items() if m.text.endswith(key)), "#d62828")
        if m.text.startswith("site load"):
            colour = "#6c757d"
        x = m.t / 3600.0
        for ax in axes:
            line = ax.axvline(x, color=colour, lw=1.0, ls=(0, (4, 3)), zorder=4)
            line.set_gid(f"event:{m.text}")
        top.annotate(
            m.text,
            (x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -2),
            textcoords="offset points",
            rotation=90,
            va="top",
            ha="left",
            fontsize="x-small",
            color=colour,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )


def _time_axis(ax: Axes, timeline: Timeline, end_h: float) -> None:
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    step = next((s for s in _NICE_STEPS_H if end_h / s <= 12), _NICE_STEPS_H[-1])
    ax.xaxis.set_major_locator(MultipleLocator(step))
    clock = timeline.clock
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: clock.tick(x)))
    ax.set_xlabel(clock.axis_label())
