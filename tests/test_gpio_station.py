"""A Raspberry Pi station through the GPIO backend, with no hardware: the real backend
(hal/gpio/backend.py) over the simulated Pi (hal/gpio/nohw.py): the kernel's PWM files in a
temporary folder, gpiozero's MockFactory, an MCP3008 answering SPI byte by byte, and the
simulated pilot bus's vehicles. Also the board files' refusals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from firmware.app import build_station
from firmware.config import load_station
from firmware.runner import RealtimeRunner
from firmware.station import Station
from hal.clock import StationClock
from hal.gpio.backend import GpioStation
from hal.gpio.board import BoardError, load_board
from hal.gpio.nohw import NoHardware
from hal.pilot import amps_to_duty

ROOT = Path(__file__).resolve().parent.parent
NOHW = ROOT / "configs" / "pi-jumper-nohw.yaml"
REFERENCE = ROOT / "hal" / "gpio" / "boards" / "reference.yaml"
DUTY_16A_NS = round(amps_to_duty(16.0) * 10_000)  # 0.1 % of a 1,000,000 ns period = 1,000 ns


def _config(tmp_path: Path, evs: str | None = None) -> Path:
    text = NOHW.read_text().replace("/tmp/ampshare-pwm", str(tmp_path / "pwm"))
    if evs is not None:
        text = text[: text.index("gpio:\n")] + f"gpio:\n  evs:\n{evs}"
    path = tmp_path / "station.yaml"
    path.write_text(text)
    return path


def _duty(tmp_path: Path, channel: int) -> tuple[int, bool] | None:
    """A channel's (duty_cycle, enabled), None before it is exported or while it is written."""
    base = tmp_path / "pwm" / "pwmchip0" / f"pwm{channel}"
    try:
        duty = int((base / "duty_cycle").read_text())
        return duty, (base / "enable").read_text().strip() == "1"
    except (FileNotFoundError, ValueError):
        return None


def _at(tmp_path: Path, channel: int, ns: int) -> bool:
    now = _duty(tmp_path, channel)
    return now is not None and now[1] and abs(now[0] - ns) <= 1_000


def _run(
    config: Path, body: Callable[[Station, NoHardware], Coroutine[Any, Any, None]]
) -> tuple[Station, NoHardware]:
    async def main() -> tuple[Station, NoHardware]:
        clock = StationClock()
        station = build_station(load_station(config), clock=clock)
        hardware = station.hardware
        assert isinstance(hardware, GpioStation)
        world = hardware.world
        assert isinstance(world, NoHardware)
        runner = RealtimeRunner(station, clock=clock)
        task = asyncio.create_task(runner.run())
        try:
            await body(station, world)
        finally:
            runner.stop()
            await asyncio.wait_for(task, 10)
        return station, world

    return asyncio.run(main())


async def _until(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    # Bounds a hang; it does not time the system.
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _view(station: Station, port: str) -> Any:
    assert station.last is not None
    return next(v for v in station.last.ports if v.id == port)


@pytest.mark.slow
def test_a_jumper_station_shares_16_a_each_through_the_pwm_files_and_leaves_them_safe(
    tmp_path: Path,
) -> None:
    """Two cars on the 40 A feed: 50/50 of 32 A, written as duty_cycle into sysfs."""
    config = _config(tmp_path)

    async def body(station: Station, world: NoHardware) -> None:
        await _until(
            "both pilots at 16 A",
            lambda: all(_at(tmp_path, ch, DUTY_16A_NS) for ch in (0, 1)),
        )
        # What the vehicles see is what was written: each reads 16 A from its pilot (26.6 %:
        # the 0.1 % grid rounds down, 15.96 A, on the safe side).
        for pid in ("1", "2"):
            assert world.bus.port(pid).offer_seen() == (True, pytest.approx(16.0, abs=0.05))
            assert world.bus.port(pid).feedback()  # the contactor pulled in through its pin
        assert world.kernel.errors == []  # never a duty above the period, never period 0

    _, world = _run(config, body)
    # Left safe: pilots at -12 V (state F: duty 0, enabled), every coil released.
    for ch in (0, 1):
        assert _duty(tmp_path, ch) == (0, True)
    for pins in world.board.ports:
        assert world.factory.pin(pins.contactor).state == 0
    assert world.factory.pin(world.board.keepalive).state == 0


@pytest.mark.slow
def test_weld_gfci_and_jumper_sense_reach_the_port_machines_through_the_pins(
    tmp_path: Path,
) -> None:
    evs = (
        "    - {port: 1, arrive: 0.5s, leave: 3s, max_a: 32, response_s: 0.5}\n"
        "    - {port: 2, arrive: 0.5s, max_a: 32, response_s: 0.5}\n"
    )
    config = _config(tmp_path, evs)

    async def body(station: Station, world: NoHardware) -> None:
        world.bus.inject("1", "weld")  # welds when it next closes
        await _until("port 2 charging", lambda: world.bus.port("2").feedback())
        # Port 1's car leaves; the coil is released but the feedback contact stays closed.
        await _until("weld lockout", lambda: _view(station, "1").fault == "weld")
        assert world.factory.pin(world.board.ports[0].contactor).state == 0
        await _until("port 1 in state F", lambda: _duty(tmp_path, 0) == (0, True))
        # A ground fault on port 2: the module's trip input opens the port at once.
        world.bus.inject("2", "gfci")
        await _until("gfci", lambda: _view(station, "2").fault == "gfci")
        assert world.factory.pin(world.board.ports[1].contactor).state == 0
        # The jumper sense says "absent" on a station configured with the jumper.
        world.bus.jumper.value = False
        await _until("inhibit", lambda: station.last is not None and bool(station.last.inhibit))

    _run(config, body)


def test_the_keepalive_toggles_with_the_ticks_and_stops_when_the_loop_stalls(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, "    []\n")

    async def body(station: Station, world: NoHardware) -> None:
        pin = world.factory.pin(world.board.keepalive)
        await _until("ticks", lambda: len(pin.states) > 5)
        before = len(pin.states)
        await asyncio.sleep(0.5)
        assert len(pin.states) > before  # toggling while the loop runs
        # A hung process: the loop is blocked (as by a stuck call) for half a second.
        stalled_from = len(pin.states)
        time.sleep(0.5)
        assert len(pin.states) == stalled_from  # still: the charge pump lets the relays drop
        await _until("toggling again", lambda: len(pin.states) > stalled_from + 2)

    _run(config, body)


@pytest.mark.slow
def test_ampshare_run_on_the_shipped_nohw_config_writes_the_duty_a_user_can_watch(
    tmp_path: Path,
) -> None:
    """As the README says: ``ampshare run --config configs/pi-jumper-nohw.yaml`` on any
    machine, watching ``pwmchip0/pwm0/duty_cycle`` change (here in a fresh folder)."""
    config = _config(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "run", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        # Until both pilots offer 16 A (bounded: this waits on the station, it does not time it).
        end = time.monotonic() + 90.0
        while not all(_at(tmp_path, ch, DUTY_16A_NS) for ch in (0, 1)):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < end, "both pilots never reached 16 A"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)  # as a user stops it
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "port 2: C2, offer 16.0 A" in err
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith("stopped by SIGINT: every port left safe (PWM off, contactor open)")
    )
    assert _duty(tmp_path, 0) == (0, True) and _duty(tmp_path, 1) == (0, True)


