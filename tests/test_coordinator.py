"""The coordinator's core, driven with hand-made telemetry: startup, decreases before increases
across stations, reserving silent stations, bad input and floods, site meters, time of use,
restart."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from controller.model import GroupSpec, PortSpec, SiteSpec
from controller.site import SiteConfig, SiteMeterSpec
from firmware.config import load_site_config
from firmware.link.coordinator import CoordinatorCore, CoordinatorSettings
from firmware.link.messages import Limits, PortTelemetry, Telemetry, encode_telemetry

ROOT = Path(__file__).resolve().parent.parent
WALL = datetime(2026, 11, 23, 0, 0, 0)  # a Monday


def site(breaker_a: float, stations: str = "ab", fallback: float = 8.0) -> SiteConfig:
    ports = tuple(PortSpec(f"{s}.1", "c1", 32.0, fallback_a=fallback) for s in stations)
    return SiteConfig.from_spec(SiteSpec("hq", (GroupSpec("c1", breaker_a=breaker_a),), ports))


def port(
    *,
    connected: bool = True,
    requesting: bool = True,
    offered: float = 0.0,
    drawn: float | None = 0.0,
    limit: float | None = None,
) -> PortTelemetry:
    return PortTelemetry(
        mode="C2" if requesting else ("B1" if connected else "A"),
        pilot="C" if requesting else ("B" if connected else "A"),
        offered_a=offered,
        drawn_a=drawn,
        energy_wh=0.0,
        connected=connected,
        requesting=requesting,
        session_start=0.0 if connected else None,
        limit_a=limit,
    )


class Station:
    """Telemetry of one hand-driven station, with an increasing ts and seq."""

    def __init__(self, sid: str, ports: tuple[str, ...] | None = None) -> None:
        self.sid = sid
        self.ports = ports or (f"{sid}.1",)
        self.seq = 0

    def tel(
        self,
        t: float,
        status: str = "sharing",
        limits_ts: float | None = None,
        **kwargs: object,
    ) -> bytes:
        self.seq += 1
        msg = Telemetry(
            self.sid,
            self.seq,
            t,
            status,
            {pid: port(**kwargs) for pid in self.ports},  # type: ignore[arg-type]
            limits_ts=limits_ts,
        )
        return encode_telemetry(msg)


def by_station(messages: list[Limits]) -> dict[str, Limits]:
    return {m.station: m for m in messages}


def total(core: CoordinatorCore) -> float:
    return sum(core.bounds().values())


def test_a_fresh_coordinator_sends_nothing_until_it_hears_then_nothing_that_raises() -> None:
    core = CoordinatorCore(site(50.0))
    assert core.step(0.0, WALL) == []
    a = Station("a")
    # Booting station: fallback, its transition cap 0 (nothing known).
    assert core.receive_telemetry(0.2, a.tel(0.2, "fallback", limit=0.0))
    out = by_station(core.step(0.2, WALL))
    assert set(out) == {"a"}  # b never heard from: nothing safe to say yet
    # At most a's fallback, and only as far as b (unknown: its port maximum) leaves room.
    assert out["a"].ports == {"a.1": 8.0}
    assert total(core) <= 40.0 + 1e-9
    assert out["a"].valid_s == 30.0 and out["a"].site == "hq"
    assert core.station_status(0.2) == {"a": "unknown", "b": "unknown"}


def _sharing(core: CoordinatorCore, a: Station, b: Station, t: float = 0.0) -> float:
    """Both stations booted and acknowledged; a charges, b has no car. Returns the time."""
    core.receive_telemetry(t, a.tel(t, "fallback", limit=0.0))
    core.receive_telemetry(t, b.tel(t, "fallback", limit=0.0, connected=False, requesting=False))
    first = by_station(core.step(t, WALL))
    t += 0.2
    core.receive_telemetry(t, a.tel(t, limits_ts=first["a"].ts, limit=0.0))
    core.receive_telemetry(
        t, b.tel(t, limits_ts=first["b"].ts, limit=0.0, connected=False, requesting=False)
    )
    return t


def test_decrease_goes_out_at_once_and_the_increase_waits_for_it() -> None:
    core = CoordinatorCore(site(50.0))  # 40 A
    a, b = Station("a"), Station("b")
    t = _sharing(core, a, b)
    out = by_station(core.step(t, WALL))
    assert out["a"].ports == {"a.1": 32.0}  # alone: its port maximum
    t += 0.2
    core.receive_telemetry(t, a.tel(t, limits_ts=out["a"].ts, offered=32, drawn=32, limit=32))
    core.step(t, WALL)
    # b's car plugs in.
    t += 1.0
    core.receive_telemetry(t, b.tel(t, limits_ts=out["b"].ts, limit=0.0))
    out = by_station(core.step(t, WALL))
    assert out["a"].ports["a.1"] == 20.0  # down to the equal share at once
    # b only gets what a's bound leaves: a may still be at 32 until it acknowledges.
    assert out["b"].ports["b.1"] == 8.0
    assert total(core) <= 40.0 + 1e-9
    # a applies 20, its car still draws 32: b waits.
    t += 0.2
    core.receive_telemetry(t, a.tel(t, limits_ts=out["a"].ts, offered=20, drawn=32, limit=20))
    later = by_station(core.step(t, WALL))
    assert "b" not in later or later["b"].ports["b.1"] <= 8.0
    assert core.bounds()["a.1"] == 32.0
    # a's meter shows its car followed: b gets the rest (up to a's reading + tolerance).
    t += 2.0
    core.receive_telemetry(t, a.tel(t, limits_ts=out["a"].ts, offered=20, drawn=19.9, limit=20))
    later = by_station(core.step(t, WALL))
    # 40 - (19.9 + 0.5 meter tolerance + 0.001 telemetry rounding), on the 0.1 A grid.
    assert later["b"].ports["b.1"] == 19.5
    assert total(core) <= 40.0 + 1e-9


def test_without_a_meter_reading_the_old_limit_counts_for_the_window() -> None:
    core = CoordinatorCore(site(50.0))
    a, b = Station("a"), Station("b")
    t = _sharing(core, a, b)
    out = by_station(core.step(t, WALL))
    t += 0.2
    core.receive_telemetry(t, a.tel(t, limits_ts=out["a"].ts, offered=32, drawn=None, limit=32))
    t += 1.0
    core.receive_telemetry(t, b.tel(t, limits_ts=out["b"].ts, limit=0.0))
    out = by_station(core.step(t, WALL))
    t += 0.2
    acked = t
    core.receive_telemetry(t, a.tel(t, limits_ts=out["a"].ts, offered=20, drawn=None, limit=20))
    core.step(t, WALL)
    assert core.bounds()["a.1"] == 32.0
    window = CoordinatorSettings().window_s
    deadline = core.next_deadline()
    assert deadline is not None and deadline <= acked + window
    core.step(acked + window, WALL)
    assert core.bounds()["a.1"] == 20.0


def test_a_silent_station_is_reserved_at_its_fallback_before_it_could_rise() -> None:
    # 30 A breaker: 24 A. a and b charge, c has no car (limit 0); all at 8 A fits exactly.
    cfg = site(30.0, "abc")
    settings = CoordinatorSettings()
    core = CoordinatorCore(cfg, settings)
    stations = {s: Station(s) for s in "abc"}
    t = 0.0
    for s, st in stations.items():
        idle = s == "c"
        core.receive_telemetry(
            t, st.tel(t, "fallback", limit=0.0, connected=not idle, requesting=not idle)
        )
    sent = by_station(core.step(t, WALL))
    acked_at = {}

    def report(t: float, s: str) -> None:
        idle = s == "c"
        lim = sent[s].ports[f"{s}.1"]
        core.receive_telemetry(
            t,
            stations[s].tel(
                t,
                limits_ts=sent[s].ts,
                offered=lim,
                drawn=lim,
                limit=lim,
                connected=not idle,
                requesting=not idle,
            ),
        )

    # Normal operation for a minute: everybody acknowledges every message.
    while t < 60.0:
        t += 0.2
        for s in "abc":
            report(t, s)
            acked_at[s] = sent[s].ts
        sent.update(by_station(core.step(t, WALL)))
        t += 4.8
        sent.update(by_station(core.step(t, WALL)))
    assert sent["a"].ports["a.1"] == 12.0 and sent["b"].ports["b.1"] == 12.0
    assert sent["c"].ports["c.1"] == 0.0
    assert core.station_status(t) == {"a": "sharing", "b": "sharing", "c": "sharing"}
    # c falls silent (its link is cut): it will fall back and rise to 8 A by itself.
    last_c = t
    rise_earliest = last_c + settings.valid_s + settings.rise_delay_s - 5.0  # generous
    lowered_at = None
    while t < last_c + 60.0:
        t += 0.2
        for s in "ab":
            report(t, s)
        sent.update(by_station(core.step(t, WALL)))
        if lowered_at is None and sent["a"].ports["a.1"] + sent["b"].ports["b.1"] <= 16.0:
            lowered_at = t
        t += 0.8
        sent.update(by_station(core.step(t, WALL)))
    assert core.station_status(t)["c"] == "silent"
    assert core.bounds()["c.1"] == 8.0
    assert lowered_at is not None
    # a and b were told to make room with time for their cars to follow (5 s + latency).
    assert lowered_at + 6.0 <= rise_earliest
    assert total(core) <= 24.0 + 1e-9
    # c's limits are its fallback level from now on (what it will apply when it comes back).
    assert sent["c"].ports["c.1"] == 8.0


def test_offline_station_is_reserved_at_once() -> None:
    core = CoordinatorCore(site(50.0))
    a, b = Station("a"), Station("b")
    t = _sharing(core, a, b)
    core.step(t, WALL)
    assert core.station_status(t) == {"a": "sharing", "b": "sharing"}
    core.station_offline(t + 1.0, "b")
    assert core.station_status(t + 1.0)["b"] == "offline"
    assert core.bounds()["b.1"] == 8.0
    core.station_offline(t + 1.0, "nobody")  # ignored


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", "json"),
        (b'{"v": 7}', "version"),
        (Station("z").tel(1.0), "station"),
        (
            encode_telemetry(Telemetry("a", 1, 1.0, "sharing", {"b.1": port()})),
            "port",
        ),
        (b'{"v":1,"station":"a","seq":1,"ts":1,"status":"sharing","ports":{},"x":1}', "schema"),
        (
            b'{"v":1,"station":"a","seq":1,"ts":1,"status":"sharing","ports":'
            b'{"a.1":{"mode":"C2","pilot":"C","offered_a":NaN,"drawn_a":0,"energy_wh":0,'
            b'"connected":true,"requesting":true}}}',
            "value",
        ),
    ],
)
def test_bad_telemetry_is_refused_and_counted(payload: bytes, reason: str) -> None:
    core = CoordinatorCore(site(50.0))
    assert not core.receive_telemetry(1.0, payload)
    assert core.rejected == {reason: 1}
    assert core.accepted == 0


def test_replayed_telemetry_is_refused() -> None:
    core = CoordinatorCore(site(50.0))
    a = Station("a")
    assert core.receive_telemetry(1.0, a.tel(10.0))
    old = a.tel(5.0)
    assert not core.receive_telemetry(2.0, old)
    assert core.rejected == {"replay": 1}
    # After the station was offline (it may have restarted, clock from 0): accepted.
    core.station_offline(3.0, "a")
    assert core.receive_telemetry(4.0, a.tel(0.5))


def test_a_telemetry_flood_is_refused_and_counted() -> None:
    core = CoordinatorCore(site(50.0))
    a = Station("a")
    accepted = sum(core.receive_telemetry(1.0, a.tel(1.0 + k * 1e-3)) for k in range(500))
    assert accepted == 50
    assert core.rejected == {"flood": 450}
    assert core.receive_telemetry(2.0, a.tel(5.0))  # a second later the bucket has refilled


def _dlm_site() -> SiteConfig:
    spec = SiteSpec(
        "hq",
        (GroupSpec("site", limit_kw=20.0), GroupSpec("c1", parent="site", breaker_a=100.0)),
        (PortSpec("a.1", "c1", 48.0, fallback_a=8.0), PortSpec("b.1", "c1", 48.0, fallback_a=8.0)),
    )
    meter = SiteMeterSpec(max_kw=20.0, conservative_kw=5.0, topic=True, stale_s=30.0)
    return SiteConfig(spec, {"a": ("a.1",), "b": ("b.1",)}, meters={"site": meter})


def test_site_meter_sets_the_group_limit_and_a_stale_one_the_conservative_limit() -> None:
    core = CoordinatorCore(_dlm_site())
    core.step(0.0, WALL)
    assert core.tree().limits()["site:kW"] == 5.0  # no reading yet: conservative
    assert core.set_meter(1.0, "site", 12.0)
    core.step(1.0, WALL)
    assert core.tree().limits()["site:kW"] == 8.0  # 20 kW maximum - 12 kW unmanaged
    core.step(30.9, WALL)
    assert core.tree().limits()["site:kW"] == 8.0
    core.step(31.1, WALL)  # 30 s without a reading: stale
    assert core.tree().limits()["site:kW"] == 5.0
    assert core.set_meter(32.0, "site", -3.0)  # exporting: at most the maximum
    core.step(32.0, WALL)
    assert core.tree().limits()["site:kW"] == 20.0
    assert not core.set_meter(33.0, "c1", 1.0)
    assert not core.set_meter(33.0, "site", float("nan"))
    assert core.rejected == {"meter": 2}
    assert core.tree().limits()["site:kW"] == 20.0


def test_time_of_use_boundaries_move_the_limits_and_a_decrease_is_held_until_followed() -> None:
    core = CoordinatorCore(load_site_config(ROOT / "configs" / "sites" / "office-tou.yaml"))
    start = WALL + timedelta(hours=5, minutes=59)
    core.step(0.0, start)
    assert core.tree().limits()["site:kW"] == 40.0
    t = 0.0
    while (deadline := core.next_deadline()) is not None and deadline < 60.0:
        t = deadline
        core.step(t, start + timedelta(seconds=t))
        assert core.tree().limits()["site:kW"] == 40.0
    assert core.next_deadline() == pytest.approx(60.0)  # 06:00 is a deadline of its own
    core.step(60.0, start + timedelta(seconds=60))
    assert core.tree().limits()["site:kW"] == 20.0
    # Nothing is drawing (no station has reported): the bounds fit at once.
    core.step(60.1, start + timedelta(seconds=60.1))
    assert core.limits()["site:kW"] == 20.0


def test_time_of_use_decrease_is_reported_at_the_old_value_while_stations_follow() -> None:
    cfg = load_site_config(ROOT / "configs" / "sites" / "office-tou.yaml")
    core = CoordinatorCore(cfg)
    start = WALL + timedelta(hours=5, minutes=58)
    stations = {sid: Station(sid, ports) for sid, ports in cfg.stations.items()}
    t = 0.0
    for st in stations.values():
        core.receive_telemetry(t, st.tel(t, "fallback", limit=0.0))
    sent = by_station(core.step(t, start))
    while t < 150.0:  # every station acknowledges and draws what it is given
        t += 0.2
        for sid, st in stations.items():
            lim = min(sent[sid].ports.values())  # the station's ports draw the lower of the two
            core.receive_telemetry(
                t, st.tel(t, limits_ts=sent[sid].ts, offered=lim, drawn=lim, limit=lim)
            )
        sent.update(by_station(core.step(t, start + timedelta(seconds=t))))
        if 120.0 < t < 122.0:
            # Just after 06:00: 20 kW applies to what is sent, 40 kW is still reported.
            assert core.tree().limits()["site:kW"] == 20.0
            assert core.limits()["site:kW"] == 40.0
        t += 0.8
        sent.update(by_station(core.step(t, start + timedelta(seconds=t))))
    assert core.limits()["site:kW"] == 20.0
    kw = sum(a * 0.208 for m in sent.values() for a in m.ports.values())
    assert kw <= 20.0 + 1e-6


def test_a_restarted_coordinator_never_raises_a_station_it_does_not_know() -> None:
    core = CoordinatorCore(site(50.0))
    a, b = Station("a"), Station("b")
    # Both still sharing under a predecessor's limits (ts it never sent).
    core.receive_telemetry(0.0, a.tel(0.0, limits_ts=123.0, offered=30, drawn=30, limit=30))
    core.receive_telemetry(0.0, b.tel(0.0, limits_ts=123.0, offered=4, drawn=4, limit=6.0))
    out = by_station(core.step(0.0, WALL))
    assert out["a"].ports["a.1"] <= 8.0  # at most min(its cap, fallback): never a raise
    # b may go from 6 A to its 8 A fallback only because a's 30 A leave room for it.
    assert out["b"].ports["b.1"] == 8.0
    assert core.station_status(0.0) == {"a": "unknown", "b": "unknown"}
    assert core.bounds() == {"a.1": 30.0, "b.1": 8.0}
    # On a 36 A circuit a's 30 A leave b no room to rise: it gets at most what it has.
    core2 = CoordinatorCore(site(45.0))
    core2.receive_telemetry(0.0, a.tel(1.0, limits_ts=123.0, offered=30, drawn=30, limit=30))
    core2.receive_telemetry(0.0, b.tel(1.0, limits_ts=123.0, offered=4, drawn=4, limit=6.0))
    out = by_station(core2.step(0.0, WALL))
    assert out["a"].ports["a.1"] <= 8.0
    assert out["b"].ports["b.1"] <= 6.0


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="valid_s must cover"):
        CoordinatorSettings(valid_s=6.0, publish_period_s=5.0)
    with pytest.raises(ValueError, match="rise_delay_s"):
        CoordinatorSettings(publish_period_s=10.0, valid_s=40.0)
    CoordinatorSettings(publish_period_s=10.0, valid_s=40.0, rise_delay_s=27.0)
    with pytest.raises(ValueError, match="latency_margin_s"):
        CoordinatorSettings(latency_margin_s=-1.0)


class _Site3x2:
    """Three two-port stations on a 64 A circuit (tests/fixtures/link/site-3x2.yaml), five
    cars, each station applying the limits it receives at once and acknowledging them in its
    next telemetry (vehicles follow at once). A station in ``cut`` neither sends nor
    receives anything."""

    CARS = ("st1.1", "st1.2", "st2.1", "st2.2", "st3.1")

    def __init__(self) -> None:
        self.core = CoordinatorCore(load_site_config(ROOT / "tests/fixtures/link/site-3x2.yaml"))
        self.ports = dict(self.core.stations)
        self.limit = {p: 8.0 for ps in self.ports.values() for p in ps}
        self.acked: dict[str, float | None] = dict.fromkeys(self.ports)
        self.status = dict.fromkeys(self.ports, "fallback")
        self.seq = dict.fromkeys(self.ports, 0)
        self.cut: set[str] = set()

    def tick(self, t: float) -> None:
        for sid, ports in self.ports.items():
            if sid in self.cut:
                continue
            self.seq[sid] += 1
            tel = {}
            for p in ports:
                car = p in self.CARS
                a = self.limit[p] if car else 0.0
                tel[p] = port(
                    connected=car, requesting=car, offered=a, drawn=a, limit=self.limit[p]
                )
            msg = Telemetry(sid, self.seq[sid], t, self.status[sid], tel, limits_ts=self.acked[sid])
            assert self.core.receive_telemetry(t, encode_telemetry(msg))
        for m in self.core.step(t, WALL):
            if m.station not in self.cut:
                self.acked[m.station] = m.ts
                self.status[m.station] = "sharing"
                self.limit.update(m.ports)
        assert sum(self.limit[p] for p in self.CARS) <= 64.0 + 1e-6  # what the cars draw


def test_a_station_squeezed_out_while_others_were_reserved_resumes_when_they_share() -> None:
    # A restarted coordinator hears st1 first: st2 and st3 count at their port maxima until
    # heard (startup hold), so st1's cars are paused (0 A; round robin marks them waiting).
    # Once the others share, the room is back: st1's cars must get their minimum within
    # 30 s, not sit out the resume hysteresis until the 15 min round-robin re-rank while the
    # others take the whole circuit.
    rig = _Site3x2()
    rig.cut = {"st2", "st3"}
    t = 0.0
    while t < 10.0:
        rig.tick(t)
        t += 1.0
    assert rig.core.station_status(t)["st1"] == "sharing"
    assert rig.limit["st1.1"] == rig.limit["st1.2"] == 0.0
    rig.cut.clear()
    while t < 40.0:
        rig.tick(t)
        t += 1.0
    assert rig.core.station_status(t) == dict.fromkeys(rig.ports, "sharing")
    assert all(rig.limit[p] >= 8.0 for p in rig.CARS), rig.limit


def test_a_car_that_leaves_c_in_answer_to_a_pause_is_not_taken_as_in_b_by_choice() -> None:
    # st1 shares first: its cars are paused (sent 0 A) while st2 and st3 count at their
    # maxima. The cars leave C in answer to the pause (J1772: PWM off; hal.sim.ev) just as
    # the others share again and st1's new, higher limits are on their way: the telemetry
    # shows B with the pilot still off. A car in B returns to C once its port offers again.
    # They must not be taken as "in B by choice" (the inner controller's own offer was above
    # 0 when they left C) and left at 0 A, PWM off, for good.
    rig = _Site3x2()
    rig.cut = {"st2", "st3"}
    t = 0.0
    while t < 10.0:
        rig.tick(t)
        t += 1.0
    assert rig.limit["st1.1"] == rig.limit["st1.2"] == 0.0
    rig.cut.clear()
    in_b: set[str] = set()
    for _ in range(40):
        # The telemetry of this tick: st1's cars in B (paused), the rest as the rig says.
        if not in_b and rig.limit["st1.1"] > 0.0:
            in_b = {"st1.1", "st1.2"}  # left C as the pause took effect, offer 0 on the pilot
        elif in_b:
            in_b = {p for p in in_b if rig.limit[p] <= 0.0}  # PWM on: back to C
        _tick_with_b(rig, t, in_b)
        t += 1.0
    assert rig.core.station_status(t) == dict.fromkeys(rig.ports, "sharing")
    assert all(rig.limit[p] >= 8.0 for p in rig.CARS), rig.limit


def _tick_with_b(rig: _Site3x2, t: float, in_b: set[str]) -> None:
    """`_Site3x2.tick`, with the cars in ``in_b`` in state B (PWM off: offered 0)."""
    for sid, ports in rig.ports.items():
        rig.seq[sid] += 1
        tel = {}
        for p in ports:
            car = p in rig.CARS
            if p in in_b:
                tel[p] = port(requesting=False, offered=0.0, drawn=0.0, limit=rig.limit[p])
                continue
            a = rig.limit[p] if car else 0.0
            tel[p] = port(connected=car, requesting=car, offered=a, drawn=a, limit=rig.limit[p])
        msg = Telemetry(sid, rig.seq[sid], t, rig.status[sid], tel, limits_ts=rig.acked[sid])
        assert rig.core.receive_telemetry(t, encode_telemetry(msg))
    for m in rig.core.step(t, WALL):
        rig.acked[m.station] = m.ts
        rig.status[m.station] = "sharing"
        rig.limit.update(m.ports)


# --- the cross-check: the coordinator trusts what it measures -------------------------------


def _two_sharing(core: CoordinatorCore) -> tuple[Station, Station, float, dict[str, Limits]]:
    """a and b each charging one car, sharing 40 A at 20 A each, acknowledged."""
    a, b = Station("a"), Station("b")
    t = _sharing(core, a, b)
    core.receive_telemetry(t, b.tel(t, limits_ts=None, limit=0.0))
    out = by_station(core.step(t, WALL))
    for _ in range(40):  # until both are at their 20 A share, confirmed by their meters
        t += 1.0
        for s in (a, b):
            sent = out[s.sid].ports[f"{s.sid}.1"]
            core.receive_telemetry(
                t, s.tel(t, limits_ts=out[s.sid].ts, offered=sent, drawn=sent, limit=sent)
            )
        out.update(by_station(core.step(t, WALL)))
        if all(out[s].ports[f"{s}.1"] == 20.0 for s in "ab"):
            break
    assert out["a"].ports == {"a.1": 20.0} and out["b"].ports == {"b.1": 20.0}
    return a, b, t, out


def test_an_acknowledgement_of_limits_never_sent_makes_a_station_untrusted() -> None:
    core = CoordinatorCore(site(50.0))  # 40 A; each port's local maximum: 32 A
    a, _b, t, _out = _two_sharing(core)
    assert core.local_max == {"a.1": 32.0, "b.1": 32.0}
    # Someone gave a limits of a far-future ts: a applied them and says so.
    t += 0.5
    core.receive_telemetry(t, a.tel(t, limits_ts=1e12, offered=20, drawn=20, limit=20))
    assert "limits of ts 1000000000000.0" in core.alarms()["a"]
    assert core.station_status(t)["a"] == "untrusted"
    assert core.bounds()["a.1"] == 32.0  # its local maximum, whatever it says
    later = by_station(core.step(t, WALL))
    assert later["b"].ports["b.1"] <= 8.0  # 40 - 32: the circuit holds even if a offers 32
    assert later["a"].ports["a.1"] == 8.0  # and a is sent its fallback level


def test_an_offer_or_a_cap_above_what_was_sent_makes_a_station_untrusted() -> None:
    for field in ("offered", "limit"):
        core = CoordinatorCore(site(50.0))
        a, _, t, out = _two_sharing(core)
        t += 0.5
        said = {"offered": 20.0, "drawn": 20.0, "limit": 20.0, field: 32.0}
        core.receive_telemetry(t, a.tel(t, limits_ts=out["a"].ts, **said))  # type: ignore[arg-type]
        assert "above the 20 A sent" in core.alarms()["a"], field


def test_an_untrusted_station_is_trusted_again_after_behaving_for_station_silent_s() -> None:
    core = CoordinatorCore(site(50.0))
    a, b, t, out = _two_sharing(core)
    t += 0.5
    core.receive_telemetry(t, a.tel(t, limits_ts=1e12, offered=20, drawn=20, limit=20))
    out.update(by_station(core.step(t, WALL)))
    start = t
    while core.alarms():
        t += 1.0
        assert t - start < 60.0, "never trusted again"
        for s in (a, b):
            sent = out[s.sid].ports[f"{s.sid}.1"]
            core.receive_telemetry(
                t, s.tel(t, limits_ts=out[s.sid].ts, offered=sent, drawn=sent, limit=sent)
            )
        out.update(by_station(core.step(t, WALL)))
        assert total(core) <= 40.0 + 1e-9 or core.alarms()
    assert core.settings.station_silent_s <= t - start <= core.settings.station_silent_s + 2.0
    assert core.station_status(t)["a"] == "sharing"


def test_a_predecessors_acknowledgement_is_no_alarm() -> None:
    core = CoordinatorCore(site(50.0))
    a = Station("a")
    core.step(0.0, WALL)
    older = WALL.timestamp() - 100.0  # a predecessor's message, before our clock
    core.receive_telemetry(0.1, a.tel(0.1, limits_ts=older, offered=8, drawn=8, limit=8))
    assert core.alarms() == {}


def test_a_station_that_reconnects_gets_its_limits_at_once() -> None:
    core = CoordinatorCore(site(50.0))
    _a, _b, t, _out = _two_sharing(core)
    t += 0.3
    assert core.step(t, WALL) == []  # nothing changed, the period is not over
    core.station_online(t, "a")
    again = core.step(t, WALL)
    assert [m.station for m in again] == ["a"]


def test_our_own_reconnect_republishes_and_forgives_the_silence_it_caused() -> None:
    core = CoordinatorCore(site(50.0))
    _a, _b, t, _out = _two_sharing(core)
    t += 20.0  # the coordinator lost the broker for 20 s: nobody was heard
    core.reconnected(t)
    again = by_station(core.step(t, WALL))
    assert set(again) == {"a", "b"}
    # Nobody was lowered to fallback for a silence that was ours.
    assert again["a"].ports == {"a.1": 20.0} and again["b"].ports == {"b.1": 20.0}
    assert core.station_status(t) == {"a": "sharing", "b": "sharing"}
