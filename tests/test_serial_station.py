"""The station against the simulated pilot board over a real pseudo-terminal.

The board (``hal.serial.board.BoardSim``) runs in this process on the master side of a pty; the
station opens the slave device with pyserial through ``serial://`` (``hal.serial.backend``) and
runs with the real-time runner. Waits poll for a condition with a generous timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from firmware import port as pm
from firmware.app import build_station
from firmware.config import load_station
from firmware.runner import RealtimeRunner
from firmware.station import PortView, Station
from hal.interfaces import BackendContext
from hal.registry import BackendError
from hal.serial.backend import (
    WELD_DETECT_DEFAULT_S,
    SerialBoard,
    open_hardware,
    parse_url,
)
from hal.serial.board import BoardSim, open_pty
from hal.serial.protocol import (
    LOW_NONE,
    FrameParser,
    Heartbeat,
    Message,
    Output,
    PortStatus,
    ReadStatus,
    Status,
)
from hal.sim.bus import SimBus
from hal.sim.ev import EvSpec

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "ct4000-jumper-board.yaml"


async def until(cond: Callable[[], bool], what: str, timeout: float = 6.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _context(port_ids: list[str], weld_detect_s: float | None = None) -> BackendContext:
    """What a station opens its board with: these ports, at 208 V."""
    return BackendContext(tuple(port_ids), (208.0,) * len(port_ids), weld_detect_s=weld_detect_s)


def view(station: Station, port_id: str) -> PortView | None:
    snap = station.last
    if snap is None:
        return None
    return next(v for v in snap.ports if v.id == port_id)


def mode(station: Station, port_id: str) -> pm.Mode | None:
    v = view(station, port_id)
    return None if v is None else v.mode


def charging_at(station: Station, port_id: str, amps: float) -> bool:
    v = view(station, port_id)
    return v is not None and v.mode is pm.Mode.C2 and v.contactor and v.offer_a == amps


def drawn(station: Station, port_id: str) -> float | None:
    v = view(station, port_id)
    return None if v is None else v.drawn_a


def ev(port: str) -> EvSpec:
    return EvSpec(port=port, max_a=32.0, response_s=0.3, battery_kwh=60.0)


@contextlib.asynccontextmanager
async def station_on_board(
    query: str = "",
) -> AsyncIterator[tuple[BoardSim, Station, SerialBoard]]:
    bus = SimBus(["1", "2"], jumper=True, noise_a=0.0)
    board = BoardSim.on_pty(bus)
    await board.start()
    config = dataclasses.replace(load_station(CONFIG), hardware_url=f"serial://{board.path}{query}")
    station = build_station(config)
    assert isinstance(station.hardware, SerialBoard)
    runner = RealtimeRunner(station)
    task = asyncio.create_task(runner.run())
    try:
        yield board, station, station.hardware
    finally:
        runner.stop()
        await asyncio.wait_for(task, 5.0)
        await board.stop()
        board.close()


CLOSED = PortStatus(600, -1200, Output.PWM, 500, True, True, False, True, 3000)
IDLE = PortStatus(1200, LOW_NONE, Output.STEADY, 0, False, False, False, True, 0)


def status(*ports: PortStatus, safe: bool = False) -> Status:
    return Status(5000, True, safe, 350, 500, 0, ports)


@contextlib.asynccontextmanager
async def host_on_pty(
    t: list[float], query: str = "", ports: int = 2
) -> AsyncIterator[tuple[SerialBoard, Callable[[], list[Message]]]]:
    """The backend on a pty whose board side the test holds as a bare fd, on a clock the
    test moves; yields it and a function returning the frames it sent since the last call
    (which also drains the pty)."""
    master, slave, path = open_pty()
    hw = SerialBoard(
        parse_url(f"serial://{path}{query}"),
        [str(i + 1) for i in range(ports)],
        [208.0] * ports,
        clock=lambda: t[0],
    )
    parser = FrameParser()

    def sent() -> list[Message]:
        frames: list[Message] = []
        while True:
            try:
                data = os.read(master, 65536)
            except BlockingIOError:
                return frames
            frames += [m for _, m in parser.feed(data)]

    hw._loop = asyncio.get_running_loop()
    hw._open()  # what start() does, without the link task (the test is the link task)
    try:
        yield hw, sent
    finally:
        hw._close()
        os.close(master)
        os.close(slave)


def test_url_parameters() -> None:
    s = parse_url("serial:///dev/ttyAMA0?baud=57600&heartbeat=50ms&watchdog=1s")
    assert (s.device, s.baud, s.heartbeat_s, s.watchdog_s, s.lost_s) == (
        "/dev/ttyAMA0",
        57600,
        0.05,
        1.0,
        1.0,
    )
    from hal.registry import BackendError

    for bad in (
        "serial://host/dev/x",
        "serial:///dev/x?speed=9600",
        "serial:///dev/x?baud=fast",
        "serial:///dev/x?watchdog=20ms",
        "serial:///dev/x?heartbeat=400ms",
        "serial:///dev/x?lost=100ms",
        "serial:///dev/x?weld_detect=fast",
    ):
        with pytest.raises(BackendError):
            parse_url(bad)
    hw = open_hardware("serial:///dev/null-board", _context(["1", "2"]))
    assert len(hw.ports) == 2 and hw.next_change(0.0) is None
    assert parse_url("serial:///dev/x?weld_detect=2s").weld_detect_s == 2.0


def test_a_lost_board_reads_maybe_closed_until_its_watchdog_must_have_opened() -> None:
    """The "Board lost" rules of docs/serial-protocol.md, on a clock the test moves."""

    async def main() -> None:
        t = [100.0]
        async with host_on_pty(t) as (hw, _):
            hw._send_heartbeat(t[0])  # what the link task does every 100 ms while it hears
            hw._received([(1, status(CLOSED, IDLE))])
            pilot, contactor = hw.ports[0].pilot, hw.ports[0].contactor
            assert pilot.sample().high_v == 6.0 and contactor.feedback()
            assert hw.ports[0].meter.latest().max_amps == 30.0  # type: ignore[union-attr]
            t[0] += 0.2
            assert hw._may_heartbeat(t[0])  # heard 200 ms ago: heartbeats go on
            hw._send_heartbeat(t[0])
            t[0] += 0.2
            assert not hw._may_heartbeat(t[0])  # 400 ms: no more heartbeats for an unheard board
            t[0] += 0.11
            # 510 ms without a status: lost. The pilot is an error, the contactor may still be
            # closed until the last heartbeat (sent at 200 ms, on the wire 0.7 ms later at
            # 115200 baud) + the 500 ms watchdog + 50 ms margin.
            assert hw.lost and math.isnan(pilot.sample().high_v)
            assert contactor.feedback() and not hw.ports[1].contactor.feedback()
            t[0] += 0.23  # 740 ms
            assert contactor.feedback()
            t[0] += 0.02  # 760 ms: the board's watchdog has opened it
            assert not contactor.feedback()
        # With the default settings, the longest such window after the port machine opened
        # (heartbeats until 300 ms, lost at 500 ms) stays under the weld detection time.
        window = hw.settings.maybe_closed_window_s
        assert window == pytest.approx(0.35) and window < pm.PortConfig().weld_detect_s

    asyncio.run(main())


def heartbeats(frames: list[Message]) -> int:
    return sum(isinstance(m, Heartbeat) for m in frames)


def test_no_heartbeat_before_a_valid_status_and_a_wrong_board_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A board is armed only from an accepted status: not while nothing is heard (a broken
    receive line), not for a board reporting another port count (loud, logged once)."""
    caplog.set_level(logging.INFO, logger="ampshare.serial")

    async def main() -> None:
        t = [100.0]
        async with host_on_pty(t) as (hw, sent):
            assert [type(m) for m in sent()] == [ReadStatus]  # the open asks, arms nothing
            for _ in range(10):  # a second of link-task turns, nothing heard
                t[0] += 0.1
                hw._heartbeat_and_poll(t[0])
            assert heartbeats(sent()) == 0 and hw.lost
            for seq in range(3):  # a 3-port board answers a 2-port station
                hw._received([(seq, status(IDLE, IDLE, IDLE, safe=True))])
                t[0] += 0.1
                hw._heartbeat_and_poll(t[0])
            assert heartbeats(sent()) == 0
            assert hw.lost and hw.stats.wrong_board == 3 and hw.last_status is None
            assert math.isnan(hw.ports[0].pilot.sample().high_v)
            assert not hw.ports[0].contactor.feedback()
            # The right board answers: accepted, armed at once, heartbeats go on.
            hw._received([(4, status(IDLE, IDLE, safe=True))])
            assert heartbeats(sent()) == 1 and not hw.lost
            t[0] += 0.1
            hw._heartbeat_and_poll(t[0])
            assert heartbeats(sent()) == 1
            # The wrong board again while charging: lost at once, heartbeats stop.
            hw._received([(5, status(CLOSED, IDLE, IDLE))])
            assert hw.lost
            t[0] += 0.1
            hw._heartbeat_and_poll(t[0])
            assert heartbeats(sent()) == 0
            assert hw.ports[0].contactor.feedback() is False  # it never showed a closed one

    asyncio.run(main())
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2, [r.getMessage() for r in errors]  # two episodes, once each
    assert "reports 3 ports, the station has 2" in errors[0].getMessage()


