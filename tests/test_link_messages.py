"""The link's schema-1 messages: round trips, and every kind of bad payload refused by reason."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.link.messages import (
    MAX_PAYLOAD_BYTES,
    Limits,
    MessageError,
    PortTelemetry,
    Telemetry,
    decode_limits,
    decode_telemetry,
    encode_limits,
    encode_telemetry,
)

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12)
amps = st.floats(min_value=0.0, max_value=80.0).map(lambda a: round(a, 3))
times = st.floats(min_value=0.0, max_value=4e9).map(lambda t: round(t, 3))


@st.composite
def port_telemetry(draw: st.DrawFn) -> PortTelemetry:
    return PortTelemetry(
        mode=draw(st.sampled_from(["A", "B1", "B2", "C1", "C2", "F"])),
        pilot=draw(st.sampled_from([None, "A", "B", "C"])),
        offered_a=draw(amps),
        drawn_a=draw(st.none() | amps),
        energy_wh=draw(st.none() | amps),
        connected=draw(st.booleans()),
        requesting=draw(st.booleans()),
        session_start=draw(st.none() | times),
        fault=draw(st.none() | st.sampled_from(["gfci", "weld"])),
        limit_a=draw(st.none() | amps),
    )


@given(
    station=ids,
    seq=st.integers(min_value=0, max_value=2**40),
    ts=times,
    status=st.sampled_from(["sharing", "fallback", "inhibited", "offline"]),
    ports=st.dictionaries(ids, port_telemetry(), max_size=4),
    limits_ts=st.none() | times,
)
def test_telemetry_round_trips(
    station: str,
    seq: int,
    ts: float,
    status: str,
    ports: dict[str, PortTelemetry],
    limits_ts: float | None,
) -> None:
    msg = Telemetry(station, seq, ts, status, ports, limits_ts=limits_ts)
    assert decode_telemetry(encode_telemetry(msg)) == msg


@given(
    site=ids,
    station=ids,
    seq=st.integers(min_value=0, max_value=2**40),
    ts=times,
    valid_s=st.floats(min_value=0.001, max_value=3600.0),
    ports=st.dictionaries(ids, amps, max_size=4),
)
def test_limits_round_trip(
    site: str, station: str, seq: int, ts: float, valid_s: float, ports: dict[str, float]
) -> None:
    msg = Limits(site, station, seq, ts, valid_s, ports)
    assert decode_limits(encode_limits(msg)) == msg


def _limits_doc(**changes: object) -> bytes:
    doc: dict[str, object] = {
        "v": 1,
        "site": "hq",
        "station": "st1",
        "seq": 3,
        "ts": 100.0,
        "valid_s": 30,
        "ports": {"st1.1": 16},
    }
    doc.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "json"),
        (b"\xff\xfe", "json"),
        (b"[1, 2]", "schema"),
        (_limits_doc(v=2), "version"),
        (_limits_doc(v="1"), "version"),
        (_limits_doc(v=True), "version"),
        (_limits_doc(ports={"st1.1": -1}), "value"),
        (_limits_doc(ports={"st1.1": 10_000}), "value"),
        (_limits_doc(ports={"st1.1": "16"}), "value"),
        (_limits_doc(ports={"st1.1": True}), "value"),
        (_limits_doc(ports={"st1/+": 16}), "schema"),
        (_limits_doc(valid_s=0), "value"),
        (_limits_doc(seq=-1), "value"),
        (_limits_doc(seq=1.5), "value"),
        (_limits_doc(extra=1), "schema"),
        (_limits_doc(station=""), "schema"),
        (
            b'{"v":1,"site":"hq","station":"st1","seq":1,"ts":1,"valid_s":5,"ports":{"a":NaN}}',
            "value",
        ),
        (
            b'{"v":1,"site":"hq","station":"st1","seq":1,"ts":Infinity,"valid_s":5,"ports":{}}',
            "value",
        ),
        (b" " * (MAX_PAYLOAD_BYTES + 1), "size"),
    ],
)
def test_bad_limit_payloads_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as info:
        decode_limits(payload)
    assert info.value.reason == reason


def test_deep_nesting_under_the_size_cap_is_a_json_error_not_a_crash() -> None:
    with pytest.raises(MessageError) as info:
        decode_limits(b"[" * 50_000 + b"]" * 50_000)
    assert info.value.reason in ("json", "schema")


def test_telemetry_with_a_bad_status_or_port_is_refused() -> None:
    good = Telemetry(
        "st1", 1, 2.0, "sharing", {"1": PortTelemetry("C2", "C", 16, 15.9, 1, True, True, 0)}
    )
    doc = json.loads(encode_telemetry(good))
    for change, reason in (
        ({"status": "party"}, "schema"),
        ({"ports": {"1": {**doc["ports"]["1"], "drawn_a": math.inf}}}, "value"),
        ({"ports": {"1": {**doc["ports"]["1"], "connected": 1}}}, "schema"),
        ({"ports": {"1": {k: v for k, v in doc["ports"]["1"].items() if k != "mode"}}}, "schema"),
    ):
        bad = json.dumps({**doc, **change}).encode()
        with pytest.raises(MessageError) as info:
            decode_telemetry(bad)
        assert info.value.reason == reason, change


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_message_errors(data: bytes) -> None:
    for decode in (decode_limits, decode_telemetry):
        with contextlib.suppress(MessageError):
            decode(data)
