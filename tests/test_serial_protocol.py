"""The pilot board's frames: round trips, CRC, bad input and resynchronisation of the parser."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal.serial.protocol import (
    MAX_BODY,
    MAX_FRAME,
    MAX_PORTS,
    START,
    Ack,
    Event,
    FrameParser,
    Heartbeat,
    Message,
    PortStatus,
    ProtocolError,
    PwmOff,
    ReadStatus,
    ResetGfci,
    SetContactor,
    SetPwm,
    StateF,
    Status,
    crc16,
    decode_frame,
    encode,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
i16 = st.integers(-0x8000, 0x7FFF)
u32 = st.integers(0, 0xFFFFFFFF)

port_status = st.builds(
    PortStatus, i16, i16, u8, u16, st.booleans(), st.booleans(), st.booleans(), st.booleans(), u16
)


def _status(cls: type[Status]) -> st.SearchStrategy[Status]:
    return st.builds(
        cls,
        u32,
        st.booleans(),
        st.booleans(),
        i16,
        u16,
        u16,
        st.lists(port_status, max_size=MAX_PORTS).map(tuple),
    )


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(SetPwm, u8, u16),
    st.builds(PwmOff, u8),
    st.builds(StateF, u8),
    st.builds(SetContactor, u8, st.booleans()),
    st.builds(Heartbeat, u16),
    st.just(ReadStatus()),
    st.builds(ResetGfci, u8),
    st.builds(Ack, u8),
    _status(Status),
    _status(Event),
)


def _raw_frame(body: bytes) -> bytes:
    """A frame with a correct CRC around any body (to make CRC-valid nonsense)."""
    head = bytes([len(body)]) + body
    return bytes([START]) + head + crc16(head).to_bytes(2, "big")


def _status_msg(ports: int = 2) -> Status:
    port = PortStatus(900, -1200, 1, 500, True, True, False, True, 1600)
    return Status(123456, True, False, 351, 500, 0, (port,) * ports)


# --- round trips ---------------------------------------------------------------------


def test_crc_is_ccitt_false_with_its_check_value() -> None:
    # CRC-16/CCITT-FALSE (IBM-3740) catalogue check value for "123456789".
    assert crc16(b"123456789") == 0x29B1


@given(messages, u8)
def test_build_then_parse_is_the_identity(msg: Message, seq: int) -> None:
    frame = encode(msg, seq)
    assert len(frame) <= MAX_FRAME
    got_seq, got = decode_frame(frame)
    assert (got_seq, got) == (seq, msg) and type(got) is type(msg)


@given(st.lists(st.tuples(messages, u8), max_size=8), st.data())
def test_a_stream_cut_anywhere_gives_every_frame_in_order(
    items: list[tuple[Message, int]], data: st.DataObject
) -> None:
    stream = b"".join(encode(m, s) for m, s in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    parser = FrameParser()
    out = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += parser.feed(stream[a:b])
    assert out == [(s, m) for m, s in items]
    assert parser.stats.errors == 0 and parser.pending == 0


def test_a_full_status_is_the_longest_frame() -> None:
    frame = encode(_status_msg(MAX_PORTS), 1)
    assert len(frame) == MAX_FRAME and frame[1] == MAX_BODY
    assert len(encode(_status_msg(2), 1)) == 38  # what a CT4000 board sends


def test_encode_refuses_values_out_of_range() -> None:
    with pytest.raises(ValueError):
        encode(SetPwm(0, 70000), 1)
    with pytest.raises(ValueError):
        encode(PwmOff(256), 1)
    with pytest.raises(ValueError):
        encode(ReadStatus(), 256)
    with pytest.raises(ValueError, match="at most 8 ports"):
        encode(_status_msg(MAX_PORTS + 1), 1)


# --- fuzz and resynchronisation ------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=600), st.data())
def test_arbitrary_bytes_never_raise(garbage: bytes, data: st.DataObject) -> None:
    parser = FrameParser()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(garbage)), max_size=6)))
    for a, b in zip([0, *cuts], [*cuts, len(garbage)], strict=True):
        parser.feed(garbage[a:b])
    parser.expire()
    assert parser.pending == 0


@settings(max_examples=300)
@given(st.binary(max_size=300), messages, u8)
def test_a_frame_after_garbage_is_recovered(garbage: bytes, msg: Message, seq: int) -> None:
    parser = FrameParser()
    parser.feed(garbage)
    out = parser.feed(encode(msg, seq))
    # The garbage may end in what looks like the start of a long frame; the line then goes
    # idle (the reader calls expire()) and the scan resumes inside it.
    out += parser.expire()
    assert out and out[-1] == (seq, msg)


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=200), messages, u8)
def test_resync_needs_no_idle_when_another_frame_follows(
    garbage: bytes, msg: Message, seq: int
) -> None:
    # Without an idle gap, the longest frame after the one we want is always enough to
    # complete whatever the garbage started, so ours is delivered within that one frame.
    parser = FrameParser()
    out = parser.feed(garbage + encode(msg, seq) + encode(_status_msg(MAX_PORTS), 7))
    assert (seq, msg) in out


def test_every_single_bit_flip_is_caught() -> None:
    frames = [encode(m, 9) for m in (SetContactor(1, True), Heartbeat(500), _status_msg())]
    for frame in frames:
        for bit in range(8, 8 * len(frame)):  # every bit but the start byte's
            bad = bytearray(frame)
            bad[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(ProtocolError):
                decode_frame(bytes(bad))
            parser = FrameParser()
            out = parser.feed(bytes(bad)) + parser.expire()
            assert out == [], f"bit {bit} of {frame.hex()}"
            assert parser.stats.errors >= 1


def test_crc_errors_are_counted_and_the_next_frame_taken() -> None:
    good = encode(SetPwm(1, 266), 4)
    bad = bytearray(encode(SetPwm(0, 500), 3))
    bad[5] ^= 0x10  # in the duty
    parser = FrameParser()
    assert parser.feed(bytes(bad) + good) == [(4, SetPwm(1, 266))]
    assert parser.stats.crc == 1 and parser.stats.frames == 1


def test_truncated_frame_waits_then_expires() -> None:
    frame = encode(_status_msg(), 5)
    parser = FrameParser()
    assert parser.feed(frame[:-3]) == []
    assert parser.pending == len(frame) - 3
    assert parser.expire() == []
    assert parser.stats.truncated == 1 and parser.pending == 0
    assert parser.feed(encode(Ack(0), 6)) == [(6, Ack(0))]
    with pytest.raises(ProtocolError) as exc:
        decode_frame(frame[:-3])
    assert exc.value.kind == "truncated"


def test_truncated_frame_followed_by_a_frame_resyncs_on_that_frame() -> None:
    parser = FrameParser()
    first = encode(SetContactor(0, False), 1)
    out = parser.feed(first[:4] + encode(_status_msg(), 2))
    assert out == [(2, _status_msg())]
    assert parser.stats.crc == 1


def test_length_byte_outside_every_message_is_refused_at_once() -> None:
    parser = FrameParser()
    ok = encode(Ack(0), 1)
    for length in (0, 1, MAX_BODY + 1, 255):
        assert parser.feed(bytes([START, length]) + ok) == [(1, Ack(0))]
    assert parser.stats.length == 4
    with pytest.raises(ProtocolError) as exc:
        decode_frame(bytes([START, 200]) + b"\0" * 202)
    assert exc.value.kind == "length"


def test_wrong_payload_length_with_a_valid_crc_is_skipped_whole() -> None:
    too_short = _raw_frame(bytes([1, 0x01, 0]))  # SET_PWM with one payload byte of three
    too_long = _raw_frame(bytes([2, 0x06, 0xAA]))  # READ_STATUS has no payload
    parser = FrameParser()
    assert parser.feed(too_short + too_long + encode(Ack(0), 3)) == [(3, Ack(0))]
    assert parser.stats.payload == 2 and parser.stats.crc == 0
    for frame in (too_short, too_long):
        with pytest.raises(ProtocolError) as exc:
            decode_frame(frame)
        assert exc.value.kind == "payload"


def test_unknown_type_with_a_valid_crc_is_skipped_whole() -> None:
    # A newer board's message: skipped whole, even though its payload holds a frame's bytes.
    inner = encode(SetContactor(0, True), 8)
    unknown = _raw_frame(bytes([7, 0x42]) + inner)
    parser = FrameParser()
    assert parser.feed(unknown + encode(Ack(0), 9)) == [(9, Ack(0))]
    assert parser.stats.unknown_type == 1
    with pytest.raises(ProtocolError) as exc:
        decode_frame(unknown)
    assert exc.value.kind == "unknown_type"


def test_sequence_numbers_are_carried_as_they_are() -> None:
    # Gaps are the reader's business (the backend counts missed events); the parser keeps seq.
    parser = FrameParser()
    event = Event(**_fields(_status_msg()))  # type: ignore[arg-type]
    frames = [encode(event, s) for s in (1, 2, 5)]
    assert [seq for seq, _ in parser.feed(b"".join(frames))] == [1, 2, 5]


def _fields(status: Status) -> dict[str, object]:
    return {f.name: getattr(status, f.name) for f in dataclasses.fields(status)}
