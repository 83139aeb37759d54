"""Tag readers (hal.rfid): the RDM6300's frame parser (exactly the well-formed frames of any
byte stream, however it is cut), the debounce rule, the reader service over a real
pseudo-terminal (pyserial and the kernel's tty layer; the test writes the module's side), and
the simulated reader; and how the registry opens them."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import operator
import os
import re
import subprocess
import sys
import time
import tty
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal import registry
from hal.interfaces import Service
from hal.registry import BackendError
from hal.rfid import HOLD_OFF_S, Debouncer, TagRead, TagReader, check_tag
from hal.rfid.rdm6300 import (
    DEFAULT_BAUD,
    FRAME_LEN,
    MAX_PENDING_READS,
    FrameParser,
    Rdm6300Reader,
    ReaderSettings,
    encode_frame,
    parse_url,
)
from hal.rfid.sim import SimTagReader

LOGGER = "ampshare.rfid"
TAG = "0A00B1C2D3"
OTHER = "62E3086CED"


# --- helpers ----------------------------------------------------------------------------


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Until ``predicate()`` or ``timeout`` wall seconds (then fail)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the time limit")
        await asyncio.sleep(0.005)


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())  # type: ignore[arg-type]


class FakeClock:
    """The station clock, set by the test: stamps (and so the debounce) never depend on how
    fast the machine is."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Module:
    """The RDM6300's side of the UART: a pseudo-terminal whose slave the reader opens (by its
    path) and whose master the test writes the module's bytes to."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # binary frames: no line editing before pyserial opens it
        self.path = os.ttyname(self._slave)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def unplug(self) -> None:
        """The device disappears: the reader's end hangs up."""
        os.close(self.master)
        os.close(self._slave)


def frame_with_checksum(tag: str, checksum: int) -> bytes:
    return b"\x02" + tag.encode() + b"%02X" % checksum + b"\x03"


def xor(tag: str) -> int:
    return functools.reduce(operator.xor, bytes.fromhex(tag), 0)


# The specification of the parser, written independently of it: every substring of the stream
# laid out as a frame (0x02, 12 hex characters, 0x03) whose checksum matches. Such substrings
# cannot overlap (none holds an 0x02 after its first byte), so finditer sees them all.
_LAYOUT = re.compile(rb"\x02([0-9A-Fa-f]{10})([0-9A-Fa-f]{2})\x03")


def frames_in(stream: bytes) -> list[str]:
    return [
        m.group(1).decode().upper()
        for m in _LAYOUT.finditer(stream)
        if xor(m.group(1).decode()) == int(m.group(2), 16)
    ]


def feed_in_chunks(parser: FrameParser, stream: bytes, cuts: list[int]) -> list[str]:
    """Feed ``stream`` cut at ``cuts`` (any positions), checking the buffer bound after each."""
    out: list[str] = []
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    for start, end in itertools.pairwise(bounds):
        out += parser.feed(stream[start:end])
        assert parser.pending < FRAME_LEN
    return out


# --- the frame ----------------------------------------------------------------------------


def test_the_datasheet_example_frame_is_encoded_and_read() -> None:
    # RDM630/RDM6300 datasheet: card 62E3086CED, checksum 62^E3^08^6C^ED = 08.
    frame = encode_frame(OTHER)
    assert frame == b"\x0262E3086CED08\x03"
    parser = FrameParser()
    assert parser.feed(frame) == [OTHER]
    assert parser.stats.frames == 1 and parser.stats.skipped_bytes == 0


def test_a_frame_cut_anywhere_is_read_once_it_is_complete() -> None:
    frame = encode_frame(TAG)
    for cut in range(1, FRAME_LEN):
        parser = FrameParser()
        assert parser.feed(frame[:cut]) == []
        assert parser.pending == cut
        assert parser.feed(frame[cut:]) == [TAG]
        assert parser.pending == 0


def test_lower_case_hex_is_read_as_upper_case() -> None:
    assert FrameParser().feed(frame_with_checksum("0a00b1c2d3", xor(TAG))) == [TAG]


