"""``ampshare sim SCENARIO.yaml``: a scenario in virtual time, with summary, trace and plot."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from firmware.config import ConfigError
from tools.scenario import load_scenario
from tools.simulate import ControllerFactory, SimResult, product_controller, simulate, summary_json
from tools.timeline import Clock, Timeline, span

# Show a progress bar only for runs that last long enough to wonder about (issue 4: > 1 s).
PROGRESS_AFTER_S = 1.0


class _ProgressBar:
    """A rich progress bar on stderr that appears once a run has lasted a second: how far the
    simulated time has got, and how much trace has been written so far."""

    def __init__(self, total_s: float, console: Console, trace_dir: Path | None) -> None:
        self.total_s = total_s
        self.console = console
        self.trace = None if trace_dir is None else trace_dir / "ports.csv"
        self.started = time.monotonic()
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self._last = 0.0

    def __call__(self, sim_t: float) -> None:
        wall = time.monotonic()
        if wall - self._last < 0.1:
            return
        self._last = wall
        if self.bar is None:
            if wall - self.started < PROGRESS_AFTER_S:
                return
            self.bar = Progress(
                TextColumn("simulating"),
                BarColumn(),
                TextColumn("{task.fields[at]} of {task.fields[length]}"),
                TextColumn("{task.fields[written]}"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(
                "sim", total=self.total_s, at="0s", length=span(self.total_s), written=""
            )
        if self.task is not None:
            self.bar.update(self.task, completed=sim_t, at=span(sim_t), written=self._written())

    def _written(self) -> str:
        if self.trace is None:
            return ""
        try:
            size = self.trace.stat().st_size
        except OSError:
            return ""
        return f"trace {size / 1e6:,.1f} MB"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def sim_command(
    scenario_path: str,
    out: str | None,
    plot: str | None,
    as_json: bool,
    duration_s: float | None = None,
    controller_factory: ControllerFactory = product_controller,
) -> int:
    """Exit status: 0 done, 2 bad input, 3 a limit or the safe-offer invariant was breached
    by a scenario that did not set out to (no non-compliant EV, no injected fault)."""
    err = Console(stderr=True, highlight=False)
    try:
        scenario = load_scenario(scenario_path)
    except ConfigError as exc:
        print(f"ampshare: {exc}", file=sys.stderr)
        return 2
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                "ampshare: --plot needs matplotlib: pip install 'ampshare[plot]'", file=sys.stderr
            )
            return 2
    trace_dir = None if out is None else Path(out)
    total_s = scenario.duration_s if duration_s is None else min(duration_s, scenario.duration_s)
    bar = _ProgressBar(total_s, err, trace_dir)
    try:
        result = simulate(
            scenario,
            duration_s=duration_s,
            trace_dir=trace_dir,
            plot=plot is not None,
            progress=bar if err.is_terminal else None,
            controller_factory=controller_factory,
        )
    finally:
        bar.close()
    summary = result.summary
    if plot is not None and result.timeline is not None:
        from tools.plot import plot_timeline

        if err.is_terminal:
            with err.status(f"drawing {plot}"):
                plot_timeline(result.timeline, scenario.name, Path(plot))
        else:
            plot_timeline(result.timeline, scenario.name, Path(plot))
    if as_json:
        print(summary_json(summary))
    else:
        print_summary(result, Console(highlight=False), trace_dir, plot)
    if result.breaches and not scenario.deliberate_breach:
        print(
            f"ampshare: LIMIT BREACH in {scenario_path}: {result.breaches[0]} "
            f"({summary['breaches']} breaches)",
            file=sys.stderr,
        )
        return 3
    return 0


def print_summary(
    result: SimResult, console: Console, trace_dir: Path | None = None, plot: str | None = None
) -> None:
    """The run's summary for people: units on every number, moments as clock times (or time
    into the run), one row per port and per limit."""
    s = result.summary
    timeline = result.timeline
    clock = timeline.clock if timeline is not None else Clock(None)
    sim_s = float(s["sim_s"])
    when = f" ({clock.moment(0.0)} to {clock.moment(sim_s)})" if clock.start else ""
    console.print(
        f"[bold]{s['scenario']}[/bold]: {span(sim_s)} simulated{when} in {_wall(s['wall_s'])}, "
        f"{s['ticks']:,} ticks"
    )
    console.print(_port_table(s, timeline, clock))
    console.print(_limit_table(s))
    lines = [_delivered(s)]
    if s["min_charging_a"] is not None:
        lines.append(f"lowest offer to a charging car: {s['min_charging_a']:.1f} A")
    lines.append(_held(s))
    lines.append(_faults(s, timeline, clock))
    lines.extend(_sessions(s, clock))
    if s["not_responding"]:
        lines.append("not responding: " + ", ".join(s["not_responding"]))
    link = s.get("link")
    if isinstance(link, dict):
        lines.extend(_link(link))
    if trace_dir is not None:
        lines.append(f"trace: ports.csv, limits.csv, summary.json in {trace_dir}")
    if plot is not None:
        lines.append(f"plot: {plot}")
    for line in lines:
        console.print(line)


def _sessions(s: dict[str, Any], clock: Clock) -> list[str]:
    """The run's charging sessions, one line each (the tracker a station runs)."""
    sessions: list[dict[str, Any]] = s.get("sessions", [])
    if not sessions:
        return ["sessions: none"]
    lines = [f"sessions: {len(sessions)}"]
    for x in sessions:
        tag = f" tag {x['id_tag']}" if x["id_tag"] else ""
        if x["stop_s"] is None:
            end = "still charging at the end"
        else:
            why = x["stop_reason"] + (f" ({x['stop_detail']})" if x["stop_detail"] else "")
            end = f"to {clock.moment(x['stop_s'])}, {why}"
        lines.append(
            f"  port {x['port']}{tag}: {x['energy_kwh']:.2f} kWh, from "
            f"{clock.moment(x['start_s'])} {end}"
        )
    return lines


