"""Lockouts and GFCI trip counts survive restarts (firmware/portstate.py): real files in
tmp_path, the real station loop on the simulated pilot bus, and ``ampshare run`` itself.

A "process" below is one start of the station: a fresh simulated bus (the simulated hardware
forgets everything, as a restart of the firmware forgets its memory), a station built from the
config, its state file attached, a run, a stop. In virtual time the runner is synchronous, so
the writer (started and stopped around the run, as the real-time runner does) writes what the
run submitted when it is stopped; the real-time tests run the writer as ``ampshare run`` does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from firmware.app import build_station
from firmware.config import StationConfig, load_station
from firmware.port import Mode
from firmware.portstate import (
    RETRY_S,
    UNREADABLE,
    VERSION,
    PortRecord,
    StateFile,
    StateWriter,
    attach,
    default_state_dir,
    state_file,
)
from firmware.runner import RealtimeRunner, VirtualRunner
from firmware.station import PortView, Snapshot, Station
from hal.clock import StationClock
from hal.sim.bus import SimBus
from hal.sim.ev import EvSpec

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
STATION = "ct4000-jumper"
LOGGER = "ampshare.portstate"
DELAY_S = 60.0  # the GFCI re-arm delay of these tests (15 min by default), virtual seconds

Hook = Callable[[Snapshot], None]
Setup = Callable[[VirtualRunner, SimBus, Station], None]


def _config(delay_s: float | None = None) -> StationConfig:
    config = load_station(CONFIGS / f"{STATION}.yaml")
    if delay_s is None:
        return config
    port_config = dataclasses.replace(config.port_config, gfci_retry_delay_s=delay_s)
    return dataclasses.replace(config, port_config=port_config)


def _view(snap: Snapshot, pid: str) -> PortView:
    return next(v for v in snap.ports if v.id == pid)


def _file(state_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(state_file(state_dir, STATION).read_text())
    return doc


@dataclasses.dataclass
class Process:
    station: Station
    bus: SimBus
    writer: StateWriter
    snaps: list[Snapshot]


def _virtual(
    state_dir: Path,
    evs: list[EvSpec],
    until: float,
    *,
    config: StationConfig | None = None,
    setup: Setup | None = None,
    hook: Hook | None = None,
) -> Process:
    """One start of the station in virtual time, with its state file in ``state_dir``."""
    config = config or _config(DELAY_S)

    async def main() -> Process:
        bus = SimBus(["1", "2"], evs, jumper=True, noise_a=0.0)
        station = build_station(config, bus)
        writer = attach(station, config.id, state_dir)
        runner = VirtualRunner(station)
        if setup is not None:
            setup(runner, bus, station)
        snaps: list[Snapshot] = []

        def on_step(snap: Snapshot) -> None:
            snaps.append(snap)
            if hook is not None:
                hook(snap)

        await writer.start()
        try:
            runner.run(until, on_step)
        finally:
            await writer.stop()
        return Process(station, bus, writer, snaps)

    return asyncio.run(main())


def _realtime(
    state_dir: Path,
    evs: list[EvSpec],
    until: float,
    *,
    speed: float,
    hook: Callable[[Snapshot, SimBus], None] | None = None,
    retry_s: float = RETRY_S,
) -> Process:
    """One start of the station in (sped-up) real time: the writer is one of the station's
    services, started and stopped by the runner, as in ``ampshare run``."""
    config = _config()

    async def main() -> Process:
        bus = SimBus(["1", "2"], evs, jumper=True, noise_a=0.0)
        clock = StationClock(speed)
        station = build_station(config, bus, clock=clock)
        writer = attach(station, config.id, state_dir, retry_s=retry_s)
        snaps: list[Snapshot] = []

        def on_step(snap: Snapshot) -> None:
            snaps.append(snap)
            if hook is not None:
                hook(snap, bus)

        await RealtimeRunner(station, speed=speed, clock=clock).run(until, on_step)
        return Process(station, bus, writer, snaps)

    return asyncio.run(main())


# --- weld lockout ------------------------------------------------------------------------------


def test_a_weld_lockout_survives_a_restart_until_an_operator_reset(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    welded: list[float] = []

    def weld_while_charging(snap: Snapshot, bus: SimBus) -> None:
        view = _view(snap, "1")
        if not welded and snap.t >= 5.0 and view.mode is Mode.C2 and view.contactor:
            welded.append(snap.t)
            bus.inject("1", "weld")  # seen when the car leaves and the contactor stays closed

    # In real time, sped up: the writer runs as in ``ampshare run``.
    evs = [EvSpec(port="1", leave_s=20.0), EvSpec(port="2")]
    p1 = _realtime(state_dir, evs, 30.0, speed=50.0, hook=weld_while_charging)
    assert welded, "port 1 never charged"
    view = _view(p1.snaps[-1], "1")
    assert view.mode is Mode.LOCKOUT and view.fault == "weld"
    doc = _file(state_dir)
    assert doc["version"] == VERSION and doc["station"] == STATION
    assert doc["ports"]["1"]["lockout"] == "weld" and doc["ports"]["2"]["lockout"] is None

    # A new start (the simulated contactor is whole again: only the file remembers).
    p2 = _virtual(state_dir, [EvSpec(port="1"), EvSpec(port="2")], 60.0)
    for snap in p2.snaps:
        assert _view(snap, "1").mode is Mode.LOCKOUT and _view(snap, "1").fault == "weld"
    assert p2.bus.port("1").pilot_out == "F"
    assert not any(h.contactor for h in p2.bus.history("1"))
    assert _view(p2.snaps[-1], "2").mode is Mode.C2  # the other port charges
    assert _file(state_dir)["ports"]["1"]["lockout"] == "weld"

    # The operator reset clears it, and the file with it.
    def reset_at_10(runner: VirtualRunner, bus: SimBus, station: Station) -> None:
        runner.at(10.0, lambda: station.reset("1"))

    p3 = _virtual(state_dir, [EvSpec(port="1", arrive_s=20.0)], 60.0, setup=reset_at_10)
    assert _view(p3.snaps[-1], "1").mode is Mode.C2
    assert _file(state_dir)["ports"]["1"]["lockout"] is None
    p4 = _virtual(state_dir, [], 5.0)
    assert _view(p4.snaps[0], "1").mode is Mode.A


def test_a_reset_already_asserted_at_start_up_is_not_an_edge(tmp_path: Path) -> None:
    """A reset input stuck high across a crash loop must not clear a lockout per restart."""
    _write(tmp_path, {"1": {"lockout": "weld"}})

    def reset_before_the_first_tick(runner: VirtualRunner, bus: SimBus, station: Station) -> None:
        station.reset("1")
        # A real press later; virtual time ticks only when something happens, so a tick in
        # between lets the machine see the input low (every 50 ms in real time).
        runner.at(5.0, lambda: None)
        runner.at(10.0, lambda: station.reset("1"))

    p = _virtual(tmp_path, [], 20.0, setup=reset_before_the_first_tick)
    assert all(_view(s, "1").mode is Mode.LOCKOUT for s in p.snaps if s.t < 10.0)
    assert _view(p.snaps[-1], "1").mode is Mode.A


# --- GFCI ------------------------------------------------------------------------------------


def _rearms(snaps: list[Snapshot], pid: str) -> int:
    """Automatic re-arms that held: GFCI_WAIT, then ordinary handling on the next tick."""
    modes = [_view(s, pid).mode for s in snaps]
    return sum(
        1
        for a, b in itertools.pairwise(modes)
        if a is Mode.GFCI_WAIT and b not in (Mode.GFCI_WAIT, Mode.LOCKOUT)
    )


def _ground_fault_when_charging() -> tuple[Setup, Hook]:
    """A ground fault on port 1 that trips the GFCI whenever the port charges."""
    buses: list[SimBus] = []

    def keep(runner: VirtualRunner, bus: SimBus, station: Station) -> None:
        buses.append(bus)

    def trip(snap: Snapshot) -> None:
        view, bus = _view(snap, "1"), buses[0]
        if view.mode is Mode.C2 and view.contactor and not bus.port("1").gfci:
            bus.inject("1", "gfci")

    return keep, trip


def test_a_crash_loop_never_gives_a_gfci_more_automatic_rearms_than_allowed(
    tmp_path: Path,
) -> None:
    """A ground fault that comes back whenever the car charges, and a station restarted every
    90 s (a crash loop, a re-arm delay of 60 s): across all the restarts, at most
    ``gfci_max_retries`` automatic re-arms (UL 2231-2 bounds them), then a lockout that the
    following restarts keep."""
    config = _config(DELAY_S)
    limit = config.port_config.gfci_max_retries
    total = 0
    for _ in range(limit + 3):
        setup, hook = _ground_fault_when_charging()
        p = _virtual(
            tmp_path,
            [EvSpec(port="1", max_a=32)],  # the same car, still plugged in at every start
            90.0,
            config=config,
            setup=setup,
            hook=hook,
        )
        total += _rearms(p.snaps, "1")
        assert total <= limit
    assert total == limit
    assert _view(p.snaps[-1], "1").mode is Mode.LOCKOUT and _view(p.snaps[-1], "1").fault == "gfci"
    assert _file(tmp_path)["ports"]["1"]["lockout"] == "gfci"


def _trip_at(t: float) -> Setup:
    def setup(runner: VirtualRunner, bus: SimBus, station: Station) -> None:
        runner.at(t, lambda: bus.inject("1", "gfci"))

    return setup


def test_the_gfci_count_survives_a_restart_and_clears_at_the_unplug_after_it(
    tmp_path: Path,
) -> None:
    p1 = _virtual(tmp_path, [EvSpec(port="1")], 100.0, setup=_trip_at(10.0))
    assert _rearms(p1.snaps, "1") == 1 and _view(p1.snaps[-1], "1").mode is Mode.C2
    port = _file(tmp_path)["ports"]["1"]
    assert port["gfci_trips"] == 1 and port["session"] and not port["gfci_wait"]

    # Restarted with the car still plugged in: the count stays until the car leaves (t=30).
    trips: list[tuple[float, int]] = []
    holder: list[Station] = []

    def keep(runner: VirtualRunner, bus: SimBus, station: Station) -> None:
        holder.append(station)

    def count(snap: Snapshot) -> None:
        trips.append((snap.t, holder[0].persistent()["1"].gfci_trips))

    _virtual(tmp_path, [EvSpec(port="1", leave_s=30.0)], 60.0, setup=keep, hook=count)
    assert all(n == 1 for t, n in trips if t < 30.0)
    assert all(n == 0 for t, n in trips if t >= 30.0)
    port = _file(tmp_path)["ports"]["1"]
    assert port["gfci_trips"] == 0 and not port["session"]


def test_a_count_whose_car_left_during_the_restart_clears_on_the_first_tick(
    tmp_path: Path,
) -> None:
    _virtual(tmp_path, [EvSpec(port="1")], 100.0, setup=_trip_at(10.0))
    assert _file(tmp_path)["ports"]["1"]["gfci_trips"] == 1
    p = _virtual(tmp_path, [], 5.0)
    assert p.station.persistent()["1"].gfci_trips == 0
    assert _file(tmp_path)["ports"]["1"]["gfci_trips"] == 0


def test_a_port_waiting_to_rearm_waits_the_full_delay_again(tmp_path: Path) -> None:
    p1 = _virtual(tmp_path, [EvSpec(port="1")], 50.0, setup=_trip_at(10.0))
    assert _view(p1.snaps[-1], "1").mode is Mode.GFCI_WAIT  # 40 of its 60 s waited
    port = _file(tmp_path)["ports"]["1"]
    assert port["gfci_wait"] and port["gfci_trips"] == 1 and port["gfci_rearm_due"] is None

    p2 = _virtual(tmp_path, [EvSpec(port="1")], 100.0)
    left = next(s for s in p2.snaps if _view(s, "1").mode is not Mode.GFCI_WAIT)
    # Virtual station time: the whole delay from the start, not the 20 s that were left.
    assert left.t >= DELAY_S
    assert p2.station.persistent()["1"].gfci_trips == 1  # same session: the car stayed


# --- the file --------------------------------------------------------------------------------


def _write(state_dir: Path, ports: dict[str, dict[str, Any]]) -> Path:
    """A state file as this firmware writes it, with ``ports`` entries overriding defaults."""
    records = {pid: PortRecord(**ports.get(pid, {})) for pid in ("1", "2")}
    store = StateFile(state_file(state_dir, STATION), STATION, ("1", "2"))
    store.write(store.encode(records, None, 0.0))
    return store.path


def test_a_crash_between_temporary_write_and_rename_leaves_the_old_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"1": {"lockout": "weld"}})
    # What a crash leaves after writing the temporary file, before os.replace: half a file.
    stray = tmp_path / f".{path.name}.k2j4h1.tmp"
    stray.write_text(path.read_text()[:40])
    p = _virtual(tmp_path, [], 5.0)
    assert _view(p.snaps[-1], "1").mode is Mode.LOCKOUT and _view(p.snaps[-1], "1").fault == "weld"
    assert not stray.exists()  # cleaned up at start: it held nothing that counts
    assert sorted(os.listdir(tmp_path)) == [path.name]  # and no temporary left by the writes


def test_a_missing_file_is_a_fresh_start_and_is_created(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    state_dir = tmp_path / "not" / "yet"
    p = _virtual(state_dir, [EvSpec(port="1")], 30.0)
    assert _view(p.snaps[-1], "1").mode is Mode.C2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    doc = _file(state_dir)
    assert doc["ports"]["1"] == {
        "lockout": None,
        "gfci_trips": 0,
        "session": False,
        "gfci_wait": False,
        "gfci_rearm_due": None,
    }


def _valid_text(tmp_path: Path) -> str:
    return _write(tmp_path / "valid", {}).read_text()


def _edit(change: Callable[[dict[str, Any]], None]) -> Callable[[str], str]:
    def apply(text: str) -> str:
        doc = json.loads(text)
        change(doc)
        return json.dumps(doc)

    return apply


CORRUPTIONS: dict[str, Callable[[str], str]] = {
    "empty": lambda text: "",
    "cut short": lambda text: text[: len(text) // 2],
    "not json": lambda text: "\x00\x17garbage{",
    "a list": lambda text: "[]",
    "newer version": _edit(lambda d: d.update(version=VERSION + 1)),
    "version true": _edit(lambda d: d.update(version=True)),
    "other format": _edit(lambda d: d.update(format="something else")),
    "other station": _edit(lambda d: d.update(station="st9")),
    "a port missing": _edit(lambda d: d["ports"].pop("2")),
    "an unknown port": _edit(lambda d: d["ports"].update({"3": d["ports"]["1"]})),
    "an unknown key": _edit(lambda d: d["ports"]["1"].update(colour="red")),
    "negative count": _edit(lambda d: d["ports"]["1"].update(gfci_trips=-1)),
    "count as bool": _edit(lambda d: d["ports"]["1"].update(gfci_trips=True)),
    "empty reason": _edit(lambda d: d["ports"]["1"].update(lockout="")),
    "bad time": _edit(lambda d: d.update(written_at="yesterday")),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_an_unusable_file_locks_every_port_out_loudly_until_reset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, corruption: str
) -> None:
    """The conservative choice (firmware/portstate.py docstring): a file that may have held a
    lockout must not clear it by being damaged."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    path = state_file(state_dir, STATION)
    bad = CORRUPTIONS[corruption](_valid_text(tmp_path))
    path.write_text(bad)

    def reset_port_1(runner: VirtualRunner, bus: SimBus, station: Station) -> None:
        runner.at(20.0, lambda: station.reset("1"))

    evs = [EvSpec(port="1"), EvSpec(port="2")]
    p = _virtual(state_dir, evs, 60.0, setup=reset_port_1)
    for snap in p.snaps:
        if snap.t < 20.0:
            assert all(v.mode is Mode.LOCKOUT and v.fault == UNREADABLE for v in snap.ports)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "UNUSABLE" in errors[0] and str(path) in errors[0]
    # The bad file is kept for whoever looks, and the new one says what the station did.
    assert (state_dir / f"{path.name}.unreadable").read_text() == bad
    # The reset cleared port 1 only; port 2 stays locked out, in memory and on disk.
    port_1 = _view(p.snaps[-1], "1")
    assert port_1.mode is not Mode.LOCKOUT and port_1.fault is None
    assert _view(p.snaps[-1], "2").mode is Mode.LOCKOUT
    ports = _file(state_dir)["ports"]
    assert ports["1"]["lockout"] is None and ports["2"]["lockout"] == UNREADABLE