_FRAME = encode_frame(TAG)


@pytest.mark.parametrize(
    ("damaged", "counter", "count"),
    [
        (frame_with_checksum(TAG, xor(TAG) ^ 0x01), "bad_checksum", 1),
        (_FRAME[:9], "malformed", 1),  # truncated: the next frame's 0x02 ends it
        (_FRAME[:5] + _FRAME[6:], "malformed", 1),  # one byte lost: 0x03 comes too early
        (_FRAME[:5] + b"G" + _FRAME[6:], "malformed", 1),  # not hex
        (_FRAME[:-1] + b"\x04", "malformed", 1),  # no 0x03
        # A stray 0x02 cuts the frame short and starts a candidate that fails in turn.
        (_FRAME[:7] + b"\x02" + _FRAME[8:], "malformed", 2),
    ],
    ids=["bad-checksum", "truncated", "lost-byte", "non-hex", "no-etx", "stx-inside"],
)
def test_a_damaged_frame_is_refused_without_losing_the_next_good_one(
    damaged: bytes, counter: str, count: int
) -> None:
    parser = FrameParser()
    assert parser.feed(damaged + encode_frame(OTHER)) == [OTHER]
    assert getattr(parser.stats, counter) == count
    assert parser.stats.frames == 1
    assert parser.stats.skipped_bytes == len(damaged)


def test_noise_between_frames_is_skipped_and_counted() -> None:
    noise = b"\x00\xff\x03ABC\r\n"
    parser = FrameParser()
    assert parser.feed(noise + encode_frame(TAG) + noise + encode_frame(OTHER) + noise) == [
        TAG,
        OTHER,
    ]
    assert parser.stats.skipped_bytes == 3 * len(noise)


def test_only_a_ten_digit_tag_can_be_encoded() -> None:
    for bad in ("0A00B1C2D", "0A00B1C2D3E4", "0A00B1C2DZ"):
        with pytest.raises(ValueError):
            encode_frame(bad)


# --- the parser against any input (hypothesis) ------------------------------------------------

_cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=20)
_tags = st.binary(min_size=5, max_size=5).map(lambda b: b.hex().upper())


@st.composite
def _damaged(draw: st.DrawFn) -> bytes:
    """A good frame with one byte changed, dropped or inserted somewhere."""
    frame = bytearray(encode_frame(draw(_tags)))
    i = draw(st.integers(min_value=0, max_value=FRAME_LEN - 1))
    how = draw(st.sampled_from(["change", "drop", "insert"]))
    if how == "change":
        frame[i] = draw(st.integers(min_value=0, max_value=255))
    elif how == "drop":
        del frame[i]
    else:
        frame.insert(i, draw(st.integers(min_value=0, max_value=255)))
    return bytes(frame)


@settings(max_examples=400, deadline=None)
@given(stream=st.binary(max_size=400), cuts=_cuts)
def test_arbitrary_bytes_never_raise_and_give_exactly_the_frames_in_them(
    stream: bytes, cuts: list[int]
) -> None:
    assert feed_in_chunks(FrameParser(), stream, cuts) == frames_in(stream)


@settings(max_examples=400, deadline=None)
@given(
    segments=st.lists(
        st.one_of(
            st.tuples(st.just("good"), _tags.map(encode_frame)),
            st.tuples(st.just("junk"), st.binary(max_size=30)),
            st.tuples(st.just("junk"), _damaged()),
            st.tuples(st.just("junk"), st.binary(max_size=FRAME_LEN).map(lambda b: b"\x02" + b)),
        ),
        max_size=12,
    ),
    cuts=_cuts,
)
def test_every_good_frame_is_found_whatever_surrounds_it(
    segments: list[tuple[str, bytes]], cuts: list[int]
) -> None:
    """The guarantee a station relies on: a well-formed frame on the line is read whatever came
    before it (noise, half a frame, a frame with a bad checksum, stray 0x02 bytes) and whatever
    comes after, however the reads cut the stream. Junk may itself hold a well-formed frame (it
    is then read too, and is exactly what the specification says: ``frames_in``)."""
    stream = b"".join(data for _, data in segments)
    out = feed_in_chunks(FrameParser(), stream, cuts)
    assert out == frames_in(stream)
    good = iter(out)
    for kind, data in segments:
        if kind == "good":
            tag = data[1:11].decode()
            assert tag in good  # found, after the good frames before it (a subsequence)