def test_the_reference_board_loads_by_name_and_matches_its_file() -> None:
    board = load_board("reference")
    assert board == load_board(str(REFERENCE))
    assert [p.pwm_channel for p in board.ports] == [0, 1]
    assert board.burst >= 100  # two PWM periods at the SPI clock's ceiling


_BOARD = REFERENCE.read_text()


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        (
            "contactor: 27",
            "contactor: 17",
            "ports[1].contactor: GPIO 17 is already ports[0].contactor",
        ),
        ("keepalive: 21", "keepalive: 10", "keepalive: GPIO 10 is already adc (SPI0)"),
        ("pilot: 13 ", "pilot: 18 ", "ports[1].pilot: PWM channel 0 is already ports[0]'s pilot"),
        (
            "pilot: 13 ",
            "pilot: 4 ",
            "ports[1].pilot: GPIO 4 has no hardware PWM on a Raspberry Pi 4",
        ),
        ("pi: 4", "pi: 3", "pi: Raspberry Pi 3 is not supported"),
        ("chip: mcp3008", "chip: mcp3004", None),  # fine: channels 0 and 1
        ("adc_channel: 1", "adc_channel: 9", "ports[1].adc_channel: 9 is out of range"),
        ("r_top_ohm: 100000", "r_top_ohm: 10000", "adc.divider"),
        ("contactr", "contactr", None),
        ("    contactor: 27", "    contactr: 27", "did you mean 'contactor'"),
    ],
)
def test_board_files_are_refused_with_file_line_field(
    tmp_path: Path, old: str, new: str, where: str | None
) -> None:
    path = tmp_path / "board.yaml"
    assert old in _BOARD or old == "contactr"
    path.write_text(_BOARD.replace(old, new, 1))
    if where is None:
        load_board(str(path))
        return
    with pytest.raises(BoardError) as caught:
        load_board(str(path))
    text = str(caught.value)
    assert text.startswith(f"{path}:") and where in text, text


def test_a_pi_5_board_has_four_pwm_channels(tmp_path: Path) -> None:
    path = tmp_path / "pi5.yaml"
    path.write_text(_BOARD.replace("pi: 4", "pi: 5").replace("pilot: 13 ", "pilot: 19 "))
    board = load_board(str(path))
    assert board.pwm_device == "1f00098000.pwm"
    assert [p.pwm_channel for p in board.ports] == [0, 3]


def test_a_loose_wire_on_any_input_reads_the_safe_way() -> None:
    """Every input is pulled up: undriven, an active-high GFCI trip reads tripped and an
    active-high contactor feedback reads closed (a weld, not a false all-clear)."""
    from gpiozero.pins.mock import MockFactory

    from hal.gpio.board import Input
    from hal.gpio.pins import GpioContactor, GpioGround, GpioJumper

    factory = MockFactory()
    assert GpioGround(factory, Input(5), None).gfci_tripped()
    assert GpioContactor(factory, 17, Input(22)).feedback()
    assert not GpioContactor(factory, 27, Input(23, active_low=True)).feedback()
    assert not GpioJumper(factory, Input(26, active_low=True)).installed()
    driven = GpioGround(factory, Input(6), None)
    factory.pin(6).drive_low()  # the module's output says: not tripped
    assert not driven.gfci_tripped()
