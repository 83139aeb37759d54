"""The station side of the link: validation of limit messages, caps, the safe transition to and
from fallback, telemetry, and the RemoteLimitedController that applies it all to a station."""

from __future__ import annotations

import json
import logging
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core import Controller
from controller.limits import LimitTree
from controller.model import GroupSpec, PortObservation, PortSpec, SiteSpec
from firmware.link.messages import Limits, decode_telemetry, encode_limits
from firmware.link.remote import RemoteLimitedController
from firmware.link.station_link import (
    DEFAULT_RISE_DELAY_S,
    StationLink,
)
from firmware.station import Snapshot, Station
from hal.sim.bus import SimBus
from hal.sim.ev import EvSpec

PORTS = ("st1.1", "st1.2")
FALLBACK = {"st1.1": 8.0, "st1.2": 8.0}


def link(**kwargs: object) -> StationLink:
    return StationLink("hq", "st1", PORTS, fallback_a=FALLBACK, **kwargs)  # type: ignore[arg-type]


def limits(
    ts: float,
    ports: dict[str, float] | None = None,
    *,
    valid_s: float = 30.0,
    site: str = "hq",
    station: str = "st1",
) -> bytes:
    return encode_limits(
        Limits(
            site,
            station,
            0,
            ts,
            valid_s,
            ports if ports is not None else dict.fromkeys(PORTS, 20.0),
        )
    )


def raw(**doc: object) -> bytes:
    base: dict[str, object] = {
        "v": 1,
        "site": "hq",
        "station": "st1",
        "seq": 0,
        "ts": 1.0,
        "valid_s": 30,
        "ports": {"st1.1": 10, "st1.2": 10},
    }
    base.update(doc)
    return json.dumps(base).encode()


# --- applying limits -----------------------------------------------------------------------


def test_limits_apply_then_expire_after_valid_s_counted_from_receipt() -> None:
    lk = link()
    assert lk.caps(0.0) is None and lk.status(0.0) == "fallback"
    assert lk.receive_limits(100.0, limits(5.0, {"st1.1": 20.0, "st1.2": 0.0}))
    assert lk.caps(100.0) == {"st1.1": 20.0, "st1.2": 0.0}
    assert lk.status(129.9) == "sharing"
    assert lk.limits_ts(129.9) == 5.0
    assert lk.caps(130.0) is None  # 30 s after receipt, whatever the sender's clock said
    assert lk.status(130.0) == "fallback"
    assert lk.limits_ts(130.0) is None
    assert lk.accepted == 1 and not lk.rejected


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "json"),
        (b"\xff\xfe", "json"),
        (b"[1, 2]", "schema"),
        (raw(v=2), "version"),
        (raw(v="1"), "version"),
        (raw(ports={"st1.1": 10, "st1.2": 10, "st9.1": 10}), "port"),
        (raw(ports={"st1.1": 10}), "port"),
        (raw(ports={"st1.1": -1, "st1.2": 10}), "value"),
        (
            b'{"v":1,"site":"hq","station":"st1","seq":0,"ts":1,"valid_s":30,'
            b'"ports":{"st1.1":NaN,"st1.2":10}}',
            "value",
        ),
        (raw(ports={"st1.1": 1e9, "st1.2": 10}), "value"),
        (raw(valid_s=0), "value"),
        (raw(valid_s=3600), "value"),
        (raw(site="elsewhere"), "site"),
        (raw(station="st2"), "station"),
        (raw(extra=1), "schema"),
        (b"x" * 300_000, "size"),
    ],
)
def test_bad_limits_are_refused_counted_and_never_applied(payload: bytes, reason: str) -> None:
    lk = link()
    assert lk.receive_limits(0.0, limits(1.0, {"st1.1": 12.0, "st1.2": 12.0}))
    assert not lk.receive_limits(1.0, payload)
    assert lk.rejected == {reason: 1}
    assert lk.caps(1.0) == {"st1.1": 12.0, "st1.2": 12.0}  # what was in force stays


