"""``ampshare sim SCENARIO.yaml``: a scenario in virtual time, with summary, trace and plot."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from firmware.config import ConfigError
from tools.scenario import load_scenario
from tools.simulate import ControllerFactory, product_controller, simulate, summary_json

# Show a progress bar only for runs that last long enough to wonder about (issue 4: > 1 s).
PROGRESS_AFTER_S = 1.0


class _ProgressBar:
    """A rich progress bar on stderr that appears once a run has lasted a second."""

    def __init__(self, total_s: float, console: Console) -> None:
        self.total_s = total_s
        self.console = console
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
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} s"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("sim", total=self.total_s)
        if self.task is not None:
            self.bar.update(self.task, completed=sim_t)

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
    bar = _ProgressBar(scenario.duration_s if duration_s is None else duration_s, err)
    try:
        result = simulate(
            scenario,
            duration_s=duration_s,
            trace_dir=None if out is None else Path(out),
            keep_series=plot is not None,
            progress=bar if err.is_terminal else None,
            controller_factory=controller_factory,
        )
    finally:
        bar.close()
    summary = result.summary
    if plot is not None and result.series is not None:
        from tools.plot import plot_series

        plot_series(result.series, scenario.name, Path(plot))
    if as_json:
        print(summary_json(summary))
    else:
        _print_summary(summary)
    if result.breaches and not scenario.deliberate_breach:
        print(
            f"ampshare: LIMIT BREACH in {scenario_path}: {result.breaches[0]} "
            f"({len(result.breaches)} breaching ticks)",
            file=sys.stderr,
        )
        return 3
    return 0


def _print_summary(summary: dict[str, object]) -> None:
    console = Console(highlight=False)
    console.print(
        f"[bold]{summary['scenario']}[/bold]: {summary['sim_s']:,} s simulated in "
        f"{summary['wall_s']} s wall, {summary['ticks']:,} ticks"
    )
    energy = summary["energy_kwh"]
    assert isinstance(energy, dict)
    console.print("energy kWh: " + ", ".join(f"{p}={v:.2f}" for p, v in energy.items()))
    peak, limit = summary["peak_a"], summary["limit_a"]
    assert isinstance(peak, dict) and isinstance(limit, dict)
    console.print("peak/limit: " + ", ".join(f"{k}={peak[k]:.1f}/{limit[k]:.1f}" for k in limit))
    console.print(
        f"overshoot {summary['overshoot_as']} A·s, utilization {summary['utilization']}, "
        f"lowest charging offer {summary['min_charging_a']} A, faults {summary['faults']}"
    )
