"""Benchmark: the serial pilot board link through a pseudo-terminal.

Run: ``.venv/bin/python bench/bench_serial.py [--events 200] [--seconds 3]``.

The simulated board (``hal.serial.board.BoardSim``) runs in a process of its own on a pty; the
station (``firmware``, ``serial://`` backend) runs in this one, as on a real controller.

1. Latency from a pilot change at the board (an EV unplugs: C -> A, the board sends its
   unsolicited event at once) to the contactor-open command arriving back at the board,
   measured on the board's clock, p50/p99/max over ``--events`` unplugs. Twice: with the real
   station loop as shipped (``RealtimeRunner`` ticks every 50 ms and at once when the backend's
   ``on_input_change`` reports a board event), and with that wake-up switched off (the 50 ms
   period alone bounds the latency). Goal p99 <= 50 ms; IEC 61851-1
   (docs/design.md) allows 100 ms. The bench shortens the simulated EVs' 1 s pilot handshake to
   50 ms in the board's process so that 200 plug-charge-unplug cycles take seconds, not minutes.
2. Frames per second the link carries: READ_STATUS -> STATUS back to back (one at a time, and
   pipelined 8 deep), beside the theoretical maximum at 115200 baud 8N1 (10 bits per byte:
   11520 bytes/s). A pty does not pace bytes at the baud rate, so the measured pty rate is what
   the two Python ends sustain; the line rate is what a real UART would allow.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import random
import statistics
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BAUD = 115200
BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit
HANDSHAKE_S = 0.05  # the bench's EVs close S2 50 ms after PWM appears (hal.sim.ev: 1 s)


# --- the board's process -----------------------------------------------------------------


def board_process(conn: Connection, events: int, seed: int) -> None:
    import logging

    import hal.sim.ev

    hal.sim.ev.HANDSHAKE_S = HANDSHAKE_S
    # Between the runs the station is gone and the board's watchdog trips, as it should.
    logging.getLogger("ampshare.board").setLevel(logging.ERROR)
    asyncio.run(_board_main(conn, events, seed))


async def _recv(conn: Connection) -> Any:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def on_ready() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(conn.fileno(), on_ready)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


async def _board_main(conn: Connection, events: int, seed: int) -> None:
    from hal.serial.board import BoardSim
    from hal.serial.protocol import Message, SetContactor
    from hal.sim.bus import SimBus
    from hal.sim.ev import EvSpec

    bus = SimBus(["1", "2"], jumper=False, noise_a=0.0)
    board = BoardSim.on_pty(bus)
    await board.start()
    conn.send(board.path)
    rng = random.Random(seed)
    unplugged_at: dict[int, float | None] = {0: None, 1: None}
    latencies: dict[int, list[float]] = {0: [], 1: []}

    def on_frame(t: float, seq: int, msg: Message) -> None:
        if isinstance(msg, SetContactor) and not msg.closed:
            t0 = unplugged_at.get(msg.port)
            if t0 is not None:
                latencies[msg.port].append(t - t0)
                unplugged_at[msg.port] = None

    board.on_frame = on_frame

    async def wait(cond: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError("the station did not react")
            await asyncio.sleep(0.001)

    async def cycle(index: int, count: int) -> None:
        pid = str(index + 1)
        for _ in range(count):
            board.plug(EvSpec(port=pid, max_a=32.0, response_s=0.1))
            await wait(lambda: board.port_status(index).contactor_fb)
            # A random phase against the station's 50 ms tick.
            await asyncio.sleep(rng.uniform(0.02, 0.12))
            unplugged_at[index] = board.unplug(pid)
            await wait(lambda: unplugged_at[index] is None)  # on_frame took the command
            await asyncio.sleep(0.06)  # let the station see A before the next plug-in

    while True:
        command = await _recv(conn)
        if command == "stop":
            break
        for lat in latencies.values():
            lat.clear()
        await asyncio.gather(cycle(0, events // 2), cycle(1, events - events // 2))
        conn.send([x for lat in latencies.values() for x in lat])
    await board.stop()
    board.close()


# --- the station's side ------------------------------------------------------------------


async def _latency(conn: Connection, path: str, event_driven: bool) -> list[float]:
    from firmware.app import build_station
    from firmware.config import load_station
    from firmware.runner import RealtimeRunner
    from hal.serial.backend import SerialBoard

    config = dataclasses.replace(
        load_station(ROOT / "configs" / "ct4000.yaml"), hardware_url=f"serial://{path}"
    )
    station = build_station(config)
    runner = RealtimeRunner(station)
    task = asyncio.create_task(runner.run())
    while station.last is None:
        await asyncio.sleep(0.01)
    hardware = station.hardware
    assert isinstance(hardware, SerialBoard)
    if not event_driven:
        hardware.on_input_change = None  # the period alone: the runner's wake-up switched off
    conn.send("go")
    result: list[float] = await _recv(conn)
    runner.stop()
    await task
    return result


def _throughput(path: str, seconds: float, depth: int) -> tuple[float, int]:
    """Status replies per second with ``depth`` requests in flight; the status frame size."""
    import serial

    from hal.serial.protocol import FrameParser, ReadStatus, Status, encode

    ser = serial.Serial(path, BAUD, timeout=1.0)
    parser = FrameParser()
    request = encode(ReadStatus(), 1)
    replies = 0
    ser.write(request * depth)
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        data = ser.read(ser.in_waiting or 1)
        for _, msg in parser.feed(data):
            if isinstance(msg, Status):
                replies += 1
                ser.write(request)
    elapsed = time.perf_counter() - start
    while ser.read(4096):  # drain what is still in flight
        pass
    ser.close()
    return replies / elapsed, _status_frame_bytes(2)


def _status_frame_bytes(ports: int) -> int:
    from hal.serial.protocol import PortStatus, Status, encode

    port = PortStatus(0, 0, 0, 0, False, False, False, False, 0)
    return len(encode(Status(0, False, False, 0, 0, 0, (port,) * ports), 1))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200, help="unplugs per latency run")
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput run")
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=board_process, args=(theirs, args.events, 1), daemon=True)
    child.start()
    path = ours.recv()
    print(f"serial link bench: board simulator in its own process on {path}")
    print(
        f"\nlatency, EV unplug at the board (C -> A, event sent) -> contactor-open command "
        f"received by the board, {args.events} unplugs each:"
    )
    for event_driven, label in (
        (True, "RealtimeRunner as shipped (50 ms, woken by board events)"),
        (False, "RealtimeRunner, 50 ms period only (wake-up off)"),
    ):
        lat = asyncio.run(_latency(ours, path, event_driven))
        ms = [x * 1000.0 for x in lat]
        print(
            f"  {label:56s} p50 {statistics.median(ms):5.1f} ms  p99 {_pct(ms, 0.99):5.1f} ms  "
            f"max {max(ms):5.1f} ms  (n={len(ms)})"
        )
    print("  goal p99 <= 50 ms; IEC 61851-1 (docs/design.md): open within 100 ms")

    request_bytes = 6
    print(f"\nlink throughput, READ_STATUS ({request_bytes} bytes) -> STATUS back to back:")
    rate_1, size = _throughput(path, args.seconds, 1)
    rate_8, _ = _throughput(path, args.seconds, 8)
    line_bytes_s = BAUD / BITS_PER_BYTE
    one_way = line_bytes_s / size
    round_trip = line_bytes_s / (size + request_bytes)
    print(f"  measured over the pty, one request at a time: {rate_1:7.0f} round trips/s")
    print(f"  measured over the pty, 8 requests in flight:  {rate_8:7.0f} status frames/s")
    print(
        f"  theoretical at {BAUD} baud 8N1 ({line_bytes_s:.0f} bytes/s), {size}-byte status "
        f"frame: {one_way:.0f} status frames/s one way (the board -> host direction limits; "
        f"requests travel the other way at the same time); one at a time, "
        f"{round_trip:.0f} round trips/s before any processing time"
    )
    print(
        "  a pty does not pace bytes at the baud rate: the measured rates are what the two "
        "Python ends sustain, the theoretical ones what a real 115200 baud UART allows"
    )
    ours.send("stop")
    child.join(10)


if __name__ == "__main__":
    main()
