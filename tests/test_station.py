"""End to end: the real station loop on the simulated pilot bus, in virtual time."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.app import build_station
from firmware.config import load_station
from firmware.port import Mode
from firmware.runner import VirtualRunner
from firmware.station import Snapshot
from hal.sim.bus import SimBus
from hal.sim.ev import EvSpec

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _run(
    config_name: str, evs: list[EvSpec], until: float, *, jumper: bool | None = None
) -> tuple[list[Snapshot], SimBus]:
    config = load_station(CONFIGS / config_name)
    bus = SimBus(
        [p.id for p in config.site.ports],
        evs,
        jumper=config.jumper if jumper is None else jumper,
        seed=3,
    )
    station = build_station(config, bus)
    snaps: list[Snapshot] = []
    VirtualRunner(station).run(until, snaps.append)
    return snaps, bus


def _at(snaps: list[Snapshot], t: float) -> Snapshot:
    """The last snapshot at or before ``t``."""
    return [s for s in snaps if s.t <= t][-1]


def _port(snap: Snapshot, pid: str) -> tuple[float, float | None, Mode]:
    view = next(v for v in snap.ports if v.id == pid)
    return view.offer_a, view.drawn_a, view.mode


def test_jumper_station_shares_50_50_and_gives_all_back_on_unplug() -> None:
    evs = [
        EvSpec(port="1", arrive_s=0.0, leave_s=3000.0, max_a=32, battery_kwh=80, soc=0.2),
        EvSpec(port="2", arrive_s=600.0, max_a=32, battery_kwh=80, soc=0.2),
    ]
    snaps, bus = _run("ct4000-jumper.yaml", evs, 4000.0)
    # One car alone: its port's rating (CT4000 port 30 A, under the 32 A of a 40 A breaker).
    offer, drawn, mode = _port(_at(snaps, 500.0), "1")
    assert mode is Mode.C2 and offer == pytest.approx(30.0, abs=0.1)
    assert drawn == pytest.approx(30.0, abs=0.2)
    # Two cars: 50/50 of 80 % of the 40 A breaker.
    for pid in ("1", "2"):
        offer, drawn, mode = _port(_at(snaps, 2000.0), pid)
        assert mode is Mode.C2
        assert offer == pytest.approx(16.0, abs=0.1)
        assert drawn == pytest.approx(16.0, abs=0.2)
    # Car 1 leaves: car 2 gets its port's full rating again.
    offer, drawn, _ = _port(_at(snaps, 3990.0), "2")
    assert offer == pytest.approx(30.0, abs=0.1) and drawn == pytest.approx(30.0, abs=0.2)
    assert _port(_at(snaps, 3990.0), "1")[2] is Mode.A
    # The breaker's continuous limit held at every tick, offered and drawn.
    for snap in snaps:
        assert sum(v.effective_a for v in snap.ports) <= 32.0 + 1e-9
        assert sum(v.drawn_a or 0.0 for v in snap.ports) <= 32.0 + 0.2  # meter noise
    # The contactor opened on the very tick the car was seen unplugged (<= 100 ms).
    hist = bus.history("1")
    unplug = next(h for h in hist if h.t >= 3000.0 and h.ev_state == "A")
    opened = next(h for h in hist if h.t >= unplug.t and not h.contactor)
    assert unplug.t == pytest.approx(3000.0) and opened.t - unplug.t <= 0.1


def test_without_jumper_each_port_has_its_own_breaker() -> None:
    evs = [EvSpec(port="1", max_a=32), EvSpec(port="2", max_a=32)]
    snaps, _ = _run("ct4000.yaml", evs, 300.0)
    for pid in ("1", "2"):
        offer, drawn, _ = _port(snaps[-1], pid)
        assert offer == pytest.approx(30.0, abs=0.1) and drawn == pytest.approx(30.0, abs=0.2)


def test_jumper_sensed_but_not_configured_refuses_to_energize() -> None:
    evs = [EvSpec(port="1"), EvSpec(port="2")]
    snaps, bus = _run("ct4000.yaml", evs, 120.0, jumper=True)
    assert snaps[-1].inhibit is not None and "jumper" in snaps[-1].inhibit
    for pid in ("1", "2"):
        assert all(not h.contactor and h.amps == 0.0 for h in bus.history(pid))
        assert bus.port(pid).pilot_out == "F"


def test_welded_contactor_locks_the_port_out() -> None:
    evs = [EvSpec(port="1", leave_s=200.0), EvSpec(port="2")]
    config = load_station(CONFIGS / "ct4000-jumper.yaml")
    bus = SimBus(["1", "2"], evs, jumper=True)
    station = build_station(config, bus)
    runner = VirtualRunner(station)
    runner.at(100.0, lambda: bus.inject("1", "weld"))
    snap = runner.run(400.0)
    view = next(v for v in snap.ports if v.id == "1")
    assert view.mode is Mode.LOCKOUT and view.fault == "weld"
    assert bus.port("1").pilot_out == "F"


def test_virtual_time_skips_idle_time() -> None:
    evs = [EvSpec(port="1", arrive_s=3600.0, leave_s=7200.0)]
    config = load_station(CONFIGS / "ct4000-jumper.yaml")
    bus = SimBus(["1", "2"], evs, jumper=True)
    runner = VirtualRunner(build_station(config, bus))
    runner.run(4 * 3600.0)
    # A 50 ms loop would tick 288,000 times in 4 h; the event-driven runner needs a fraction.
    assert runner.ticks < 2000


def test_leave_safe_opens_every_contactor_even_when_a_pilot_write_fails() -> None:
    """One refused write (a sysfs PWM file, a lost board) must not leave another port offering
    or any contactor closed; the first failure is raised after all were tried."""
    from hal.interfaces import PortHardware, leave_safe
    from hal.sim.bus import SimBus

    bus = SimBus(["1", "2"], [])
    for port in ("1", "2"):
        bus.port(port).pwm(26.6)
        bus.port(port).command(True)

    class Refused:
        def steady(self) -> None:
            raise OSError("write refused")

    first = bus.ports[0]
    broken = PortHardware(Refused(), first.contactor, first.ground, first.meter)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="write refused"):
        leave_safe([broken, bus.ports[1]])
    assert not bus.port("1").commanded_closed  # its contactor opened all the same
    assert bus.port("2").pilot_out == "steady" and not bus.port("2").commanded_closed
