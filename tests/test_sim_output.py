"""What ``ampshare sim`` leaves an installer: a trace that streams (memory flat in the run's
duration), a printed summary in units and clock times, and a plot that marks the story.

The story scenario (``STORY``): the office time-of-use site run as one controller from 05:00;
a car plugs in and later leaves, its contactor having welded (a lockout when it leaves); a
small battery fills up and stays plugged in (full, not paused); the link goes down and up.
"""

from __future__ import annotations

import gc
import io
import tracemalloc
from pathlib import Path

import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from rich.console import Console

import hal.yamlnodes
from tools.plot import build_figure, plot_timeline
from tools.scenario import load_scenario
from tools.sim_cmd import print_summary, sim_command
from tools.simulate import SimResult, simulate
from tools.timeline import PLOT_BUCKETS, Steps, Timeline, clock_for, span

ROOT = Path(__file__).resolve().parent.parent

STORY = f"""\
site: {ROOT / "configs" / "sites" / "office-tou.yaml"}
start: 2026-11-23T05:00:00
duration: 3h
evs:
  - {{port: st1.1, arrive: 0s, leave: 2h, max_a: 32, battery_kwh: 80, soc: 0.2}}
  - {{port: st1.2, arrive: 10m, max_a: 32, battery_kwh: 10, soc: 0.7, target_soc: 0.8}}
  - {{port: st2.1, arrive: 20m, leave: 150m, max_a: 32, battery_kwh: 60, soc: 0.2}}
events:
  - {{at: 30m, fault: {{port: st1.1, kind: weld}}}}
  - {{at: 1h, link: down}}
  - {{at: 80m, link: up}}
"""

# One station of six ports under a coordinator that allows 0 kW: every car waits (paused) on
# every tick, and the link's messages make about three ticks a simulated second.
SIX_PORTS = """\
site: one-station
voltage_v: 208
min_a: 8
groups:
  - {id: site, limit_kw: 50, schedule: [{days: mon-sun, kw: 0}]}
  - {id: st1, parent: site, breaker_a: 100}
ports:
""" + "".join(
    f"  - {{id: st1.{i}, group: st1, max_a: 32, phases: L1-L2, fallback_a: 8}}\n"
    for i in range(1, 7)
)
WAITING = """\
site: site.yaml
coordinator: {valid_s: 30, period_s: 1, latency: 200ms, telemetry: 1s}
duration: 1h
evs:
""" + "".join(f"  - {{port: st1.{i}, arrive: 0s}}\n" for i in range(1, 7))

REPRS = ("{", "}", "[", "]", "'", "None", "defaultdict", "Marker(")


def _story(tmp_path: Path) -> SimResult:
    path = tmp_path / "story.yaml"
    path.write_text(STORY)
    return simulate(load_scenario(path), plot=True)


def test_steps_keep_a_bounded_picture() -> None:
    """However many ticks, at most four points a bucket, and the extremes survive."""
    steps = Steps(bucket_s=10.0)
    for i in range(40_000):  # 4,000 s at 10 ticks a second, a new value on every tick
        steps.add(i * 0.1, 100.0 if i == 23_456 else float(i % 7))
    assert len(steps) <= 4 * 400
    assert max(steps.v) == 100.0 and min(steps.v) == 0.0
    assert list(steps.t) == sorted(steps.t)
    still = Steps(bucket_s=10.0)
    for i in range(1_000):
        still.add(float(i), 16.0)
    assert len(still) == 1  # a value that does not change is one point


def test_port_status_runs_stay_bounded_but_keep_faults(tmp_path: Path) -> None:
    path = tmp_path / "story.yaml"
    path.write_text(STORY)
    scenario = load_scenario(path)
    timeline = Timeline(clock_for(scenario, 3600.0), 3600.0, ["p"], {})
    for i in range(36_000):  # a status flapping ten times a second
        timeline.port(i * 0.1, "p", 0.0, 0.0, "paused" if i % 2 else "charging")
    timeline.port(3_600.0, "p", 0.0, 0.0, "fault")
    runs = timeline.states["p"]
    assert len(runs) <= PLOT_BUCKETS + 2
    assert runs[-1][1] == "fault"


