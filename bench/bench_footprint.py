"""Benchmark: the station firmware's footprint, GPIO backend beside the sim backend.

Run: ``.venv/bin/python bench/bench_footprint.py [SECONDS]`` (default 10). For each backend
it runs the real station (``ampshare run``) in real time, at the 50 ms loop a station runs:

* in a child process, its peak RSS (``ru_maxrss``) and total CPU time;
* in this process, the CPU time of one control tick (``Station.step``, the main thread's
  ``thread_time``) and, for the GPIO backend, of one pilot burst (113 SPI conversions, in the
  sampler's worker thread).

The GPIO backend runs with ``nohw=1``: below it, the simulated Pi (sysfs files, MockFactory, a
byte-level MCP3008, the vehicles) costs CPU of its own, which a real Pi does not spend, so the
child's total CPU is an upper bound; the per-tick and per-burst figures are the backend's own.

A Pi's figures: run this same file on the Pi (nohw works anywhere). Short of that, it prints a
reference loop's time; the ratio of that loop's time on the Pi to its time here scales the
CPU figures (Python's interpreter speed is what sets them; the loop exercises the same kind
of work: attribute access, small dicts, float arithmetic).
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.app import build_station  # noqa: E402
from firmware.config import load_station  # noqa: E402
from firmware.runner import RealtimeRunner  # noqa: E402
from hal.clock import StationClock  # noqa: E402
from hal.gpio import backend as gpio_backend  # noqa: E402

SIM = ROOT / "configs" / "demo-jumper.yaml"
GPIO = ROOT / "configs" / "pi-jumper-nohw.yaml"


def reference_loop() -> float:
    """Seconds for a fixed amount of interpreter work (see the module docstring)."""
    start = time.perf_counter()
    acc: dict[str, float] = {}
    for i in range(300_000):
        key = "p1" if i & 1 else "p2"
        acc[key] = acc.get(key, 0.0) * 0.5 + i * 1.0001
    return time.perf_counter() - start


def child(config: Path, seconds: float) -> tuple[float, float]:
    """(peak RSS in MiB, CPU seconds) of ``ampshare run`` in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "run",
            "--config",
            str(config),
            "--for",
            f"{seconds}s",
            "-q",
        ],
        cwd=ROOT,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return after.ru_maxrss / 1024.0, cpu


def in_process(config: Path, seconds: float) -> tuple[int, float, int, float]:
    """(ticks, CPU µs per tick, bursts, CPU µs per burst) of a station run here."""
    station = build_station(load_station(config), clock=(clock := StationClock()))
    ticks, tick_cpu = 0, 0.0
    step = station.step

    def timed_step(now: float) -> Any:
        nonlocal ticks, tick_cpu
        t0 = time.thread_time()
        snap = step(now)
        tick_cpu += time.thread_time() - t0
        ticks += 1
        return snap

    station.step = timed_step  # type: ignore[method-assign]
    bursts, burst_cpu = 0, 0.0
    original: Callable[..., list[int]] = gpio_backend.sample_burst

    def timed_burst(*args: Any) -> list[int]:
        nonlocal bursts, burst_cpu
        t0 = time.thread_time()  # the worker thread's own CPU
        codes = original(*args)
        burst_cpu += time.thread_time() - t0
        bursts += 1
        return codes

    gpio_backend.sample_burst = timed_burst  # type: ignore[assignment]
    try:
        asyncio.run(RealtimeRunner(station, clock=clock).run(seconds))
    finally:
        gpio_backend.sample_burst = original  # type: ignore[assignment]
    per_burst = burst_cpu / bursts * 1e6 if bursts else 0.0
    return ticks, tick_cpu / max(ticks, 1) * 1e6, bursts, per_burst


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    with tempfile.TemporaryDirectory() as tmp:
        gpio = Path(tmp) / "pi.yaml"
        gpio.write_text(GPIO.read_text().replace("/tmp/ampshare-pwm", f"{tmp}/pwm"))
        print(f"reference loop: {reference_loop() * 1000:.1f} ms (the scale for another machine)")
        rows = []
        for name, config in (("sim", SIM), ("gpio nohw", gpio)):
            rss, cpu = child(config, seconds)
            ticks, per_tick, bursts, per_burst = in_process(config, seconds)
            rows.append((name, rss, cpu, ticks, per_tick, bursts, per_burst))
        print(f"{seconds:g} s of real time per backend, 50 ms loop")
        print(
            f"{'backend':10s} {'RSS MiB':>8s} {'CPU %':>6s} {'ticks':>6s} {'µs/tick':>8s} "
            f"{'bursts':>7s} {'µs/burst':>9s}"
        )
        for name, rss, cpu, ticks, per_tick, bursts, per_burst in rows:
            print(
                f"{name:10s} {rss:8.1f} {cpu / seconds * 100:6.1f} {ticks:6d} {per_tick:8.0f} "
                f"{bursts:7d} {per_burst:9.0f}"
            )
        sim, gpio_row = rows
        print(
            f"gpio/sim: RSS x{gpio_row[1] / sim[1]:.2f}, CPU per tick x{gpio_row[4] / sim[4]:.2f}"
        )


if __name__ == "__main__":
    main()