@pytest.mark.parametrize("fault", ["three-port board", "board never heard"])
def test_a_board_the_host_never_heard_validly_is_never_armed(fault: str) -> None:
    """Against the simulated board: a wrong port count, or a line from the board that is cut
    (the board hears the host, the host never hears it)."""

    async def main() -> None:
        ports = ["1", "2", "3"] if fault == "three-port board" else ["1", "2"]
        board = BoardSim.on_pty(SimBus(ports, jumper=True, noise_a=0.0))
        board.silent = fault == "board never heard"
        await board.start()
        hw = open_hardware(f"serial://{board.path}", _context(["1", "2"]))
        assert isinstance(hw, SerialBoard)
        try:
            await hw.start()
            await until(lambda: board.stats.statuses >= 5, "five status requests at the board")
            hw.ports[0].contactor.command(True)
            await until(lambda: board.stats.commands >= 1, "the close command at the board")
            assert board.last_heartbeat is None and not board.armed
            assert not board.port_status(0).contactor_cmd
            assert hw.lost and not hw.ports[0].contactor.feedback()
        finally:
            await hw.stop()
            await board.stop()
            board.close()

    asyncio.run(main())


def test_a_queued_heartbeat_counts_from_when_it_leaves_the_queue() -> None:
    """The watchdog runs from when the board gets a heartbeat: one waiting behind queued
    bytes keeps the "maybe closed" window open until it has gone out, and a lost board's
    queue is dropped so that no stale heartbeat reaches it late."""

    async def main() -> None:
        t = [100.0]
        async with host_on_pty(t) as (hw, sent):
            hw._received([(1, status(CLOSED, IDLE))])
            hw._send_heartbeat(t[0])
            sent()
            while not hw._tx:  # the board stops reading: the tty fills, then our queue
                hw._write(b"\x00" * 512)
            t[0] += 0.05
            hw._send_heartbeat(t[0])
            assert hw.safe_at() == math.inf
            t[0] += 1.0  # the board reads again a second later
            await until(lambda: not sent() and not hw._tx, "the queue sent")
            assert hw.safe_at() >= t[0] + hw.settings.watchdog_s
            # Queued again, then the board is declared lost: the queue goes, heartbeat and all.
            while not hw._tx:
                hw._write(b"\x00" * 512)
            hw._send_heartbeat(t[0])
            assert hw.safe_at() == math.inf
            hw._housekeeping_once(t[0] + hw.settings.lost_s + 0.01)
            assert not hw._tx and hw.safe_at() < t[0] + hw.settings.watchdog_s + 0.1

    asyncio.run(main())