def test_a_recorded_run_keeps_its_memory_flat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out`` and ``--plot`` on a run four times as long take about the same peak memory
    (before: the plot kept every tick, and shaded every paused tick with its own patch)."""
    # The config reader asks for a 16 MiB buffer per file (its size limit), freed at once: a
    # constant that would hide what this test measures.
    monkeypatch.setattr(hal.yamlnodes, "MAX_DOCUMENT_BYTES", 1 << 16)
    # The figure is built but not rendered: rendering runs six times slower under
    # tracemalloc, and its memory is the canvas, which the figure's size fixes.
    figures: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *_a, **_k: figures.append(fig))
    (tmp_path / "site.yaml").write_text(SIX_PORTS)
    scenario = tmp_path / "waiting.yaml"
    scenario.write_text(WAITING)

    def peak(seconds: float) -> int:
        out, png = tmp_path / f"out{seconds:g}", tmp_path / f"{seconds:g}.png"
        gc.collect()
        tracemalloc.start()
        try:
            status = sim_command(str(scenario), str(out), str(png), False, seconds)
            _, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert status == 0 and figures.pop().axes
        assert (out / "ports.csv").stat().st_size > 0
        return top

    sim_command(str(scenario), None, str(tmp_path / "warm.png"), True, 1.0)  # imports, caches
    figures.clear()
    capsys.readouterr()
    short, long = peak(10.0), peak(40.0)
    assert long < 1.4 * short, (short, long)
    text = capsys.readouterr().out
    assert "link: 1 station," in text and "in fallback: never" in text
    assert not any(r in text for r in REPRS), text


def test_text_summary_says_units_and_clock_times(tmp_path: Path) -> None:
    result = _story(tmp_path)
    console = Console(record=True, width=100, file=io.StringIO())
    print_summary(result, console, tmp_path / "trace", "plot.png")
    text = console.export_text()
    assert "3h 00m simulated (05:00 to 08:00)" in text
    assert "kWh" in text and " kW " in text and " A " in text
    assert "site:kW    16.6 kW  40.0 kW" in text  # peak of limit, each with its unit
    assert "full at 05:23" in text  # the small battery, by the clock
    assert "faults: port st1.1 weld (locked out) at 07:00" in text
    assert "utilization 88.0%" in text
    assert not any(r in text for r in REPRS), text
    assert span(4320.0) == "1h 12m" and span(86_400.0) == "24h 00m" and span(45.0) == "45s"


def _gids(fig: Figure) -> dict[str, list[Axes]]:
    found: dict[str, list[Axes]] = {}
    for ax in fig.axes:
        for artist in ax.get_children():
            gid = artist.get_gid()
            if gid is not None:
                found.setdefault(gid, []).append(ax)
    return found


def test_plot_marks_the_story_and_keeps_amps_and_kilowatts_apart(tmp_path: Path) -> None:
    result = _story(tmp_path)
    assert result.timeline is not None
    fig = build_figure(result.timeline, "story")
    gids = _gids(fig)
    for mark in (
        "arrival:st1.1",
        "arrival:st1.2",
        "arrival:st2.1",
        "departure:st1.1",
        "departure:st2.1",
        "lockout:st1.1",
        "event:link down",
        "event:link up",
        "event:weld injected on port st1.1",
    ):
        assert mark in gids, sorted(gids)
    # The small battery is full from 05:23 on, plugged in: drawn as full, never as paused.
    assert "state:st1.2:full" in gids and "state:st1.2:paused" not in gids
    assert result.timeline.states["st1.2"][-1][1] == "full"
    # Amps and kilowatts never share an axis.
    (kw_axes,) = gids["load:site:kW"]
    (amp_axes,) = gids["load:st1"]
    assert kw_axes is not amp_axes
    assert "(kW)" in kw_axes.get_ylabel() and "(A)" in amp_axes.get_ylabel()
    assert all(gids[f"load:{lid}"] == [amp_axes] for lid in ("st1", "st2", "st3", "st4"))
    # A scenario with start: reads in clock time.
    assert amp_axes.xaxis.get_major_formatter()(1.0, 0) == "06:00"
    assert "clock time" in fig.axes[-1].get_xlabel()
    markers = plot_timeline(result.timeline, "story", tmp_path / "story.png")
    assert {m.kind for m in markers} >= {"arrival", "departure", "lockout", "event"}
    assert (tmp_path / "story.png").read_bytes()[:4] == b"\x89PNG"


def test_many_ports_get_distinct_colours() -> None:
    from tools.plot import port_colours

    ports = [f"st{s}.{p}" for s in range(1, 7) for p in (1, 2)]
    colours = port_colours(ports)
    assert len(set(colours.values())) == 12
