"""The ``--plot`` figure of ``ampshare sim``: per-port current, and each limit's load vs limit."""

from __future__ import annotations

from pathlib import Path

from tools.simulate import Series


def plot_series(series: Series, title: str, path: Path) -> None:
    """Write a PNG: top, each port's drawn current (offers dashed, pauses shaded); bottom, each
    limit's load against its limit as a line."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a station or in CI
    import matplotlib.pyplot as plt

    hours = [t / 3600.0 for t in series.t]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(11, 7), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    many = len(series.drawn) > 12
    for k, (pid, drawn) in enumerate(series.drawn.items()):
        color = colors[k % len(colors)]
        top.step(hours, drawn, where="post", color=color, lw=1.2, label=None if many else pid)
        if not many:
            top.step(hours, series.offer[pid], where="post", color=color, lw=0.8, ls="--")
        paused = series.paused[pid]
        for i in range(len(hours) - 1):
            if paused[i]:
                top.axvspan(hours[i], hours[i + 1], color=color, alpha=0.08, lw=0)
    top.set_ylabel("port current (A)\n(dashed: offer; shaded: paused)")
    if not many:
        top.legend(title="port", loc="upper right", fontsize="small", ncol=2)
    top.grid(alpha=0.3)
    top.set_title(title)
    for k, (lid, load) in enumerate(series.load.items()):
        color = colors[k % len(colors)]
        bottom.step(hours, load, where="post", color=color, lw=1.4, label=f"{lid} load")
        bottom.step(
            hours,
            series.limit[lid],
            where="post",
            color=color,
            lw=1.0,
            ls=":",
            label=f"{lid} limit",
        )
    bottom.set_ylabel("load (A per line, or kW)")
    bottom.set_xlabel("time (h)")
    bottom.legend(loc="upper right", fontsize="small", ncol=2)
    bottom.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