def test_baud_rates_too_slow_for_the_heartbeat_schedule_are_refused() -> None:
    ok = open_hardware("serial:///dev/x?baud=9600", _context(["1", "2"]))
    assert ok.settings.baud == 9600  # 45 of 96 bytes per 100 ms each way
    with pytest.raises(BackendError, match=r"baud=2400 is too slow .* use baud >= 9000"):
        open_hardware("serial:///dev/x?baud=2400", _context(["1", "2"]))
    eight = [str(i) for i in range(1, 9)]
    with pytest.raises(BackendError, match="8-port status"):
        open_hardware("serial:///dev/x?baud=9600", _context(eight))
    slow = open_hardware("serial:///dev/x?baud=9600&heartbeat=300ms&watchdog=1s", _context(eight))
    assert slow.settings.heartbeat_s == 0.3


def test_energy_is_not_integrated_over_a_gap_longer_than_lost() -> None:
    t = [100.0]
    hw = SerialBoard(
        parse_url("serial:///dev/null-board"), ["1", "2"], [200.0, 200.0], clock=lambda: t[0]
    )
    meter = hw.ports[0].meter
    hw._received([(1, status(CLOSED, IDLE))])  # 30 A
    t[0] += 0.1
    hw._received([(2, status(CLOSED, IDLE))])
    wh = 30.0 * 200.0 * 0.1 / 3600.0
    assert meter.latest().energy_wh == pytest.approx(wh)  # type: ignore[union-attr]
    t[0] += 3600.0  # the board unheard for an hour (an unplugged adapter), then back
    hw._received([(3, status(CLOSED, IDLE))])
    assert meter.latest().energy_wh == pytest.approx(wh)  # type: ignore[union-attr]
    t[0] += 0.1
    hw._received([(4, status(CLOSED, IDLE))])
    assert meter.latest().energy_wh == pytest.approx(2 * wh)  # type: ignore[union-attr]