def test_replayed_or_reordered_limits_are_refused() -> None:
    lk = link()
    assert lk.receive_limits(0.0, limits(10.0, {"st1.1": 8.0, "st1.2": 8.0}))
    assert not lk.receive_limits(1.0, limits(10.0, {"st1.1": 30.0, "st1.2": 30.0}))
    assert not lk.receive_limits(1.0, limits(9.0, {"st1.1": 30.0, "st1.2": 30.0}))
    assert lk.rejected == {"replay": 2}
    assert lk.caps(1.0) == {"st1.1": 8.0, "st1.2": 8.0}
    # A restarted coordinator has a later wall clock: accepted.
    assert lk.receive_limits(2.0, limits(11.0, {"st1.1": 16.0, "st1.2": 16.0}))


def test_a_flood_is_refused_before_decoding_and_counted() -> None:
    lk = link(flood_rate=20.0, flood_burst=50.0)
    accepted = sum(lk.receive_limits(5.0, limits(1.0 + 0.001 * k)) for k in range(1000))
    assert accepted == 50
    assert lk.rejected["flood"] == 950
    # The bucket refills: a second later, 20 more messages get through.
    assert sum(lk.receive_limits(6.0, limits(2.0 + 0.001 * k)) for k in range(100)) == 20


def test_refusals_are_logged_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    lk = link()
    with caplog.at_level(logging.INFO, logger="ampshare.link"):
        for k in range(5):
            lk.receive_limits(float(k), b"{bad")
        lk.receive_limits(5.0, raw(v=9))
        assert lk.receive_limits(6.0, limits(1.0))
        for k in range(3):
            lk.receive_limits(7.0 + k, b"{bad")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3  # json, version, then json again after an accepted message
    assert any("accepted again after 6 refused" in r.getMessage() for r in caplog.records)
    assert lk.rejected == {"json": 8, "version": 1}


# --- the transition rule -------------------------------------------------------------------


def test_fallback_transition_lowers_at_once_and_raises_only_after_the_rise_delay() -> None:
    lk = link()
    lk.receive_limits(0.0, limits(1.0, {"st1.1": 30.0, "st1.2": 0.0}))
    assert lk.in_force(29.0) == {"st1.1": 30.0, "st1.2": 0.0}
    # Expiry: the port above its fallback comes down at once; the one below stays.
    assert lk.in_force(30.0) == {"st1.1": 8.0, "st1.2": 0.0}
    assert lk.in_force(30.0 + DEFAULT_RISE_DELAY_S - 0.01) == {"st1.1": 8.0, "st1.2": 0.0}
    assert lk.rise_at(31.0) == pytest.approx(30.0 + DEFAULT_RISE_DELAY_S)
    assert lk.in_force(30.0 + DEFAULT_RISE_DELAY_S) == FALLBACK
    # Limits again: applied at once, even mid-transition.
    lk.receive_limits(60.0, limits(2.0, {"st1.1": 4.0, "st1.2": 25.0}))
    assert lk.in_force(60.0) == {"st1.1": 4.0, "st1.2": 25.0}


def test_a_station_boots_at_zero_and_rises_to_fallback_after_the_delay() -> None:
    lk = link()
    assert lk.in_force(0.0) == {"st1.1": 0.0, "st1.2": 0.0}
    assert lk.next_deadline(0.0) == pytest.approx(DEFAULT_RISE_DELAY_S)
    assert lk.in_force(DEFAULT_RISE_DELAY_S) == FALLBACK