def _wall(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60.0 else span(seconds)


def _port_table(s: dict[str, Any], timeline: Timeline | None, clock: Clock) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False)
    table.add_column("port")
    table.add_column("energy", justify="right")
    table.add_column("peak", justify="right")
    table.add_column("paused", justify="right")
    table.add_column("")
    energy: dict[str, float] = s["energy_kwh"]
    for pid, kwh in energy.items():
        notes = []
        if timeline is not None:
            notes += [f"full at {clock.moment(t)}" for t in timeline.full_at.get(pid, [])]
        if pid in s["not_responding"]:
            notes.append("not responding")
        waiting = None if timeline is None else timeline.waiting_s.get(pid, 0.0)
        table.add_row(
            pid,
            f"{kwh:.1f} kWh",
            f"{s['peak_drawn_a'][pid]:.1f} A",
            "-" if waiting is None or waiting < 0.5 else span(waiting),
            "; ".join(notes),
        )
    table.add_row("total", f"{sum(energy.values()):.1f} kWh", "", "", "")
    return table


def _unit(limit_id: str) -> str:
    return "kW" if limit_id.endswith(":kW") else "A"


def _limit_table(s: dict[str, Any]) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False)
    table.add_column("limit")
    table.add_column("peak load", justify="right")
    table.add_column("of", justify="right")
    table.add_column("over the limit", justify="right")
    over: dict[str, float] = s.get("overshoot_by_limit", {})
    for lid, value in s["limit_a"].items():
        unit = _unit(lid)
        table.add_row(
            lid,
            f"{s['peak_a'][lid]:.1f} {unit}",
            f"{value:.1f} {unit}",
            f"{over[lid]:.1f} {unit}·s" if lid in over else "never",
        )
    return table


def _delivered(s: dict[str, Any]) -> str:
    util = s["utilization"]
    if util is None:
        return f"delivered {s['delivered_kwh']:.1f} kWh (no car could take any)"
    return (
        f"delivered {s['delivered_kwh']:.1f} kWh of {s['deliverable_kwh']:.1f} kWh deliverable: "
        f"utilization {util:.1%}"
    )


def _held(s: dict[str, Any]) -> str:
    if not s["breaches"]:
        return "limits: held on every tick (load and safe-offer invariant)"
    why = " (deliberate: a non-compliant car or an injected fault)" if s["deliberate"] else ""
    return f"limits: {s['breaches']:,} breaches{why}, first {s['first_breach']}"


def _faults(s: dict[str, Any], timeline: Timeline | None, clock: Clock) -> str:
    if not s["faults"]:
        return "faults: none"
    locked = set()
    if timeline is not None:
        locked = {(m.subject, m.t) for m in timeline.markers if m.kind == "lockout"}
    said = []
    for f in s["faults"]:
        lockout = any(p == f["port"] and abs(t - f["t_s"]) < 1e-3 for p, t in locked)
        said.append(
            f"port {f['port']} {f['kind']}{' (locked out)' if lockout else ''} "
            f"at {clock.moment(f['t_s'])}"
        )
    return "faults: " + ", ".join(said)


def _link(link: dict[str, Any]) -> list[str]:
    restarts, stations = link["coordinator_restarts"], link["stations"]
    lines = [
        f"link: {stations} station{'' if stations == 1 else 's'}, {link['messages']:,} messages, "
        f"{link['dropped']:,} dropped; coordinator restarted {restarts} "
        f"time{'' if restarts == 1 else 's'}"
    ]
    # Every station waits a moment at boot for its first limits: under a second is not news.
    fallback = {sid: v for sid, v in link["fallback_s"].items() if v >= 1.0}
    lines.append(
        "in fallback: "
        + (", ".join(f"{sid} {span(v)}" for sid, v in fallback.items()) if fallback else "never")
    )
    rejected = dict(link["rejected_by_stations"])
    if link["rejected_by_coordinator"]:
        rejected["coordinator"] = link["rejected_by_coordinator"]
    if rejected:
        lines.append(
            "rejected messages: "
            + "; ".join(
                f"{who}: " + ", ".join(f"{n} {why}" for why, n in counts.items())
                for who, counts in rejected.items()
            )
        )
    return lines
