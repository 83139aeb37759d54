"""The simulated pilot bus and its EV models behave like J1772 hardware and vehicles."""

from __future__ import annotations

import asyncio
import math

import pytest

from hal.interfaces import Hardware
from hal.pilot import amps_to_duty
from hal.sim.bus import SimBus
from hal.sim.ev import HANDSHAKE_S, EvSpec, SimEv
from hal.sim.view import BusView


def _bus(**ev: object) -> SimBus:
    spec = EvSpec(port="1", **ev)  # type: ignore[arg-type]
    return SimBus(["1", "2"], [spec], noise_a=0.0)


def _charge(bus: SimBus, amps: float, t: float = 0.0) -> None:
    """Offer ``amps`` at ``t``, then close the contactor once the EV is in C."""
    bus.advance(t)
    p = bus.port("1")
    p.pwm(amps_to_duty(amps))
    bus.advance(t + HANDSHAKE_S)
    assert p.sample().high_v == 6.0
    p.command(True)


def test_satisfies_hardware_protocol() -> None:
    assert isinstance(_bus(), Hardware)


def test_pilot_voltages_follow_the_vehicle() -> None:
    bus = _bus(arrive_s=5.0)
    p = bus.port("1")
    bus.advance(1.0)
    assert p.sample().high_v == 12.0  # A: nobody plugged in
    bus.advance(5.0)
    assert p.sample().high_v == 9.0 and p.sample().low_v is None  # B, PWM off
    p.pwm(50.0)
    assert p.sample().low_v == -12.0  # diode present
    bus.advance(5.5)
    assert p.sample().high_v == 9.0  # the vehicle has not closed S2 yet
    bus.advance(5.0 + HANDSHAKE_S)
    assert p.sample().high_v == 6.0  # C
    p.state_f()
    assert p.sample().high_v == -12.0


def test_vehicle_goes_to_c_only_with_pwm() -> None:
    bus = _bus()
    bus.advance(60.0)
    assert bus.port("1").sample().high_v == 9.0


def test_draw_follows_offer_after_response_lag() -> None:
    bus = _bus(max_a=32.0, response_s=2.0)
    _charge(bus, 30.0)
    p = bus.port("1")
    bus.advance(2.0)
    assert p.drawn_a == 0.0  # still ramping
    bus.advance(3.0)
    assert p.drawn_a == pytest.approx(30.0, abs=0.1)
    p.pwm(amps_to_duty(16.0))
    bus.advance(4.9)
    assert p.drawn_a == pytest.approx(30.0, abs=0.1)  # within its 2 s to follow
    bus.advance(5.0)
    assert p.drawn_a == pytest.approx(16.0, abs=0.1)


def test_on_board_charger_and_minimum_bound_the_draw() -> None:
    bus = _bus(max_a=16.0, min_a=8.0)
    _charge(bus, 30.0)
    bus.advance(10.0)
    assert bus.port("1").drawn_a == 16.0
    bus.port("1").pwm(amps_to_duty(6.0))
    bus.advance(20.0)
    assert bus.port("1").drawn_a == 0.0  # offered less than it accepts: draws nothing


def test_next_change_lets_time_jump_to_each_event() -> None:
    bus = _bus(response_s=2.0)
    _charge(bus, 30.0)
    assert bus.next_change(bus.now) == pytest.approx(HANDSHAKE_S + 2.0)


def test_energy_and_soc_integrate_and_charging_stops_at_target() -> None:
    bus = _bus(max_a=30.0, battery_kwh=10.0, soc=0.5, target_soc=0.6, response_s=0.0)
    _charge(bus, 30.0)
    p = bus.port("1")
    bus.advance(HANDSHAKE_S + 600.0)
    assert p.energy_wh == pytest.approx(30 * 208 * 600 / 3600, rel=1e-6)
    t = bus.next_change(bus.now)
    assert t is not None
    bus.advance(t)
    assert p.ev is not None and p.ev.soc == pytest.approx(0.6)
    assert p.drawn_a == 0.0
    assert p.sample().high_v == 6.0  # full, but stays in C like real cars
    bus.advance(t + 3600.0)
    assert p.ev.soc == pytest.approx(0.6)


def test_taper_near_full_lowers_the_draw() -> None:
    bus = _bus(max_a=30.0, battery_kwh=5.0, soc=0.85, target_soc=1.0, response_s=0.0)
    _charge(bus, 30.0)
    p = bus.port("1")
    bus.advance(HANDSHAKE_S)
    assert p.drawn_a == pytest.approx(30.0 * 0.75)
    bus.advance(HANDSHAKE_S + 900.0)
    assert p.drawn_a < 30.0 * 0.75


def test_pause_makes_the_vehicle_stop_and_return_to_b() -> None:
    bus = _bus(response_s=3.0)
    _charge(bus, 30.0)
    p = bus.port("1")
    bus.advance(10.0)
    p.steady()
    bus.advance(12.9)
    assert p.sample().high_v == 6.0 and p.drawn_a > 0  # within its response time
    bus.advance(13.0)
    assert p.sample().high_v == 9.0 and p.drawn_a == 0.0


def test_a_vehicle_that_does_not_wake_stays_in_b() -> None:
    bus = _bus(wakes=False, response_s=1.0)
    _charge(bus, 30.0)
    p = bus.port("1")
    bus.advance(10.0)
    p.steady()
    bus.advance(20.0)
    p.command(False)
    p.pwm(amps_to_duty(30.0))
    bus.advance(60.0)
    assert p.sample().high_v == 9.0