def test_an_unwritable_state_dir_keeps_the_station_charging_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    (tmp_path / "afile").write_text("a regular file, not a directory\n")
    state_dir = tmp_path / "afile" / "x"  # every write fails with a real OSError (ENOTDIR)
    p = _realtime(
        state_dir,
        [EvSpec(port="1")],
        20.0,
        speed=20.0,
        retry_s=0.02,
    )
    assert any(
        _view(s, "1").mode is Mode.C2 and (_view(s, "1").drawn_a or 0.0) > 6.0 for s in p.snaps
    )
    assert p.writer.writes == 0 and p.writer.failures >= 2  # retried, and failed again
    loud = [r.getMessage() for r in caplog.records if "NOT WRITTEN" in r.getMessage()]
    assert len(loud) == 1 and str(state_file(state_dir, STATION)) in loud[0]


def test_the_writer_coalesces_and_writes_the_newest_state(tmp_path: Path) -> None:
    store = StateFile(state_file(tmp_path, STATION), STATION, ("1", "2"))

    async def main() -> StateWriter:
        writer = StateWriter(store, {"1": PortRecord(), "2": PortRecord()})
        await writer.start()
        for trips in range(1, 50):  # a burst, faster than any write
            writer.submit({"1": PortRecord(gfci_trips=trips, session=True), "2": PortRecord()})
        await writer.stop()
        return writer

    writer = asyncio.run(main())
    assert writer.writes <= 3  # the start, perhaps one in between, the newest
    assert _file(tmp_path)["ports"]["1"]["gfci_trips"] == 49


