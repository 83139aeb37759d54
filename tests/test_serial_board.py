"""The simulated pilot board on its own, driven frame by frame through pyserial on a pty.

These pin down what docs/serial-protocol.md requires of a board (a real one must behave the
same): acknowledgements, refusals, events, and the heartbeat watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import serial

from hal.serial.board import BoardSim
from hal.serial.protocol import (
    Ack,
    AckCode,
    Event,
    FrameParser,
    Heartbeat,
    Message,
    Output,
    ReadStatus,
    SetContactor,
    SetPwm,
    Status,
    encode,
)
from hal.sim.bus import SimBus
from hal.sim.ev import EvSpec


class Host:
    """A bare host: pyserial on the pty's slave side, the protocol's codec, nothing else."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.parser = FrameParser()
        self.received: list[tuple[int, Message]] = []
        self._seq = 0

    def send(self, msg: Message) -> int:
        self._seq = (self._seq + 1) & 0xFF
        self.ser.write(encode(msg, self._seq))
        return self._seq

    def poll(self) -> None:
        waiting = self.ser.in_waiting
        if waiting:
            self.received += self.parser.feed(self.ser.read(waiting))

    async def answer(self, seq: int, kind: type[Message] = Ack, timeout: float = 5.0) -> Message:
        def found() -> Message | None:
            self.poll()
            for s, m in self.received:
                if s == seq and type(m) is kind:
                    return m
            return None

        await until(lambda: found() is not None, f"{kind.__name__} #{seq}", timeout)
        msg = found()
        assert msg is not None
        return msg

    async def keepalive(self, timeout_ms: int) -> None:
        while True:
            self.send(Heartbeat(timeout_ms))
            await asyncio.sleep(0.05)

    async def status(self) -> Status:
        msg = await self.answer(self.send(ReadStatus()), Status)
        assert isinstance(msg, Status)
        return msg

    def events(self) -> list[tuple[int, Event]]:
        self.poll()
        return [(s, m) for s, m in self.received if isinstance(m, Event)]


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def board_and_host(**kwargs: float) -> AsyncIterator[tuple[BoardSim, Host]]:
    board = BoardSim.on_pty(SimBus(["1", "2"], jumper=True, noise_a=0.0), **kwargs)
    await board.start()
    assert board.path is not None
    host = Host(board.path)
    try:
        yield board, host
    finally:
        host.ser.close()
        await board.stop()
        board.close()


def test_nothing_is_energised_without_a_heartbeat() -> None:
    async def main() -> None:
        async with board_and_host() as (board, host):
            status = await host.status()
            assert status.safe and status.jumper and len(status.ports) == 2
            assert await host.answer(host.send(SetPwm(0, 500))) == Ack(AckCode.DISARMED)
            assert await host.answer(host.send(SetContactor(0, True))) == Ack(AckCode.DISARMED)
            assert await host.answer(host.send(SetContactor(0, False))) == Ack(AckCode.OK)
            assert await host.answer(host.send(Heartbeat(500))) == Ack(AckCode.OK)
            assert await host.answer(host.send(SetPwm(0, 500))) == Ack(AckCode.OK)
            status = await host.status()
            assert not status.safe and status.watchdog_ms == 500
            assert status.ports[0].output == Output.PWM and status.ports[0].duty_permille == 500
            assert status.ports[0].pilot_low_cv == -1200  # PWM on: the negative plateau
            assert await host.answer(host.send(SetPwm(2, 500))) == Ack(AckCode.BAD_PORT)
            assert await host.answer(host.send(SetPwm(0, 1001))) == Ack(AckCode.BAD_VALUE)
            assert await host.answer(host.send(Heartbeat(0))) == Ack(AckCode.BAD_VALUE)
            assert board.stats.naks == 5

    asyncio.run(main())


def test_watchdog_opens_contactors_and_stops_pwm() -> None:
    async def main() -> None:
        # A watchdog no stall of a loaded machine reaches while the host keeps it alive; the
        # short one is asked for only once the host means to go quiet.
        async with board_and_host(heartbeat_timeout_s=10.0) as (board, host):
            # A host may ask for less than the board's longest watchdog time, never more.
            await host.answer(host.send(Heartbeat(30000)))
            assert (await host.status()).watchdog_ms == 10000
            keepalive = asyncio.create_task(host.keepalive(10000))
            board.plug(EvSpec(port="1", max_a=32.0))
            await host.answer(host.send(SetPwm(0, 500)))
            await until(lambda: board.port_status(0).pilot_high_cv == 600, "EV in C")
            await host.answer(host.send(SetContactor(0, True)))
            assert board.port_status(0).contactor_fb and not board.trips
            keepalive.cancel()  # the host goes quiet after one last, short heartbeat
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
            await host.answer(host.send(Heartbeat(200)))
            await until(lambda: bool(board.trips), "watchdog trip")
            trip = board.trips[0]
            assert trip.watchdog_s == 0.2 and trip.at - trip.last_heartbeat >= 0.2
            status = await host.status()
            assert status.safe and status.watchdog_trips == 1
            assert not status.ports[0].contactor_cmd and not status.ports[0].contactor_fb
            assert status.ports[0].output == Output.STEADY
            # A heartbeat re-arms; nothing comes back on by itself.
            await host.answer(host.send(Heartbeat(200)))
            status = await host.status()
            assert not status.safe and not status.ports[0].contactor_cmd

    asyncio.run(main())


def test_events_on_pilot_changes_carry_their_own_sequence() -> None:
    async def main() -> None:
        async with board_and_host() as (board, host):
            await host.status()
            board.plug(EvSpec(port="2", max_a=32.0))  # A -> B on port 2
            await until(lambda: len(host.events()) >= 2, "events")
            board.unplug("2")  # B -> A
            await until(lambda: len(host.events()) >= 3, "unplug event")
            events = host.events()
            seqs = [s for s, _ in events]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            assert events[-2][1].ports[1].pilot_high_cv == 900
            assert events[-1][1].ports[1].pilot_high_cv == 1200

    asyncio.run(main())


def test_a_partial_frame_left_idle_is_dropped_by_the_board() -> None:
    """A stray start byte and length must not swallow the host's next frames (heartbeats
    among them) until enough bytes arrive to fail the CRC: the board drops it after GAP_S of
    silence, as the host does (docs/serial-protocol.md, "Frames")."""

    async def main() -> None:
        async with board_and_host() as (board, host):
            host.ser.write(b"\x7e\x50")  # a frame of 80 body bytes begins, and never goes on
            await until(lambda: board.parser_stats["truncated"] >= 1, "the partial frame dropped")
            seq = host.send(Heartbeat(500))
            assert await host.answer(seq) == Ack(AckCode.OK)
            assert board.armed and board.parser_stats["crc"] == 0

    asyncio.run(main())


def test_garbage_towards_the_board_is_counted_and_answered_after() -> None:
    async def main() -> None:
        async with board_and_host() as (board, host):
            host.ser.write(b"\x7e\x7e\x03\x00\xff" + bytes(range(200)))
            status = await host.status()
            assert len(status.ports) == 2
            stats = board.parser_stats
            assert stats["skipped_bytes"] > 200 and stats["length"] + stats["crc"] >= 1
            frame = bytearray(encode(SetContactor(0, False), 77))
            frame[4] ^= 0x01  # a bit flip: the board must not act on it
            host.ser.write(bytes(frame))
            status = await host.status()
            assert board.parser_stats["crc"] >= 1
            assert all(s != 77 for s, _ in host.received)  # never acknowledged

    asyncio.run(main())