def test_unplug_schedule() -> None:
    bus = _bus(arrive_s=1.0, leave_s=100.0)
    bus.advance(50.0)
    assert bus.port("1").sample().high_v == 9.0
    bus.advance(100.0)
    assert bus.port("1").sample().high_v == 12.0


@pytest.mark.parametrize("kind", ["weld", "gfci", "diode", "ground", "meter", "short"])
def test_injected_faults_show_on_the_interfaces(kind: str) -> None:
    bus = _bus()
    _charge(bus, 30.0)
    bus.advance(5.0)
    p = bus.port("1")
    before = p.latest()
    bus.inject("1", kind)
    bus.advance(6.0)
    if kind == "weld":
        p.command(False)
        assert p.feedback() is True
    elif kind == "gfci":
        assert p.gfci_tripped() and p.drawn_a == 0.0
        p.reset_gfci()
        assert not p.gfci_tripped()
    elif kind == "diode":
        sample = p.sample()
        assert sample.low_v == -sample.high_v
    elif kind == "ground":
        assert not p.ground_ok()
    elif kind == "meter":
        reading = p.latest()
        assert reading is not None and before is not None
        assert reading.timestamp == before.timestamp  # frozen: the station sees it stale
    else:
        assert p.sample().high_v == 0.0


def test_overdraw_fault_draws_more_than_offered() -> None:
    bus = _bus(max_a=40.0)
    _charge(bus, 16.0)
    bus.advance(10.0)
    bus.inject("1", "overdraw")
    bus.advance(20.0)
    assert bus.port("1").drawn_a > 16.0 * 1.1 + 0.5


def test_history_records_each_change_once() -> None:
    bus = _bus(response_s=2.0)
    _charge(bus, 30.0)
    bus.advance(10.0)
    bus.advance(20.0)
    hist = bus.history("1")
    assert hist[0].ev_state == "B" and "C" in [h.ev_state for h in hist]
    assert hist[-1].amps == pytest.approx(30.0) and hist[-1].contactor
    assert len(hist) == len({(h.pilot, h.duty_pct, h.contactor, h.amps, h.ev_state) for h in hist})


def test_meter_noise_is_small_and_reproducible() -> None:
    readings = []
    for _ in range(2):
        bus = SimBus(["1"], [EvSpec(port="1")], noise_a=0.05, seed=7)
        _charge(bus, 30.0)
        bus.advance(10.0)
        reading = bus.port("1").latest()
        assert reading is not None
        readings.append(reading.amps[0])
    assert readings[0] == readings[1]
    assert abs(readings[0] - 30.0) <= 0.05


def test_bad_inputs_are_refused() -> None:
    bus = _bus()
    bus.advance(10.0)
    with pytest.raises(ValueError, match="backwards"):
        bus.advance(5.0)
    with pytest.raises(ValueError, match="unknown port"):
        bus.schedule(EvSpec(port="9"))
    with pytest.raises(ValueError, match="unknown fault"):
        bus.inject("1", "lightning")


@pytest.mark.parametrize("soc", [math.nextafter(0.8, 0.0), math.nextafter(0.9, 0.0)])
def test_time_keeps_advancing_next_to_a_soc_threshold(soc: float) -> None:
    """Late in a long run a time-to-threshold can fall below the clock's resolution; the EV
    must treat such a threshold as reached rather than stall virtual time (found in a 24 h
    100-port run)."""
    ev = SimEv(EvSpec(port="1", soc=soc, target_soc=0.9), 208.0)
    ev.in_c, ev.draw_a = True, 30.0
    now = 86_000.0
    t = ev.next_change(now)
    assert t is None or t > now


def test_a_second_offer_change_does_not_postpone_following_the_first() -> None:
    # J1772: the vehicle follows each change within its response time. 30 -> 20 A at t=0,
    # 20 -> 10 A at t=3: with a 4.5 s response it draws 20 A from t=4.5 (not from t=7.5,
    # which would exceed the highest offer of the last 5 s at t=5) and 10 A from t=7.5.
    ev = SimEv(EvSpec(port="1", max_a=32.0, response_s=4.5), 240.0)
    ev.in_c = True
    ev.draw_a = 30.0
    ev.react(0.0, True, 20.0, True)
    ev.react(3.0, True, 10.0, True)
    draws = []
    for t in (4.4, 4.5, 7.4, 7.5):
        ev.fire(t, True, 10.0, True)
        draws.append(ev.draw_a)
    assert draws == [30.0, 20.0, 20.0, 10.0]


def test_a_bus_view_is_one_stations_share_of_the_bus() -> None:
    bus = SimBus(["a.1", "a.2", "b.1"], [EvSpec(port="b.1", max_a=32.0)], noise_a=0.0)
    view = BusView(bus, ["b.1"])
    assert isinstance(view, Hardware)
    assert [hw.pilot for hw in view.ports] == [bus.port("b.1")]
    assert not view.jumper.installed()
    view.ports[0].pilot.pwm(amps_to_duty(16.0))
    view.advance(HANDSHAKE_S)
    assert bus.now == HANDSHAKE_S  # one clock: advancing a view advances the bus
    view.ports[0].contactor.command(True)
    assert view.next_change(bus.now) == bus.next_change(bus.now)
    # Stopping a station leaves its own ports safe, and only those.
    bus.port("a.1").pwm(50.0)
    asyncio.run(view.stop())
    assert bus.port("b.1").pilot_out == "steady" and not bus.port("b.1").commanded_closed
    assert bus.port("a.1").pilot_out == "pwm"
