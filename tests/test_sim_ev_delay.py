"""The simulated EV's delay line lags changes of the offer, not the car's own taper.

SAE J1772 (and IEC 61851-1 Annex A) give a vehicle 5 s to follow a change of the PWM offer;
what lags is the vehicle's view of the offer and of the contactor. A tapering battery lowers
its current by itself, at once: if its drift were fed through the delay line, every event on
a site would queue another lagged change for every tapering car, each of which becomes a
future event of the whole site (the regression of 71c84b6: ticks grew without bound).
"""

from __future__ import annotations

import pytest

from controller.core import ControlSettings
from controller.model import GroupSpec, Phases, Policy, PortSpec, SiteSpec
from firmware.port import PortConfig
from hal.pilot import amps_to_duty
from hal.sim.bus import SimBus
from hal.sim.ev import HANDSHAKE_S, TAPER_START_SOC, TAPER_UPDATE_S, EvSpec, SimEv
from tools.scenario import Scenario
from tools.simulate import simulate

# Distinct response times (all J1772-compliant) make lagged changes land at distinct times,
# which is what multiplied events before the fix.
RESPONSES = (1.0, 1.7, 2.3, 2.9, 3.4, 4.1, 4.6, 5.0)


def _tapering_car(response_s: float = 2.0) -> SimEv:
    """A car in C, energised, past the taper knee, offered more than its charger takes."""
    ev = SimEv(EvSpec(port="1", max_a=32.0, soc=0.85, target_soc=1.0, response_s=response_s), 240.0)
    ev.in_c = True
    ev.react(0.0, True, 40.0, True)
    ev.fire(response_s, True, 40.0, True)
    assert 0.0 < ev.draw_a < 32.0  # tapering: its own limit is below the 40 A offer
    return ev