def test_the_weld_window_is_checked_against_the_weld_detection_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert pm.PortConfig().weld_detect_s == WELD_DETECT_DEFAULT_S
    caplog.set_level(logging.WARNING, logger="ampshare.serial")
    open_hardware("serial:///dev/x", _context(["1"]))  # 0.35 s < 0.5 s
    assert not caplog.records
    open_hardware("serial:///dev/x?weld_detect=300ms", _context(["1"]))
    open_hardware("serial:///dev/x", _context(["1"], weld_detect_s=0.3))
    assert len(caplog.records) == 2
    assert all("weld detection (0.3 s)" in r.getMessage() for r in caplog.records)


def test_two_evs_share_the_jumper_and_an_unplug_opens_its_contactor() -> None:
    async def main() -> None:
        async with station_on_board() as (board, station, hw):
            board.plug(ev("1"))
            board.plug(ev("2"))
            await until(
                lambda: charging_at(station, "1", 16.0) and charging_at(station, "2", 16.0),
                "both EVs charging at 16 A (50/50 of 80 % of 40 A)",
            )
            assert board.port_status(0).contactor_fb and board.port_status(1).contactor_fb
            assert board.port_status(0).duty_permille == 266  # 16 A / 0.6 on the 0.1 % grid
            board.unplug("1")
            await until(lambda: not board.port_status(0).contactor_cmd, "port 1 contactor open")
            assert board.port_status(1).contactor_fb
            await until(lambda: charging_at(station, "2", 30.0), "port 2 at its 30 A alone")
            await until(lambda: mode(station, "1") is pm.Mode.A, "port 1 idle")
            # The board's current transformers are the ports' meters.
            await until(lambda: drawn(station, "2") == pytest.approx(30.0, abs=0.1), "30 A")
            stats = hw.link_stats()
            assert stats["rx_frames"] > 0 and stats["rx_crc"] == stats["rx_skipped_bytes"] == 0
        # A clean stop leaves the board with PWM off and contactors open.
        assert board.port_status(1).output == Output.STEADY
        assert not board.port_status(1).contactor_cmd

    asyncio.run(main())


