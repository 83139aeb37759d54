"""Durations as people write them (hal.durations): the forms Go and systemd accept, the
refusal of negative ones, and a round trip with the formatter."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal.durations import format_duration, parse_duration
from hal.modbus.url import parse_url as parse_meter_url
from hal.registry import BackendError
from hal.serial.settings import parse_url


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1h30m", 5400.0),
        ("2h 15m", 8100.0),
        ("1d", 86400.0),
        ("90s", 90.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        ("1m30.5s", 90.5),
        ("2 days", 172800.0),
        ("1 hour 5 minutes", 3900.0),
        ("1w", 604800.0),
        ("45", 45.0),
        (45, 45.0),
        (0.25, 0.25),
    ],
)
def test_forms_people_write(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["-5s", "-1h30m", " -2", -3, -0.5])
def test_negative_says_negative(text: object) -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text", ["", "  ", "soon", "1h30", "h", "1.2.3s", "1hh", "5 fortnights", "1M", "3H"]
)
def test_not_a_duration_shows_examples(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a duration \(e\.g\. 90s"):
        parse_duration(text)


def test_nan_is_not_a_number_rather_than_negative() -> None:
    with pytest.raises(ValueError, match="is not a number"):
        parse_duration(math.nan)


@pytest.mark.parametrize("value", [math.inf, "1e400s", 10**400])
def test_infinite_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="finite"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.25, "250ms"), (90.5, "1m30.5s"), (5400, "1h30m"), (183600, "2d3h"), (60, "1m")],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=400 * 86_400_000))
def test_round_trip_to_the_millisecond(ms: int) -> None:
    text = format_duration(ms / 1000)
    assert round(parse_duration(text) * 1000) == ms
    assert " " not in text


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(["ms", "s", "m", "h", "d"])),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from(["", " "]),
)
def test_compound_is_the_sum_of_its_parts(parts: list[tuple[int, str]], sep: str) -> None:
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    text = sep.join(f"{n}{unit}" for n, unit in parts)
    assert parse_duration(text) == pytest.approx(sum(n * scale[u] for n, u in parts))


def test_backend_urls_read_the_same_durations() -> None:
    assert parse_url("serial:///dev/ttyAMA0?lost=1s500ms").lost_s == pytest.approx(1.5)
    meter = parse_meter_url("modbus-tcp://127.0.0.1:5020?unit=1&model=sdm630&stale=1m")
    assert meter.stale_s == 60.0
    with pytest.raises(BackendError, match="negative"):
        parse_url("serial:///dev/ttyAMA0?lost=-1s")
    with pytest.raises(BackendError, match="> 0"):
        parse_meter_url("modbus-tcp://127.0.0.1:5020?unit=1&model=sdm630&timeout=0s")


def test_command_line_reads_compound_and_refuses_negative() -> None:
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "sim",
            "configs/scenarios/jumper-two-cars.yaml",
            "--for",
            "0h 1m",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "sim",
            "configs/scenarios/jumper-two-cars.yaml",
            "--for=-1h",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "negative" in bad.stderr