@settings(max_examples=200, deadline=None)
@given(
    segments=st.lists(
        st.one_of(
            st.tuples(st.just("good"), _tags.map(encode_frame)),
            st.tuples(
                st.just("junk"), st.binary(max_size=30).map(lambda b: b.replace(b"\x02", b""))
            ),
        ),
        max_size=12,
    ),
    cuts=_cuts,
)
def test_with_no_0x02_in_the_junk_exactly_the_good_frames_are_read(
    segments: list[tuple[str, bytes]], cuts: list[int]
) -> None:
    """Without a start byte, junk can neither hide a good frame nor forge one."""
    stream = b"".join(data for _, data in segments)
    expected = [data[1:11].decode() for kind, data in segments if kind == "good"]
    assert feed_in_chunks(FrameParser(), stream, cuts) == expected


# --- debounce -------------------------------------------------------------------------------


def test_a_card_held_on_the_reader_reads_once() -> None:
    debouncer = Debouncer()
    new = [debouncer.seen(TAG, i * 0.1) for i in range(600)]  # a minute of repeats
    assert new == [True] + [False] * 599


def test_the_same_card_reads_again_only_after_the_hold_off_without_frames() -> None:
    debouncer = Debouncer(hold_off_s=1.0)
    assert debouncer.seen(TAG, 10.0)
    assert not debouncer.seen(TAG, 10.75)  # frames lost, the card still there
    # The hold-off counts from the last frame, not from the first read.
    assert not debouncer.seen(TAG, 11.5)
    assert debouncer.seen(TAG, 12.5)  # away for the whole hold-off: presented again
    assert not debouncer.seen(TAG, 12.5)


def test_the_default_hold_off_outlasts_a_few_lost_repeats() -> None:
    debouncer = Debouncer()
    assert debouncer.hold_off_s == HOLD_OFF_S >= 0.5  # several ~100 ms repeats may be lost
    assert debouncer.seen(TAG, 0.0)
    assert not debouncer.seen(TAG, 0.5)


def test_tags_are_debounced_each_on_its_own() -> None:
    debouncer = Debouncer()
    assert debouncer.seen(TAG, 0.0)
    assert debouncer.seen(OTHER, 0.1)
    assert not debouncer.seen(TAG, 0.2)
    assert not debouncer.seen(OTHER, 0.3)


def test_tag_ids_are_upper_case_hex() -> None:
    assert check_tag("0a00b1c2d3") == TAG
    for bad in ("", "0A00 B1C2", "XYZ", "0" * 21):
        with pytest.raises(ValueError):
            check_tag(bad)


# --- URLs and the registry ------------------------------------------------------------------


def test_the_rdm6300_url() -> None:
    assert parse_url("rdm6300:///dev/ttyS0") == ReaderSettings("/dev/ttyS0", DEFAULT_BAUD, 1.0)
    assert parse_url("rdm6300:///dev/ttyAMA1?baud=19200&reopen=250ms") == ReaderSettings(
        "/dev/ttyAMA1", 19200, 0.25
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("rdm6300://ttyS0", "expected rdm6300:///path/to/device"),
        ("rdm6300://", "expected rdm6300:///path/to/device"),
        ("rdm6300:///dev/ttyS0?speed=9600", "unknown parameter 'speed'"),
        ("rdm6300:///dev/ttyS0?baud=fast", "not a positive integer"),
        ("rdm6300:///dev/ttyS0?baud=0", "not a positive integer"),
        ("rdm6300:///dev/ttyS0?baud=9600&baud=19200", "more than once"),
        ("rdm6300:///dev/ttyS0?reopen=1ms", "within 10ms..60s"),
        ("rdm6300:///dev/ttyS0?reopen=soon", "reopen: 'soon' is not a duration"),
    ],
)
def test_bad_rdm6300_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(BackendError, match=re.escape(message)):
        registry.open_tag_reader(url)