def test_drop_starts_the_transition_now() -> None:
    lk = link()
    lk.receive_limits(0.0, limits(1.0, {"st1.1": 16.0, "st1.2": 6.0}))
    lk.drop(10.0)
    assert lk.caps(10.0) is None
    assert lk.in_force(10.0) == {"st1.1": 8.0, "st1.2": 6.0}
    assert lk.in_force(10.0 + DEFAULT_RISE_DELAY_S) == FALLBACK


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="rise_delay_s"):
        link(rise_delay_s=1.0)
    with pytest.raises(ValueError, match="telemetry_period_s"):
        link(telemetry_period_s=0.0)
    with pytest.raises(ValueError, match="at least one port"):
        StationLink("hq", "st1", ())
    with pytest.raises(ValueError, match="unknown port"):
        link().set_fallback({"nope": 8.0})


# --- RemoteLimitedController on a real station -------------------------------------------

JUMPER = SiteSpec(
    "st1",
    (GroupSpec("st1", breaker_a=40.0),),  # one feed, 32 A continuous
    (
        PortSpec("st1.1", "st1", 32.0, fallback_a=8.0),
        PortSpec("st1.2", "st1", 32.0, fallback_a=8.0),
    ),
)


def linked() -> tuple[RemoteLimitedController, StationLink]:
    lk = StationLink("hq", "st1", PORTS)
    return RemoteLimitedController(Controller(LimitTree.from_spec(JUMPER)), lk), lk


CHARGING = {pid: PortObservation(True, True, None, 0.0) for pid in PORTS}


def test_linked_controller_follows_remote_caps_and_keeps_its_own_breaker() -> None:
    ctl, lk = linked()
    assert lk.receive_limits(0.0, limits(1.0, {"st1.1": 80.0, "st1.2": 10.0}))
    offers = ctl.update(0.0, CHARGING).offers
    # The coordinator says 80 A: the port's own 32 A and the station's 32 A feed still hold.
    assert offers["st1.2"] <= 10.0
    assert offers["st1.1"] + offers["st1.2"] <= 32.0
    assert offers["st1.1"] <= 32.0
    assert lk.status(0.0) == "sharing"


def test_linked_controller_goes_to_fallback_and_says_so() -> None:
    ctl, lk = linked()
    lk.receive_limits(0.0, limits(1.0, {"st1.1": 20.0, "st1.2": 12.0}))
    ctl.update(0.0, CHARGING)
    assert ctl.next_deadline() is not None and ctl.next_deadline() <= 30.0  # type: ignore[operator]
    decision = ctl.update(30.0, CHARGING)
    assert decision.offers == {"st1.1": 8.0, "st1.2": 8.0}  # both above fallback: down at once
    assert set(decision.binding.values()) == {"fallback"}
    # Station loop says the link is down: drops limits at once.
    ctl2, lk2 = linked()
    lk2.receive_limits(0.0, limits(1.0, {"st1.1": 6.0, "st1.2": 20.0}))
    ctl2.update(0.0, CHARGING)
    offers = ctl2.update(1.0, CHARGING, link_up=False).offers
    assert offers["st1.2"] == 8.0 and offers["st1.1"] <= 6.0
    assert ctl2.update(1.0 + DEFAULT_RISE_DELAY_S, CHARGING, link_up=False).offers == FALLBACK


def test_linked_controller_refuses_a_link_for_other_ports() -> None:
    with pytest.raises(ValueError, match="ports"):
        RemoteLimitedController(
            Controller(LimitTree.from_spec(JUMPER)), StationLink("hq", "st1", ("a", "b"))
        )


_payloads = st.one_of(
    st.builds(
        lambda a, b, ts, v: limits(ts, {"st1.1": a, "st1.2": b}, valid_s=v),
        st.floats(0.0, 1000.0),
        st.floats(0.0, 1000.0),
        st.floats(-10.0, 1e6),
        st.floats(0.1, 700.0),
    ),
    st.binary(max_size=64),
    st.sampled_from([raw(v=2), raw(ports={"st1.1": 5}), raw(station="x"), b"{}"]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 40.0), _payloads, st.booleans()), max_size=25))