def test_garbage_on_the_line_is_survived() -> None:
    async def main() -> None:
        async with station_on_board() as (board, station, hw):
            board.plug(ev("1"))
            board.plug(ev("2"))
            await until(
                lambda: charging_at(station, "1", 16.0) and charging_at(station, "2", 16.0),
                "both charging",
            )
            noise = bytes(range(256)) + b"\x7e\x50" + b"\x7e" * 10 + b"\x7e\x05\x01\x81\x00"
            for _ in range(3):
                board.inject_bytes(noise)  # towards the host
                board.inject_to_board(noise)  # towards the board
                board.corrupt_next(2)  # bit flips in real frames (acks, statuses, events)
                await asyncio.sleep(0.15)
            await until(lambda: hw.link_stats()["rx_skipped_bytes"] > 700, "host saw garbage")
            stats = hw.link_stats()
            assert stats["rx_crc"] + stats["rx_length"] + stats["rx_truncated"] >= 3
            assert board.parser_stats["skipped_bytes"] > 700
            # Still charging, nobody faulted, and the link still carries commands: checked
            # after the host has accepted a few more statuses, not after a fixed sleep.
            statuses = hw.stats.statuses
            await until(lambda: hw.stats.statuses >= statuses + 3, "statuses after the noise")
            for pid in ("1", "2"):
                assert charging_at(station, pid, 16.0), view(station, pid)
            board.unplug("2")
            await until(lambda: not board.port_status(1).contactor_cmd, "port 2 contactor open")
            await until(lambda: charging_at(station, "1", 30.0), "port 1 at 30 A")

    asyncio.run(main())


def test_board_not_answering_holds_the_ports_open_and_recovers() -> None:
    async def main() -> None:
        async with station_on_board() as (board, station, hw):
            board.plug(ev("1"))
            await until(lambda: charging_at(station, "1", 30.0), "port 1 charging")
            board.mute = True  # the link is cut: nothing in, nothing out
            await until(lambda: hw.lost, "board declared lost")
            await until(
                lambda: mode(station, "1") is pm.Mode.E,
                "port 1 in E (pilot unknown)",
            )
            v = view(station, "1")
            assert v is not None and v.offer_a == 0.0 and v.fault == "pilot"
            # The board's own watchdog opened the contactor and stopped the PWM...
            await until(lambda: bool(board.trips), "board watchdog trip")
            assert not board.port_status(0).contactor_fb
            assert board.port_status(0).output == Output.STEADY
            # ...and the host saw "maybe closed" only until the watchdog time had passed.
            await until(lambda: not hw.ports[0].contactor.feedback(), "host feedback open")
            assert mode(station, "1") is not pm.Mode.LOCKOUT
            board.mute = False
            await until(lambda: charging_at(station, "1", 30.0), "port 1 charging again")
            # (at least: a loaded machine may stall the host long enough for one more)
            assert hw.stats.lost >= 1 and hw.stats.board_trips >= 1

    asyncio.run(main())


def test_a_board_restarted_on_a_new_pty_is_found_again(tmp_path: Path) -> None:
    """The board process dies (the host's reads fail) and comes back on another pty behind
    the same symlink, as ``ampshare board-sim --link`` does."""

    async def main() -> None:
        link = tmp_path / "board"
        first = BoardSim.on_pty(SimBus(["1", "2"], jumper=True, noise_a=0.0))
        await first.start()
        link.symlink_to(str(first.path))
        config = dataclasses.replace(load_station(CONFIG), hardware_url=f"serial://{link}")
        station = build_station(config)
        hw = station.hardware
        assert isinstance(hw, SerialBoard)
        runner = RealtimeRunner(station)
        task = asyncio.create_task(runner.run())
        second: BoardSim | None = None
        try:
            first.plug(ev("1"))
            await until(lambda: charging_at(station, "1", 30.0), "port 1 charging")
            await first.stop()
            first.close()
            await until(lambda: hw.stats.device_errors > 0, "the host's read fails")
            await until(lambda: mode(station, "1") is pm.Mode.E, "port 1 held open")
            assert mode(station, "1") is not pm.Mode.LOCKOUT
            second = BoardSim.on_pty(SimBus(["1", "2"], jumper=True, noise_a=0.0))
            await second.start()
            link.unlink()
            link.symlink_to(str(second.path))
            second.plug(ev("1"))
            await until(lambda: charging_at(station, "1", 30.0), "charging on the new board")
            assert hw.stats.opened == 2
        finally:
            runner.stop()
            await asyncio.wait_for(task, 5.0)
            if second is not None:
                await second.stop()
                second.close()

    asyncio.run(main())