def test_delay_line_of_a_tapering_car_stays_bounded_however_often_it_reacts() -> None:
    # A busy site: the bus ticks every 62.5 ms (a binary fraction, so that the clock lands
    # exactly on the taper grid) and asks this car to react each time, after its battery
    # charged a little; every fourth tick is an event of the bus, at which the car fires.
    ev = _tapering_car()
    dt, longest, off_grid = 0.0625, 0, 0
    for k in range(1, 4001):
        now = 2.0 + k * dt
        ev.integrate(dt)
        ev.react(now, True, 40.0, True)  # the offer is unchanged: nothing new to follow
        longest = max(longest, len(ev._pending))
        if k % 4 == 0:
            ev.fire(now, True, 40.0, True)
            # The taper applies without lag: the draw is the charger's limit at this SoC.
            assert ev.draw_a == ev.charger_limit_a()
            # Nothing lagged is due: the car's next change of its own is on the taper grid.
            nxt = ev.next_change(now)
            if nxt != pytest.approx((now // TAPER_UPDATE_S + 1) * TAPER_UPDATE_S):
                off_grid += 1
    assert longest <= 1, f"{longest} lagged changes queued while the offer did not change"
    assert off_grid == 0, f"{off_grid} of 1,000 next changes off the taper grid"


def test_a_tapering_car_still_follows_each_offer_change_response_s_after_it() -> None:
    ev = _tapering_car(response_s=4.5)
    limit = ev.charger_limit_a()
    ev.react(10.0, True, 12.0, True)  # below the taper limit: the car must come down
    ev.react(13.0, True, 8.0, True)  # a second change does not postpone the first
    draws = []
    for t in (14.4, 14.5, 17.4, 17.5):
        ev.fire(t, True, 8.0, True)
        draws.append(ev.draw_a)
    assert draws[0] == pytest.approx(limit)
    assert draws[1:] == [12.0, 12.0, 8.0]
    ev.react(20.0, True, 40.0, True)  # raised again: back to its own (tapered) limit
    ev.fire(24.4, True, 40.0, True)
    assert ev.draw_a == 8.0
    ev.fire(24.5, True, 40.0, True)
    assert ev.draw_a == pytest.approx(ev.charger_limit_a())
    assert len(ev._pending) == 0


def test_a_car_whose_contactor_closes_starts_response_s_later() -> None:
    # The contactor's closing is lagged like an offer change; its opening is physics, at once.
    ev = SimEv(EvSpec(port="1", max_a=32.0, soc=0.85, response_s=3.0), 240.0)
    ev.in_c = True
    ev.react(0.0, True, 40.0, False)
    ev.react(1.0, True, 40.0, True)
    ev.fire(3.9, True, 40.0, True)
    assert ev.draw_a == 0.0
    ev.fire(4.0, True, 40.0, True)
    assert ev.draw_a == pytest.approx(ev.charger_limit_a())
    ev.react(5.0, True, 40.0, False)
    assert ev.draw_a == 0.0 and len(ev._pending) == 0


def _event_count(bus: SimBus, until: float, cap: int) -> int:
    """Jump from event to event of the bus, as the virtual-time runner does; stop at ``cap``."""
    now, events = bus.now, 0
    while events < cap:
        nxt = bus.next_change(now)
        if nxt is None or nxt > until:
            break
        now = max(nxt, now + 1e-6)
        bus.advance(now)
        events += 1
    return events


def test_a_bus_of_tapering_cars_changes_on_the_taper_grid_not_on_every_lag() -> None:
    ports = [str(i) for i in range(1, 17)]
    evs = [
        EvSpec(
            port=pid,
            max_a=16.0,
            battery_kwh=30.0,
            soc=TAPER_START_SOC - 0.01,
            target_soc=1.0,
            response_s=RESPONSES[i % len(RESPONSES)],
        )
        for i, pid in enumerate(ports)
    ]
    bus = SimBus(ports, evs, noise_a=0.0)
    bus.advance(0.0)
    for pid in ports:
        bus.port(pid).pwm(amps_to_duty(32.0))  # an offer above every car's charger
    bus.advance(HANDSHAKE_S)
    for pid in ports:
        bus.port(pid).command(True)
    bus.advance(905.0)  # every car is past its taper knee by now, between two taper updates
    assert all(bus.port(pid).ev.soc > TAPER_START_SOC for pid in ports)  # type: ignore[union-attr]
    for pid in ports:
        bus.port(pid).pwm(amps_to_duty(30.0))  # one change of the offer, still above them all
    hours = 2.0
    # The taper grid (240 in 2 h) plus a handful of changes per car (the lag after each offer
    # change, the taper knee, the target): 210 here. Before the fix the one offer change
    # started a cascade: 4,000 events by the 22nd minute, per-car delay lines of 50 entries.
    bound = int(hours * 3600 / TAPER_UPDATE_S) + 10 * len(ports)
    events = _event_count(bus, hours * 3600.0, cap=10 * bound)
    assert events <= bound
    assert all(bus.port(pid).drawn_a > 0.0 for pid in ports)  # still charging, tapered


def _tapering_site_scenario(hours: float) -> Scenario:
    """Eight ports on one 100 A circuit (80 A shared: 10 A each), cars with 9 A chargers
    past their taper knee: every car's own limit is below its offer all the time."""
    site = SiteSpec(
        "taper",
        (GroupSpec("c1", None, breaker_a=100.0),),
        tuple(
            PortSpec(f"p{i}", "c1", max_a=80.0, phases=Phases.L1_L2, fallback_a=8.0)
            for i in range(8)
        ),
        Policy.EQUAL,
    )
    evs = tuple(
        EvSpec(
            port=f"p{i}",
            max_a=9.0,
            battery_kwh=20.0,
            soc=TAPER_START_SOC + 0.01,
            target_soc=1.0,
            response_s=RESPONSES[i],
        )
        for i in range(8)
    )
    return Scenario(
        path="<test>",
        name="tapering-site",
        site=site,
        jumper=False,
        port_config=PortConfig(),
        control=ControlSettings(),
        duration_s=hours * 3600.0,
        evs=evs,
        voltages={p.id: p.voltage_v for p in site.ports},
    )


def test_a_site_of_tapering_cars_ticks_a_bounded_number_of_times() -> None:
    hours = 1.0
    summary = simulate(_tapering_site_scenario(hours)).summary
    assert summary["overshoot_as"] == 0.0 and summary["breaches"] == 0
    # The station loop ticks at least once a minute and on every change of the bus: the
    # taper grid (120 an hour) and each car's handshake and lags make 157 in this hour (as
    # before 71c84b6). With the taper fed through the delay line: 45,244.
    assert summary["ticks"] <= 400 * hours, summary["ticks"]