def test_no_message_raises_a_port_above_its_local_cap(
    steps: list[tuple[float, bytes, bool]],
) -> None:
    ctl, lk = linked()
    now = 0.0
    for dt, payload, link_up in steps:
        now += dt
        lk.receive_limits(now, payload)
        caps = lk.caps(now) if link_up else None
        decision = ctl.update(now, CHARGING, link_up=link_up)
        offers = decision.offers
        assert offers["st1.1"] + offers["st1.2"] <= 32.0 + 1e-9  # the station's own feed
        for pid in PORTS:
            assert 0.0 <= offers[pid] <= 32.0
            if caps is not None:
                assert offers[pid] <= caps[pid] + 1e-9  # remote limits only lower
            else:
                assert offers[pid] <= 8.0  # fallback level at most


# --- telemetry -----------------------------------------------------------------------------


def _station(lk: StationLink) -> Station:
    bus = SimBus(list(PORTS), [EvSpec("st1.1", arrive_s=0.0, max_a=32.0)])
    ctl = RemoteLimitedController(Controller(LimitTree.from_spec(JUMPER)), lk)
    return Station(JUMPER, bus, ctl, jumper=False)


def test_telemetry_from_a_snapshot_acknowledges_limits_and_reports_caps() -> None:
    lk = StationLink("hq", "st1", PORTS, telemetry_period_s=5.0)
    station = _station(lk)
    lk.receive_limits(0.0, limits(42.0, {"st1.1": 20.0, "st1.2": 0.0}))
    snap = None
    for t in (0.0, 0.5, 1.0, 2.0, 3.5, 4.0):
        snap = station.step(t)
    assert snap is not None
    assert lk.telemetry_due(4.0, snap)
    tel = decode_telemetry(lk.telemetry(4.0, snap))
    assert tel.station == "st1" and tel.status == "sharing" and tel.limits_ts == 42.0
    p1, p2 = tel.ports["st1.1"], tel.ports["st1.2"]
    assert p1.connected and p1.requesting and p1.offered_a == 20.0 and p1.limit_a == 20.0
    assert p1.session_start == 0.0 and p1.drawn_a is not None and p1.drawn_a > 19.0
    assert not p2.connected and p2.limit_a == 0.0 and p2.session_start is None
    # Sent: not due again until the period, or until something the coordinator uses changes.
    assert not lk.telemetry_due(4.05, snap)
    assert not lk.telemetry_due(8.9, snap)
    assert lk.telemetry_due(9.0, snap)
    # New, lower limits arrive between two ticks: a snapshot from before the station applied
    # them still acknowledges the old ones (its offers and readings are under those).
    lk.receive_limits(5.0, limits(43.0, {"st1.1": 10.0, "st1.2": 0.0}))
    assert not lk.telemetry_due(5.0, snap)
    assert decode_telemetry(lk.telemetry(5.0, snap)).limits_ts == 42.0
    snap = station.step(5.2)  # the tick that applies them
    assert lk.telemetry_due(5.3, snap)  # a new acknowledgement
    second = decode_telemetry(lk.telemetry(5.3, snap))
    assert second.seq == tel.seq + 2 and second.limits_ts == 43.0
    assert second.ports["st1.1"].offered_a == 10.0 and second.ports["st1.1"].limit_a == 10.0


def test_telemetry_says_fallback_and_inhibited() -> None:
    lk = StationLink("hq", "st1", PORTS)
    station = _station(lk)
    snap = station.step(0.0)
    assert decode_telemetry(lk.telemetry(0.0, snap)).status == "fallback"
    station.hardware.jumper.value = True  # type: ignore[attr-defined]
    snap = station.step(1.0)
    assert snap.inhibit is not None
    assert lk.status(1.0, snap) == "inhibited"
    assert decode_telemetry(lk.telemetry(1.0, snap)).status == "inhibited"


def test_local_ids_map_wire_ports_to_the_stations_own() -> None:
    lk = StationLink("hq", "st1", PORTS, local_ids={"st1.1": "1", "st1.2": "2"})
    assert lk.receive_limits(0.0, limits(1.0, {"st1.1": 7.0, "st1.2": 9.0}))
    assert lk.caps(0.0) == {"1": 7.0, "2": 9.0}
    with pytest.raises(ValueError, match="local_ids"):
        StationLink("hq", "st1", PORTS, local_ids={"st1.1": "1"})