def test_retries_and_a_board_that_answers_late() -> None:
    async def main() -> None:
        async with station_on_board() as (board, station, hw):
            board.plug(ev("1"))
            await until(lambda: charging_at(station, "1", 30.0), "port 1 charging")
            board.reply_delay_s = 0.08  # later than the 50 ms acknowledgement timeout
            board.unplug("1")
            await until(lambda: not board.port_status(0).contactor_cmd, "port 1 contactor open")
            await until(lambda: hw.stats.retries > 0, "a command resent")
            # The resend carried the same sequence number: the board knows it for a repeat.
            await until(lambda: board.stats.duplicates > 0, "the board saw the repeat")
            board.reply_delay_s = 0.0
            board.plug(ev("1"))
            await until(lambda: charging_at(station, "1", 30.0), "port 1 charging again")

    asyncio.run(main())


def test_killed_host_makes_the_board_safe_within_its_watchdog(tmp_path: Path) -> None:
    """``ampshare run`` in a subprocess, killed with SIGKILL: no clean shutdown at all."""

    async def main() -> None:
        bus = SimBus(["1", "2"], jumper=True, noise_a=0.0)
        board = BoardSim.on_pty(bus)
        await board.start()
        config = tmp_path / "station.yaml"
        config.write_text(
            CONFIG.read_text().replace(
                "hardware: serial:///tmp/ampshare-board?baud=115200",
                f"hardware: serial://{board.path}?baud=115200",
            )
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tools.cli",
            "run",
            "--config",
            str(config),
            "--no-live",
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            board.plug(ev("1"))
            await until(
                lambda: board.armed and board.port_status(0).contactor_fb, "charging", timeout=20.0
            )
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = board.now()
            await proc.wait()
            # The trip that follows the kill: the board disarmed, by a heartbeat from before it.
            await until(lambda: not board.armed and bool(board.trips), "board watchdog trip")
            trip = board.trips[-1]
            assert trip.last_heartbeat <= killed_at
            # The watchdog acts on its own clock, no earlier than its timeout after the last
            # heartbeat (the board's own record; no wall-clock upper bound on a loaded machine).
            assert trip.watchdog_s == pytest.approx(0.5)
            assert trip.at - trip.last_heartbeat >= trip.watchdog_s
            status = board.port_status(0)
            assert not status.contactor_cmd and not status.contactor_fb
            assert status.output == Output.STEADY
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await board.stop()
            board.close()

    asyncio.run(main())


def test_board_sim_command_on_a_link(tmp_path: Path) -> None:
    """``ampshare board-sim --link PATH`` as a user runs it, with a station against it."""

    async def main() -> None:
        link = tmp_path / "board"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tools.cli",
            "board-sim",
            "--ports",
            "2",
            "--link",
            str(link),
            "--ev",
            "port=1,arrive=0s,max_a=32,response_s=0.3",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await until(lambda: link.is_symlink(), "the symlink", timeout=20.0)
            # A second simulator on the same link is told the link is taken, not given it.
            second = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tools.cli",
                "board-sim",
                "--link",
                str(link),
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            _, second_err = await asyncio.wait_for(second.communicate(), 30.0)
            assert second.returncode == 2, second_err.decode()
            assert f"--link {link} is taken" in second_err.decode()
            assert b"Traceback" not in second_err
            config = dataclasses.replace(
                load_station(CONFIG), hardware_url=f"serial://{link}?baud=115200"
            )
            station = build_station(config)
            runner = RealtimeRunner(station)
            task = asyncio.create_task(runner.run())
            try:
                await until(lambda: charging_at(station, "1", 30.0), "port 1 charging")
            finally:
                runner.stop()
                await asyncio.wait_for(task, 5.0)
            proc.terminate()
            out, err = await asyncio.wait_for(proc.communicate(), 10.0)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err.decode()
        text = out.decode()
        assert text.startswith("board-sim: /dev/pts/") and f"(link {link})" in text
        # Board events are log records, on stderr, in the one format of tools.logs.
        log = err.decode()
        assert re.search(
            r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO    ampshare\.board-sim: "
            r"port 1: pilot  \+6\.0 V, pwm 50\.0 %, contactor closed",
            log,
            re.MULTILINE,
        ), log
        assert not link.exists() and not link.is_symlink()

    asyncio.run(main())


def test_board_sim_command_refuses_bad_vehicles() -> None:
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "board-sim", "--ev", "port=3,max_a=32"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "no port '3'" in proc.stderr, proc.stderr
