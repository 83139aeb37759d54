"""What the station tells systemd (firmware/sdnotify.py), read from a real AF_UNIX datagram
socket as systemd would: READY=1 only once the ports are confirmed safe, WATCHDOG=1 at half
the interval and only while ticks are on time, STATUS= when it changes, STOPPING=1 at the end.

Timing is asserted loosely (the machine is shared): ping counts have a hard upper bound (the
notifier never pings twice within half the interval) and a generous lower one."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from firmware.app import build_station
from firmware.config import load_station
from firmware.port import Mode
from firmware.runner import RealtimeRunner
from firmware.sdnotify import SdNotify, StationNotifier, status_line
from firmware.station import Snapshot, Station
from hal.sim.bus import SimBus
from hal.sim.ev import EvSpec

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
WATCHDOG_USEC = 200_000  # pings every 0.1 s: many in a short run
HALF_S = WATCHDOG_USEC / 1e6 / 2
PERIOD_S = 0.05


Message = list[str]  # one datagram's KEY=VALUE fields


class Listener:
    """The systemd side: a datagram socket bound at a path or in the abstract namespace."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.env_value = "@" + address[1:] if address.startswith("\0") else address
        self.address = address

    def drain(self) -> list[Message]:
        """Every datagram queued now (a local datagram is queued when its send returns)."""
        out: list[Message] = []
        while True:
            try:
                data = self.sock.recv(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, TimeoutError):  # TimeoutError: a socket with a timeout
                return out
            out.append(data.decode().split("\n"))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Listener]:
    if request.param == "path":
        address = str(tmp_path / "notify")
    else:
        address = f"\0ampshare-test-{uuid.uuid4().hex}"
    lst = Listener(address)
    yield lst
    lst.close()


@pytest.fixture
def path_listener(tmp_path: Path) -> Iterator[Listener]:
    lst = Listener(str(tmp_path / "notify"))
    yield lst
    lst.close()


def _fields(messages: list[Message]) -> list[str]:
    return [f for m in messages for f in m]


def _statuses(messages: list[Message]) -> list[str]:
    return [f.removeprefix("STATUS=") for f in _fields(messages) if f.startswith("STATUS=")]


# --- the real command, as systemd starts it ---------------------------------------------


def _run_ampshare(listener: Listener, *args: str, env: dict[str, str]) -> tuple[list[Message], str]:
    """``ampshare run`` in a subprocess; every datagram it sent, in order, and its stderr."""
    got: list[Message] = []
    done = threading.Event()
    listener.sock.settimeout(0.1)

    def read() -> None:
        # The queue of a datagram socket is short (net.unix.max_dgram_qlen): read as it comes.
        while not done.is_set():
            try:
                got.append(listener.sock.recv(65536).decode().split("\n"))
            except TimeoutError:
                continue

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tools.cli", "run", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "NOTIFY_SOCKET": listener.env_value, **env},
        )
    finally:
        done.set()
        reader.join(5)
    got.extend(listener.drain())
    assert proc.returncode == 0, proc.stderr
    return got, proc.stderr


def test_a_run_says_ready_then_status_pings_and_stopping(listener: Listener) -> None:
    run = ("--config", str(CONFIGS / "demo-jumper.yaml"), "--for", "30s", "--speed", "10")
    started = time.monotonic()
    messages, _ = _run_ampshare(
        listener, *run, "--no-live", env={"WATCHDOG_USEC": str(WATCHDOG_USEC)}
    )
    wall_s = time.monotonic() - started
    fields = _fields(messages)
    assert messages and "READY=1" in messages[0], messages[:3]
    assert fields.count("READY=1") == 1
    assert messages[-1] == ["STOPPING=1", "STATUS=stopping: leaving every port safe"]
    assert fields.count("STOPPING=1") == 1
    # The demo: idle, car 1 alone at its port's 30 A, then both cars sharing the feed.
    statuses = _statuses(messages)
    assert statuses[0] == "2 ports idle"
    assert "2 ports, 1 charging at 30 A" in statuses
    assert any(s.startswith("2 ports, 2 charging at ") for s in statuses), statuses
    # Sent when it changes, not every tick.
    assert all(a != b for a, b in itertools.pairwise(statuses)), statuses
    # Pings: never two within half the interval of each other (so at most wall/half + 1 in
    # the whole run, whatever the load), and a run of ~3 s on time has many.
    pings = fields.count("WATCHDOG=1")
    assert 5 <= pings <= wall_s / HALF_S + 1, (pings, wall_s)
    ready_at = fields.index("READY=1")
    assert "WATCHDOG=1" not in fields[:ready_at]