def test_limit_values_are_finite_in_every_state() -> None:
    lk = link()
    for t in (0.0, 5.0, 100.0):
        assert all(math.isfinite(v) for v in lk.in_force(t).values())


# --- freshness: no message may lock out the coordinator ------------------------------------


def test_a_far_future_ts_is_refused_while_the_coordinator_is_heard() -> None:
    lk = link()
    assert lk.receive_limits(0.0, limits(1000.0))
    assert not lk.receive_limits(1.0, limits(1e12, dict.fromkeys(PORTS, 30.0), valid_s=60))
    assert lk.rejected == {"future": 1}
    # The coordinator's own next message is still taken: its clock ran with the station's.
    assert lk.receive_limits(5.0, limits(1005.0, dict.fromkeys(PORTS, 10.0)))
    assert lk.in_force(5.0) == dict.fromkeys(PORTS, 10.0)
    # A second or two of coordinator clock ahead is fine (it is slewed, and steps 1 ms).
    assert lk.receive_limits(6.0, limits(1008.0))


def test_no_message_stops_a_station_for_longer_than_one_validity() -> None:
    """At boot nothing is known, so even a forged far-future message is taken (an insecure lab
    link; with a key it could not be made). It can hold the station off its real coordinator
    for at most the longest validity a station accepts (60 s), then the real one is back."""
    lk = link()
    assert lk.max_valid_s == 60.0
    assert lk.receive_limits(0.0, limits(1e12, valid_s=60))
    assert not lk.receive_limits(30.0, limits(1000.0))
    assert lk.rejected == {"replay": 1}
    assert lk.receive_limits(60.0, limits(1060.0))  # the anchor is 60 s old: void
    assert lk.limits_ts(60.0) == 1060.0


def test_a_coordinator_whose_clock_stepped_back_is_followed_again_within_one_validity() -> None:
    lk = link()
    assert lk.receive_limits(0.0, limits(5000.0))
    for t in range(5, 60, 5):  # a restarted coordinator on a host whose clock is behind
        assert not lk.receive_limits(float(t), limits(1000.0 + t))
    assert lk.receive_limits(60.0, limits(1060.0))


def test_a_limits_message_larger_than_the_ports_need_is_refused_before_parsing() -> None:
    lk = link()
    assert not lk.receive_limits(0.0, b"{" + b" " * 10_000 + b"}")
    assert lk.rejected == {"size": 1}


def test_with_a_key_unsigned_limits_are_refused_and_do_not_use_the_flood_allowance() -> None:
    from firmware.link.auth import Keyring

    ring = Keyring((bytes(range(32)),))
    lk = link(keyring=ring, flood_rate=20.0, flood_burst=50.0)
    for k in range(1000):  # forgeries, as fast as they come
        assert not lk.receive_limits(5.0, limits(1.0 + 0.001 * k))
    assert lk.rejected == {"unsigned": 1000}
    assert lk.receive_limits(5.0, ring.seal(limits(3.0)))  # the real coordinator gets through
    # Telemetry goes out signed.
    snapshot = Snapshot(t=5.0, ports=(), loads={}, limits={}, inhibit=None)
    assert json.loads(ring.open(lk.telemetry(5.0, snapshot)))["station"] == "st1"