def test_the_registry_opens_both_readers() -> None:
    real = registry.open_tag_reader("rdm6300:///dev/ttyS0?baud=9600")
    assert isinstance(real, Rdm6300Reader)
    assert isinstance(real, TagReader) and isinstance(real, Service)
    sim = registry.open_tag_reader("sim://")
    assert isinstance(sim, SimTagReader)
    assert isinstance(sim, TagReader) and not isinstance(sim, Service)
    with pytest.raises(BackendError, match=r"no tag reader backend for pn532://.*rdm6300://"):
        registry.open_tag_reader("pn532:///dev/i2c-1")
    with pytest.raises(BackendError, match="plain sim://"):
        registry.open_tag_reader("sim://?tags=1")


def test_importing_the_registry_loads_no_reader_backend() -> None:
    code = (
        "import sys, hal.registry; "
        "print(sorted({'hal.rfid.rdm6300', 'hal.rfid.sim', 'serial'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the simulated reader -------------------------------------------------------------------


def test_the_simulated_reader_reads_what_it_is_told_in_order() -> None:
    clock = FakeClock()
    reader = registry.open_tag_reader("sim://", clock=clock)
    assert isinstance(reader, SimTagReader)
    assert reader.take() == []
    clock.t = 5.0
    reader.present("0a00b1c2d3")
    reader.present(OTHER, at=7.5)
    reader.present(TAG, at=8.0)  # no debounce: each present is a presentation
    assert reader.take() == [TagRead(TAG, 5.0), TagRead(OTHER, 7.5), TagRead(TAG, 8.0)]
    assert reader.take() == []
    with pytest.raises(ValueError, match="not a tag id"):
        reader.present("alice")


# --- the RDM6300 reader over a pseudo-terminal -------------------------------------------------


def test_one_read_per_presentation_stamped_with_the_station_clock() -> None:
    async def main() -> None:
        module, clock = Module(), FakeClock()
        reader = registry.open_tag_reader(f"rdm6300://{module.path}", clock=clock)
        assert isinstance(reader, Rdm6300Reader)
        await reader.start()
        try:
            assert reader.is_open
            clock.t = 3.0
            module.send(encode_frame(TAG))
            await wait_for(lambda: reader.parser.stats.frames == 1)
            clock.t = 3.2
            module.send(encode_frame(OTHER))
            await wait_for(lambda: reader.parser.stats.frames == 2)
            assert reader.take() == [TagRead(TAG, 3.0), TagRead(OTHER, 3.2)]
            assert reader.take() == []
        finally:
            await reader.stop()
            module.unplug()

    run(main)


def test_corrupt_frames_are_refused_and_the_next_good_frame_is_read() -> None:
    async def main() -> None:
        module, clock = Module(), FakeClock()
        reader = Rdm6300Reader(ReaderSettings(module.path), clock=clock)
        await reader.start()
        try:
            frame = encode_frame(TAG)
            module.send(frame_with_checksum(OTHER, xor(OTHER) ^ 0x40))  # bad checksum
            module.send(b"\xff\x00noise\x03")
            module.send(frame[:8])  # truncated: the module left the field mid-frame
            module.send(frame[:4] + frame[5:])  # a byte lost
            module.send(frame)
            await wait_for(lambda: reader.parser.stats.frames == 1)
            assert reader.take() == [TagRead(TAG, 0.0)]
            assert reader.parser.stats.bad_checksum == 1
            assert reader.parser.stats.malformed == 2
        finally:
            await reader.stop()
            module.unplug()

    run(main)


def test_a_held_card_reads_once_and_again_after_the_hold_off() -> None:
    async def main() -> None:
        module, clock = Module(), FakeClock()
        reader = Rdm6300Reader(ReaderSettings(module.path), clock=clock)
        await reader.start()
        frames = 0

        async def frame_at(t: float) -> None:
            nonlocal frames
            clock.t = t
            module.send(encode_frame(TAG))
            frames += 1
            await wait_for(lambda: reader.parser.stats.frames == frames)

        try:
            for i in range(20):  # held for 2 s, a frame every 100 ms
                await frame_at(i * 0.1)
            assert reader.take() == [TagRead(TAG, 0.0)]
            await frame_at(1.9 + HOLD_OFF_S * 0.9)  # a gap shorter than the hold-off
            assert reader.take() == []
            last = clock.t
            await frame_at(last + 1.5 * HOLD_OFF_S)  # away for the hold-off: presented again
            assert reader.take() == [TagRead(TAG, last + 1.5 * HOLD_OFF_S)]
        finally:
            await reader.stop()
            module.unplug()

    run(main)


def test_reads_nobody_takes_are_bounded_keeping_the_newest() -> None:
    async def main() -> None:
        module = Module()
        reader = Rdm6300Reader(ReaderSettings(module.path), clock=FakeClock())
        await reader.start()
        try:
            tags = [f"{i:010X}" for i in range(MAX_PENDING_READS + 8)]
            module.send(b"".join(encode_frame(t) for t in tags))
            await wait_for(lambda: reader.parser.stats.frames == len(tags))
            assert [r.tag for r in reader.take()] == tags[8:]
            assert reader.stats.dropped == 8
        finally:
            await reader.stop()
            module.unplug()

    run(main)


def test_stop_releases_the_device() -> None:
    async def main() -> None:
        module = Module()
        settings = ReaderSettings(module.path)
        first = Rdm6300Reader(settings)
        await first.start()
        try:
            second = Rdm6300Reader(settings)
            await second.start()
            assert not second.is_open  # pyserial's exclusive lock: one reader per device
            await second.stop()
            await first.stop()  # stopping twice (again below) is harmless
            third = Rdm6300Reader(settings, clock=FakeClock())
            await third.start()
            assert third.is_open
            module.send(encode_frame(TAG))
            await wait_for(lambda: third.stats.reads == 1)
            await third.stop()
        finally:
            await first.stop()
            module.unplug()

    run(main)


def test_a_missing_or_vanished_device_is_logged_once_and_reopened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The device by a stable name (a udev symlink, /dev/serial/by-id/...): absent at start,
    plugged in, unplugged, plugged in again on another pty behind the same name."""
    link = tmp_path / "rfid"

    async def main() -> None:
        clock = FakeClock()
        reader = registry.open_tag_reader(f"rdm6300://{link}?reopen=10ms", clock=clock)
        assert isinstance(reader, Rdm6300Reader)
        await reader.start()  # nothing there yet: must not raise nor wait
        module: Module | None = None
        try:
            await wait_for(lambda: reader.stats.open_failures >= 3)
            module = Module()
            link.symlink_to(module.path)
            await wait_for(lambda: reader.stats.opened == 1)
            module.send(encode_frame(TAG))
            await wait_for(lambda: reader.stats.reads == 1)

            failures = reader.stats.open_failures
            module.unplug()
            link.unlink()
            await wait_for(lambda: reader.stats.device_errors == 1)
            assert not reader.is_open
            await wait_for(lambda: reader.stats.open_failures >= failures + 3)

            module = Module()
            link.symlink_to(module.path)
            await wait_for(lambda: reader.stats.opened == 2)
            clock.t = 2 * HOLD_OFF_S  # the card was away while the adapter was
            module.send(encode_frame(TAG))
            await wait_for(lambda: reader.stats.reads == 2)
            assert reader.take() == [TagRead(TAG, 0.0), TagRead(TAG, 2 * HOLD_OFF_S)]
        finally:
            await reader.stop()
            if module is not None:
                module.unplug()

    with caplog.at_level(logging.INFO, logger=LOGGER):
        run(main)
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    warnings = [m for level, m in records if level == logging.WARNING]
    assert len(warnings) == 2, records  # one per episode, not one per attempt
    assert "cannot open" in warnings[0] and "hung up" in warnings[1]
    assert [m for level, m in records if level == logging.INFO] == [
        f"RFID reader {link}: open again"
    ] * 2