def test_a_watchdog_for_another_process_is_not_pinged(path_listener: Listener) -> None:
    # $WATCHDOG_PID names the process systemd watches: this one is the test's, not ampshare's.
    env = {"WATCHDOG_USEC": str(WATCHDOG_USEC), "WATCHDOG_PID": str(os.getpid())}
    run = ("--config", str(CONFIGS / "demo-jumper.yaml"), "--for", "20s", "--speed", "10")
    messages, _ = _run_ampshare(path_listener, *run, "--no-live", env=env)
    fields = _fields(messages)
    assert "READY=1" in fields and "STOPPING=1" in fields
    assert "WATCHDOG=1" not in fields


def test_an_unreachable_socket_is_said_once_and_the_run_goes_on(tmp_path: Path) -> None:
    run = ("--config", str(CONFIGS / "demo-jumper.yaml"), "--for", "10s", "--speed", "10")
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "run", *run, "--no-live"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={
            **os.environ,
            "NOTIFY_SOCKET": str(tmp_path / "nobody-listens"),
            "WATCHDOG_USEC": str(WATCHDOG_USEC),
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("cannot notify systemd") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "every port left safe" in proc.stderr.splitlines()[-1]


# --- in-process: the conditions behind each message -------------------------------------


@dataclass
class Tick:
    snap: Snapshot
    sent: list[Message]  # what arrived at the socket by the end of this tick
    at: float = field(default_factory=time.monotonic)


def _station(bus: SimBus) -> Station:
    return build_station(load_station(CONFIGS / "ct4000-jumper.yaml"), bus)


def _notifier(listener: Listener, watchdog_usec: int | None = WATCHDOG_USEC) -> StationNotifier:
    watchdog_s = None if watchdog_usec is None else watchdog_usec / 1e6
    return StationNotifier(SdNotify(listener.address, watchdog_s=watchdog_s), period_s=PERIOD_S)


def _run(
    station: Station,
    notifier: StationNotifier,
    listener: Listener,
    until: Callable[[list[Tick]], bool],
    *,
    limit_s: float = 30.0,
) -> tuple[list[Tick], list[Message]]:
    """Run the station in real time, recording after every tick what the socket received,
    until ``until(ticks)``; then stop it. Returns the ticks and what came after the last."""
    ticks: list[Tick] = []
    runner = RealtimeRunner(station, period_s=PERIOD_S, on_stopping=notifier.stopping)

    def on_step(snap: Snapshot) -> None:
        notifier.ticked(snap)
        ticks.append(Tick(snap, listener.drain()))
        if until(ticks):
            runner.stop()

    async def main() -> None:
        await asyncio.wait_for(runner.run(None, on_step), limit_s)

    asyncio.run(main())
    return ticks, listener.drain()


def test_ready_waits_until_a_contactor_sensed_closed_at_start_is_dealt_with(
    path_listener: Listener,
) -> None:
    bus = SimBus(["1", "2"], jumper=True)
    bus.port("1").welded = True  # sensed closed whatever it is told: from power-up on
    station = _station(bus)
    ticks, _ = _run(station, _notifier(path_listener), path_listener, lambda t: len(t) > 40)
    ready = [i for i, t in enumerate(ticks) if "READY=1" in _fields(t.sent)]
    assert len(ready) == 1, "no READY=1 (or more than one)"
    first = ready[0]
    # Not before: every earlier tick sensed port 1 closed and had not yet locked it out.
    assert first > 0
    for tick in ticks[:first]:
        view = tick.snap.ports[0]
        assert view.contactor and view.mode is not Mode.LOCKOUT
    # Then: the weld is a lockout (pilot F, contactor commanded open), which no restart mends.
    view = ticks[first].snap.ports[0]
    assert view.mode is Mode.LOCKOUT and view.fault == "weld"
    assert "STATUS=2 ports, port 1 locked out (weld)" in _fields(ticks[first].sent)


def test_ready_comes_on_the_first_tick_and_before_any_contactor_closes(
    path_listener: Listener,
) -> None:
    # A vehicle plugged in across the restart, asking at once; a contactor the crashed run
    # left closed on the other port.
    bus = SimBus(["1", "2"], [EvSpec(port="1", arrive_s=0.0, response_s=0.1)], jumper=True)
    bus.port("2").command(True)
    station = _station(bus)

    def charging(ticks: list[Tick]) -> bool:
        return any(v.contactor for v in ticks[-1].snap.ports) and len(ticks) > 5

    ticks, _ = _run(station, _notifier(path_listener), path_listener, charging)
    assert "READY=1" in _fields(ticks[0].sent)
    assert not any(v.contactor for v in ticks[0].snap.ports)
    closed = next(i for i, t in enumerate(ticks) if any(v.contactor for v in t.snap.ports))
    assert closed > 0 and ticks[closed].snap.ports[0].mode is Mode.C2
    assert "STATUS=2 ports, 1 charging at 30 A" in _fields(
        [m for t in ticks[: closed + 1] for m in t.sent]
    )


def test_late_ticks_are_not_pinged_while_the_loop_itself_runs(
    path_listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    """For a while the station's step takes 0.3 s (a backend blocking in advance): the ticks
    still come and the event loop runs other tasks between them, but no tick is on time
    (within 2 periods of the one before), so no ping goes out; once ticks are on time again,
    pings resume."""
    bus = SimBus(["1", "2"], jumper=True)
    station = _station(bus)
    stall = threading.Event()
    advance = bus.advance

    def slow_advance(now: float) -> None:
        if stall.is_set():
            time.sleep(0.3)
        advance(now)

    bus.advance = slow_advance  # type: ignore[method-assign]
    notifier = _notifier(path_listener)
    runner = RealtimeRunner(station, period_s=PERIOD_S, on_stopping=notifier.stopping)
    phases: dict[str, list[Tick]] = {"before": [], "stalled": [], "after": []}
    others = [0]  # turns another task had
    others_in_stall: list[int] = []

    def on_step(snap: Snapshot) -> None:
        notifier.ticked(snap)
        tick = Tick(snap, path_listener.drain())
        # before: 1 s on time; stalled: 6 slow ticks (>= 1.8 s); after: 1 s on time.
        if stall.is_set():
            phases["stalled"].append(tick)
            others_in_stall.append(others[0])
            if len(phases["stalled"]) >= 6:
                stall.clear()
        elif not phases["stalled"]:
            phases["before"].append(tick)
            if tick.at - phases["before"][0].at >= 1.0:
                stall.set()
        else:
            phases["after"].append(tick)
            if tick.at - phases["after"][0].at >= 1.0:
                runner.stop()

    async def other_task() -> None:
        while True:
            others[0] += 1
            await asyncio.sleep(0.01)

    async def main() -> None:
        busy = asyncio.create_task(other_task())
        try:
            await asyncio.wait_for(runner.run(None, on_step), 60)
        finally:
            busy.cancel()

    with caplog.at_level(logging.WARNING, logger="ampshare.sdnotify"):
        asyncio.run(main())

    def pings(name: str) -> int:
        return _fields([m for t in phases[name] for m in t.sent]).count("WATCHDOG=1")

    assert pings("before") >= 3
    assert pings("stalled") == 0
    assert pings("after") >= 3
    # Between the slow ticks the event loop ran other work: it was the ticks that were late.
    assert others_in_stall[-1] > others_in_stall[0], others_in_stall
    assert any("no tick on time" in r.getMessage() for r in caplog.records), caplog.text


def test_nothing_is_said_while_the_loop_runs_but_the_station_never_ticks(
    path_listener: Listener,
) -> None:
    """A service whose start never returns (a broker that never answers, awaited): the event
    loop is free, a timer task would go on pinging, but there is no tick, so no READY and no
    WATCHDOG; systemd's start timeout deals with it. Cancelled, the run still says STOPPING."""

    class Stuck:
        async def start(self) -> None:
            await asyncio.Event().wait()

        async def stop(self) -> None:
            return None

    bus = SimBus(["1", "2"], jumper=True)
    station = _station(bus)
    station.services.append(Stuck())
    notifier = _notifier(path_listener)
    runner = RealtimeRunner(station, period_s=PERIOD_S, on_stopping=notifier.stopping)
    heard: list[Message] = []
    spins = [0]

    async def main() -> None:
        task = asyncio.create_task(runner.run(None, notifier.ticked))
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            heard.extend(path_listener.drain())
            spins[0] += 1
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert spins[0] > 10  # the loop was free all along
    assert heard == []
    assert path_listener.drain() == [["STOPPING=1", "STATUS=stopping: leaving every port safe"]]
    assert not any(bus.port(p).commanded_closed for p in ("1", "2"))


def test_what_did_not_go_is_sent_again_and_a_failure_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    address = str(tmp_path / "notify")
    notifier = StationNotifier(SdNotify(address, watchdog_s=None), period_s=PERIOD_S)
    station = _station(SimBus(["1", "2"], jumper=True))
    with caplog.at_level(logging.WARNING, logger="ampshare.sdnotify"):
        notifier.ticked(station.step(0.0))  # nobody listens yet: READY did not go
        notifier.ticked(station.step(0.05))
    assert not notifier.ready
    assert [r.getMessage() for r in caplog.records if "cannot notify" in r.getMessage()] != []
    assert sum("cannot notify" in r.getMessage() for r in caplog.records) == 1
    lst = Listener(address)
    try:
        notifier.ticked(station.step(0.1))
        assert lst.drain() == [["READY=1", "STATUS=2 ports idle"]]
        notifier.ticked(station.step(0.15))  # nothing new to say, no watchdog
        assert lst.drain() == []
    finally:
        lst.close()
    assert notifier.ready


# --- the environment and the words ------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "address", "watchdog_s"),
    [
        ({}, None, None),
        ({"NOTIFY_SOCKET": "/run/systemd/notify"}, "/run/systemd/notify", None),
        ({"NOTIFY_SOCKET": "@sd-1", "WATCHDOG_USEC": "5000000"}, "\0sd-1", 5.0),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "42"}, "/n", 5.0),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "43"}, "/n", None),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "soon"}, "/n", None),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "0"}, "/n", None),
        ({"NOTIFY_SOCKET": "relative/path"}, None, None),
        ({"WATCHDOG_USEC": "5000000"}, None, None),
    ],
)
def test_the_environment_systemd_sets(
    env: dict[str, str], address: str | None, watchdog_s: float | None
) -> None:
    notify = SdNotify.from_environ(env, pid=42)
    assert notify.address == address
    assert notify.enabled is (address is not None)
    assert notify.watchdog_s == watchdog_s


def test_status_lines_say_what_the_station_does() -> None:
    station = _station(SimBus(["1", "2"], jumper=True))
    snap = station.step(0.0)
    assert status_line(snap) == "2 ports idle"
    one, two = snap.ports
    charging = replace(one, mode=Mode.C2, offer_a=16.0)
    waiting = replace(two, mode=Mode.B1)
    assert status_line(replace(snap, ports=(charging, waiting))) == (
        "2 ports, 1 charging at 16 A, 1 plugged in, not charging"
    )
    both = (charging, replace(two, mode=Mode.C2, offer_a=15.5))
    assert status_line(replace(snap, ports=both)) == "2 ports, 2 charging at 16 + 15.5 A"
    fallback = (replace(charging, binding="fallback"), two)
    assert status_line(replace(snap, ports=fallback)) == (
        "fallback: no coordinator; 2 ports, 1 charging at 16 A"
    )
    fault = (one, replace(two, mode=Mode.FAULT, fault="diode"))
    assert status_line(replace(snap, ports=fault)) == "2 ports, port 2 fault (diode)"
    inhibited = replace(snap, inhibit="jumper configured installed but not sensed")
    assert status_line(inhibited) == (
        "2 ports, not energizing: jumper configured installed but not sensed"
    )