def test_two_remote_sources_at_once_the_lower_cap_wins() -> None:
    """A second source of remote limits (OCPP's profiles, say) beside the coordinator: each
    port gets the lowest cap any source puts on it, and the controller shares only while every
    source has its own limits in force."""
    coordinator, other = link(), StationLink("hq", "st1", PORTS, fallback_a=FALLBACK)
    ctl = RemoteLimitedController(Controller(LimitTree.from_spec(JUMPER)), coordinator, other)
    coordinator.receive_limits(0.0, limits(1.0, {"st1.1": 20.0, "st1.2": 10.0}))
    other.receive_limits(0.0, limits(1.0, {"st1.1": 12.0, "st1.2": 16.0}))
    offers = ctl.update(0.0, CHARGING).offers
    assert offers == {"st1.1": 12.0, "st1.2": 10.0}
    assert ctl.controller.tree.port_caps() == {"st1.1": 12.0, "st1.2": 10.0}
    # The telemetry of each reports the caps the tick applied: the lower ones.
    assert other.in_force(0.0) == {"st1.1": 12.0, "st1.2": 16.0}
    assert coordinator.up(0.0) and other.up(0.0)
    # One source gone: its fallback transition applies, and the other's caps still bind.
    offers = ctl.update(40.0, CHARGING).offers
    assert not coordinator.up(40.0) and not other.up(40.0)
    assert all(a <= 8.0 for a in offers.values())


def test_a_port_held_by_the_coordinator_is_limited_by_coordinator_not_port() -> None:
    """The live table and the logs say why a port gets less than it could: a remote cap under
    the port's own rating is the coordinator's doing (issue: never "port" then)."""
    ctl, lk = linked()
    lk.receive_limits(0.0, limits(1.0, {"st1.1": 10.0, "st1.2": 20.0}))
    decision = ctl.update(0.0, CHARGING)
    assert decision.offers["st1.1"] == 10.0
    assert decision.binding["st1.1"] == "coordinator"
    # The feed's 32 A binds st1.2 (22 A left, but its remote cap is 20 A: the coordinator).
    assert decision.binding["st1.2"] == "coordinator"
    # Under the minimum a remote cap is no current at all: still the coordinator's doing.
    lk.receive_limits(1.0, limits(2.0, {"st1.1": 0.0, "st1.2": 32.0}))
    decision = ctl.update(1.0 + 6.0, CHARGING)
    assert decision.offers["st1.1"] == 0.0 and decision.binding["st1.1"] == "coordinator"
    # A cap at or above the port's own rating leaves the local reason: the feed binds.
    lk.receive_limits(8.0, limits(9.0, {"st1.1": 32.0, "st1.2": 32.0}))
    for t in (8.0, 14.0, 20.0):  # the raise of st1.1 waits for st1.2's decrease (sequencing)
        decision = ctl.update(t, CHARGING)
    assert set(decision.binding.values()) == {"st1"}


def test_sharing_and_fallback_are_logged_once_each_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ampshare.link")
    ctl, lk = linked()
    for t in (0.0, 0.5):
        ctl.update(t, CHARGING)
    lk.receive_limits(1.0, limits(1.0, {"st1.1": 16.0, "st1.2": 16.0}))
    for t in (1.0, 2.0, 3.0):
        ctl.update(t, CHARGING)
    for t in (31.0, 32.0):  # valid 30 s from receipt: expired
        ctl.update(t, CHARGING)
    lk.receive_limits(40.0, limits(40.0, {"st1.1": 16.0, "st1.2": 16.0}))
    ctl.update(40.0, CHARGING)
    ctl.update(41.0, CHARGING, link_up=False)
    ctl.update(42.0, CHARGING, link_up=False)
    said = [r.getMessage() for r in caplog.records if r.name == "ampshare.link"]
    assert said == [
        "station st1: fallback until the coordinator's first limits arrive (each port at its "
        "fallback level)",
        "station st1: sharing: the coordinator's limits are in force (valid 30 s)",
        "station st1: fallback: the coordinator's last limits expired, 30 s after they arrived, "
        "with none since (ports above their fallback level come down now, the others may rise "
        "17 s later)",
        "station st1: sharing: the coordinator's limits are in force (valid 30 s)",
        "station st1: fallback: the link to the broker is down (ports above their fallback "
        "level come down now, the others may rise 17 s later)",
    ]
