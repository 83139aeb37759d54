"""Benchmark: the Modbus meter backend's poll cycle, beside the protocol's own floor.

Run: ``.venv/bin/python bench/bench_modbus.py [--cycles 200]``. Measures, in one run, with the
backend's own ``Line.poll`` (batched reads, construct decoding) against pymodbus's server:

* two SDM630s (units 1 and 2) on one Modbus TCP server on loopback, polled in turn over one
  connection: one 76-register read each. Beside it, the floor: a bare asyncio round trip on
  the same loopback with the same frame sizes (MBAP: 7-byte header + 5-byte PDU = 12-byte
  request; 7 + 2 + 2 x 76 = 161-byte response), once per request. Loopback wire time is
  negligible, so the ratio measured / floor is the software cost of pymodbus and ours.
* one SDM630 over Modbus RTU at 9600 baud 8N1 through a pseudo-terminal pair with pyserial.
  A pty does not pace bytes at the baud rate, so this measures the software overhead only;
  the floor printed beside it is the wire time a real RS485 line adds (Modbus over Serial
  Line V1.02, 2.5.1: 8N1 is 10 bits a character; 2.5.1.1: at least 3.5 character times of
  silence between frames): (8-byte request + 5 + 2 x 76 = 157-byte response + 2 x 3.5) x 10
  bits / 9600 baud, before the meter's own response latency (not given by Eastron).
* the same meters read one quantity per request (what a map without batching would do), for
  the ratio batching buys.

Prints mean, p50 and p99 per cycle and the ratios, measured in the same run; never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hal.modbus.maps import MeterMap, load_map
from hal.modbus.meter import Line, parse_url, quiet_pymodbus
from hal.modbus.ptypair import PtyPair
from hal.modbus.server import MeterServer, SerialPort

BAUD = 9600
BITS_PER_CHAR = 10  # 8N1: start + 8 data + stop (Modbus over Serial Line V1.02, 2.5.1)
GAP_CHARS = 3.5  # silent interval between frames (V1.02, 2.5.1.1)
MBAP = 7  # MODBUS Messaging on TCP/IP Implementation Guide V1.0b, 3.1.3


def rtu_request_bytes() -> int:
    return 1 + 1 + 2 + 2 + 2  # address, function, start, quantity, CRC


def rtu_response_bytes(registers: int) -> int:
    return 1 + 1 + 1 + 2 * registers + 2  # address, function, byte count, data, CRC


def rtu_wire_s(registers: int, baud: int = BAUD) -> float:
    chars = rtu_request_bytes() + rtu_response_bytes(registers) + 2 * GAP_CHARS
    return chars * BITS_PER_CHAR / baud


def tcp_sizes(registers: int) -> tuple[int, int]:
    return MBAP + 5, MBAP + 2 + 2 * registers


def one_per_quantity(meter_map: MeterMap) -> MeterMap:
    """The same map with every quantity its own request (no batching)."""
    largest = max(q.words for q in meter_map.quantities)
    return dataclasses.replace(meter_map, max_gap=0, max_registers=largest)


async def timed(cycle: Callable[[], Awaitable[None]], cycles: int) -> list[float]:
    for _ in range(10):  # warm up: connect, caches
        await cycle()
    out = []
    for _ in range(cycles):
        t0 = time.perf_counter()
        await cycle()
        out.append(time.perf_counter() - t0)
    return out


def stats(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.fmean(samples), statistics.median(samples), p99


def ms(x: float) -> str:
    return f"{x * 1000:8.3f} ms"


async def raw_round_trips(request: int, response: int, cycles: int) -> list[float]:
    """Bare asyncio TCP round trips on loopback with these frame sizes (the TCP floor)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readexactly(request):
                writer.write(b"\0" * response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def one() -> None:
        writer.write(b"\0" * request)
        await reader.readexactly(response)

    try:
        return await timed(one, cycles)
    finally:
        writer.close()
        server.close()


async def tcp_bench(cycles: int) -> None:
    sdm630 = load_map("sdm630")
    server = MeterServer(sdm630, units=(1, 2))
    await server.start()
    server.set(1, amps=16.0)
    server.set(2, amps=10.0)
    registers = sdm630.blocks[0].count
    line = Line(parse_url(f"{server.url_base}?unit=1&model=sdm630"))

    def cycle_of(meter_map: MeterMap) -> Callable[[], Awaitable[None]]:
        async def cycle() -> None:
            for unit in (1, 2):
                await line.poll(unit, meter_map, 1.0, 0)

        return cycle

    try:
        batched = await timed(cycle_of(sdm630), cycles)
        single = one_per_quantity(sdm630)
        unbatched_samples = await timed(cycle_of(single), cycles)
    finally:
        await line.close()
        await server.stop()
    request, response = tcp_sizes(registers)
    floor = await raw_round_trips(request, response, cycles)
    requests = 2 * len(sdm630.blocks)
    mean, p50, p99 = stats(batched)
    floor_p50 = statistics.median(floor) * requests
    print(f"TCP, two SDM630s on one server (loopback), {cycles} cycles")
    print(
        f"  requests per cycle       {requests} of {registers} registers: "
        f"{request} B -> {response} B (MBAP header {MBAP} B)"
    )
    print(f"  poll cycle               mean {ms(mean)}  p50 {ms(p50)}  p99 {ms(p99)}")
    one_trip = ms(floor_p50 / requests).strip()
    print(f"  floor: bare round trips  p50 {ms(floor_p50)}  ({requests} x {one_trip})")
    ratio = p50 / floor_p50
    print(f"  ratio measured / floor   {ratio:8.1f} x  (p50: pymodbus + backend software cost)")
    u_mean, u_p50, u_p99 = stats(unbatched_samples)
    n_single = 2 * len(single.blocks)
    print(f"  one request per quantity ({n_single} requests)")
    print(f"                           mean {ms(u_mean)}  p50 {ms(u_p50)}  p99 {ms(u_p99)}")
    print(f"  batching gain            {u_p50 / p50:8.1f} x  (p50 unbatched / batched)")


async def rtu_bench(cycles: int) -> None:
    sdm630 = load_map("sdm630")
    registers = sdm630.blocks[0].count
    with PtyPair() as pty:
        server = MeterServer(sdm630, units=(1,), serial=SerialPort(pty.a, baud=BAUD))
        await server.start()
        server.set(1, amps=16.0)
        line = Line(parse_url(f"modbus-rtu://{pty.b}?baud={BAUD}&parity=N&unit=1&model=sdm630"))

        def cycle_of(meter_map: MeterMap) -> Callable[[], Awaitable[None]]:
            async def cycle() -> None:
                await line.poll(1, meter_map, 1.0, 0)

            return cycle

        try:
            batched = await timed(cycle_of(sdm630), cycles)
            single = one_per_quantity(sdm630)
            unbatched_samples = await timed(cycle_of(single), cycles)
        finally:
            await line.close()
            await server.stop()
    wire = rtu_wire_s(registers)
    wire_single = sum(rtu_wire_s(b.count) for b in single.blocks)
    mean, p50, p99 = stats(batched)
    u_p50 = statistics.median(unbatched_samples)
    print(f"RTU, one SDM630 at {BAUD} baud 8N1 through a pty pair (pyserial), {cycles} cycles")
    print(
        f"  frames                   request {rtu_request_bytes()} B, response "
        f"{rtu_response_bytes(registers)} B, 2 x {GAP_CHARS} chars of silence"
    )
    print(f"  poll cycle on the pty    mean {ms(mean)}  p50 {ms(p50)}  p99 {ms(p99)}")
    print("  (a pty does not pace at the baud rate: this is the software overhead alone)")
    print(
        f"  theoretical wire minimum      {ms(wire)}  at {BAUD} baud (meter latency not included)"
    )
    print(f"  expected on a real line       {ms(wire + p50)}  (wire + measured overhead)")
    print(f"  overhead / wire time     {p50 / wire:8.3f}    (p50)")
    print(
        f"  one request per quantity pty p50 {ms(u_p50)}, wire minimum {ms(wire_single)} "
        f"({len(single.blocks)} requests): batching saves {wire_single / wire:.1f} x on the wire"
    )


async def main(cycles: int) -> None:
    quiet_pymodbus()
    t0 = time.perf_counter()
    sum(range(1000))
    print(f"machine: sum(range(1000)) in {(time.perf_counter() - t0) * 1e6:.1f} us")
    await tcp_bench(cycles)
    await rtu_bench(cycles)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.cycles))