def test_state_file_paths(tmp_path: Path) -> None:
    assert state_file(tmp_path, "a/../b").parent == tmp_path
    env = {"HOME": "/home/op"}
    assert default_state_dir(env) == Path("/home/op/.local/state/ampshare")
    assert default_state_dir({**env, "XDG_STATE_HOME": "rel"}) == Path(
        "/home/op/.local/state/ampshare"
    )
    assert default_state_dir({**env, "XDG_STATE_HOME": "/x"}) == Path("/x/ampshare")
    sd = {**env, "XDG_STATE_HOME": "/x", "STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}
    assert default_state_dir(sd) == Path("/var/lib/a")


# --- the commands ----------------------------------------------------------------------------


def _ampshare(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60.0,
        cwd=ROOT,
        env=env,
    )


def _run_args(*extra: str) -> list[str]:
    config = str(CONFIGS / f"{STATION}.yaml")
    return ["run", "--config", config, "--for", "5s", "--speed", "30", "--no-live", *extra]


def test_ampshare_run_writes_the_state_file(tmp_path: Path) -> None:
    proc = _ampshare(*_run_args("--state-dir", str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    doc = _file(tmp_path)
    assert doc["format"] == "ampshare port state" and doc["version"] == VERSION
    assert doc["station"] == STATION and set(doc["ports"]) == {"1", "2"}
    assert all(p["lockout"] is None for p in doc["ports"].values())


def test_ampshare_run_restores_a_lockout(tmp_path: Path) -> None:
    _write(tmp_path, {"2": {"lockout": "gfci", "gfci_trips": 4}})
    proc = _ampshare(*_run_args("--state-dir", str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert any(
        "port 2: LOCKOUT, offer 0.0 A" in line and line.endswith("fault gfci")
        for line in proc.stderr.splitlines()
    ), proc.stderr
    assert "LOCKED OUT (gfci)" in proc.stderr
    assert _file(tmp_path)["ports"]["2"]["lockout"] == "gfci"


def test_ampshare_run_default_state_dir_follows_the_environment(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "XDG_STATE_HOME")}
    systemd = tmp_path / "systemd"
    proc = _ampshare(*_run_args(), env={**env, "STATE_DIRECTORY": str(systemd)})
    assert proc.returncode == 0, proc.stderr
    assert state_file(systemd, STATION).exists()
    proc = _ampshare(*_run_args(), env={**env, "XDG_STATE_HOME": str(tmp_path / "xdg")})
    assert proc.returncode == 0, proc.stderr
    assert state_file(tmp_path / "xdg" / "ampshare", STATION).exists()


def test_ampshare_sim_writes_no_state_file(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "XDG_STATE_HOME": str(tmp_path / "xdg"),
        "STATE_DIRECTORY": str(tmp_path / "systemd"),
    }
    proc = _ampshare("sim", str(CONFIGS / "scenarios" / "weld-fault.yaml"), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["faults"]  # the weld happened (and locked port 1 out)
    assert list(tmp_path.iterdir()) == []
