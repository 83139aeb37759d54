"""Time of use: the guide's office example at every boundary, the schedule syntax, refusals."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.schedule import (
    ScheduleEntry,
    ScheduleError,
    WeeklySchedule,
    parse_clock,
    parse_days,
)
from firmware.config import ConfigError, load_site, load_site_config

ROOT = Path(__file__).resolve().parent.parent
OFFICE = ROOT / "configs" / "sites" / "office-tou.yaml"
MONDAY = datetime(2026, 11, 23)  # a Monday
SECOND = timedelta(seconds=1)


def office() -> WeeklySchedule:
    return load_site_config(OFFICE).schedules["site"]


# The guide, "Time of Use (TOU) Power Sharing", office example.
WEEKDAY = [(0, 6, 40.0), (6, 12, 20.0), (12, 18, 0.0), (18, 24, 20.0)]


def test_the_office_example_at_every_boundary_of_the_week() -> None:
    schedule = office()
    assert schedule.unit == "kw"
    for day in range(7):
        midnight = MONDAY + timedelta(days=day)
        if day < 5:
            for start, end, kw in WEEKDAY:
                first = midnight + timedelta(hours=start)
                last = midnight + timedelta(hours=end) - SECOND
                assert schedule.value_at(first) == kw, (first, kw)
                assert schedule.value_at(last) == kw, (last, kw)
                assert schedule.value_at(first + timedelta(minutes=90)) == kw
        else:  # "Sat-Sun All day long: max 40 kW"
            for hour in (0, 6, 12, 18):
                assert schedule.value_at(midnight + timedelta(hours=hour)) == 40.0
            assert schedule.value_at(midnight + timedelta(days=1) - SECOND) == 40.0


def test_the_office_example_boundaries_in_order() -> None:
    schedule = office()
    expected = []
    for day in range(5):
        for hour in (6, 12, 18, 24):
            expected.append(MONDAY + timedelta(days=day, hours=hour))
    # Friday 24:00 is Saturday 00:00 (20 -> 40 kW); Sunday -> Monday 00:00 stays 40 kW: no
    # boundary; the next one is Monday 06:00.
    expected = [b for b in expected if b != MONDAY + timedelta(days=5)] + [
        MONDAY + timedelta(days=5),
        MONDAY + timedelta(days=7, hours=6),
    ]
    expected.sort()
    found = []
    at = MONDAY
    for _ in range(len(expected)):
        nxt = schedule.next_boundary(at)
        assert nxt is not None
        found.append(nxt)
        assert schedule.value_at(nxt) != schedule.value_at(nxt - SECOND)
        at = nxt
    assert found == expected
    # From within a period, and one second before a boundary.
    assert schedule.next_boundary(MONDAY + timedelta(hours=7)) == MONDAY + timedelta(hours=12)
    assert schedule.next_boundary(MONDAY + timedelta(hours=6) - SECOND) == MONDAY + timedelta(
        hours=6
    )


def test_the_shipped_site_parses_to_the_guide_numbers() -> None:
    cfg = load_site_config(OFFICE)
    assert set(cfg.schedules) == {"site"}
    assert cfg.stations == {
        "st1": ("st1.1", "st1.2"),
        "st2": ("st2.1", "st2.2"),
        "st3": ("st3.1", "st3.2"),
        "st4": ("st4.1", "st4.2"),
    }
    assert load_site(OFFICE).id == "office"


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("sat,sun", {5, 6}),
        ("Sat-Sun", {5, 6}),
        ("fri-mon", {4, 5, 6, 0}),
        ("wed", {2}),
        ("mon, wed-thu", {0, 2, 3}),
        ("daily", set(range(7))),
    ],
)
def test_days(text: str, days: set[int]) -> None:
    assert parse_days(text) == frozenset(days)


@pytest.mark.parametrize("text", ["", "monday", "mon-", "mon,,tue", "xyz-fri"])
def test_bad_days(text: str) -> None:
    with pytest.raises(ScheduleError):
        parse_days(text)


def test_clock() -> None:
    assert parse_clock("06:00") == 360
    assert parse_clock("6:30") == 390
    assert parse_clock("24:00", end=True) == 1440
    for bad in ("24:00", "25:00", "12:60", "noon", "12", "24:30"):
        with pytest.raises(ScheduleError):
            parse_clock(bad, end=bad == "24:30")


def test_overnight_entries_and_gaps() -> None:
    schedule = WeeklySchedule([ScheduleEntry(parse_days("fri"), 22 * 60, 6 * 60, 5.0)], "a")
    friday = MONDAY + timedelta(days=4)
    assert schedule.value_at(friday + timedelta(hours=21)) is None  # a gap: configured limit
    assert schedule.value_at(friday + timedelta(hours=22)) == 5.0
    assert schedule.value_at(friday + timedelta(hours=29, minutes=59)) == 5.0  # Sat 05:59
    assert schedule.value_at(friday + timedelta(hours=30)) is None
    assert schedule.next_boundary(MONDAY) == friday + timedelta(hours=22)
    # Sunday night wraps into Monday morning.
    wrap = WeeklySchedule([ScheduleEntry(parse_days("sun"), 23 * 60, 60, 1.0)])
    assert wrap.value_at(MONDAY + timedelta(minutes=30)) == 1.0
    assert wrap.value_at(MONDAY + timedelta(days=6, hours=23, minutes=30)) == 1.0
    constant = WeeklySchedule([ScheduleEntry(parse_days("daily"), 0, 1440, 3.0)])
    assert constant.next_boundary(MONDAY) is None
    assert WeeklySchedule([]).next_boundary(MONDAY) is None


def test_overlapping_entries_are_refused_naming_both() -> None:
    entries = [
        ScheduleEntry(parse_days("mon-fri"), 0, 600, 1.0),
        ScheduleEntry(parse_days("wed"), 540, 720, 2.0),
    ]
    with pytest.raises(ScheduleError, match="entries 1 and 2 overlap at wed 09:00") as caught:
        WeeklySchedule(entries)
    assert caught.value.entries == (0, 1)
    # Across midnight too; touching entries are fine.
    with pytest.raises(ScheduleError, match="overlap at tue 00:00"):
        WeeklySchedule(
            [
                ScheduleEntry(parse_days("mon"), 23 * 60, 60, 1.0),
                ScheduleEntry(parse_days("tue"), 0, 120, 2.0),
            ]
        )
    WeeklySchedule(
        [
            ScheduleEntry(parse_days("mon"), 0, 360, 1.0),
            ScheduleEntry(parse_days("mon"), 360, 720, 2),
        ]
    )


def _site(tmp_path: Path, group: str, schedule: str) -> Path:
    """A site whose group g has ``group``'s fields and ``schedule``; its entries start on
    line 5 + the number of group fields (the ``line`` parameters below count from 4)."""
    path = tmp_path / "site.yaml"
    fields = "".join(f"    {f.strip()}\n" for f in group.split(","))
    path.write_text(
        "site: s\n"
        "groups:\n"
        "  - id: g\n"
        f"{fields}"
        "    schedule:\n"
        f"{schedule}"
        "ports:\n"
        "  - {id: a.1, group: g, max_a: 32}\n"
    )
    return path


@pytest.mark.parametrize(
    ("group", "schedule", "line", "field", "message"),
    [
        (
            "breaker_a: 100, limit_kw: 40",
            "      - {days: mon-fri, from: '06:00', to: '12:00', kw: 20}\n"
            "      - {days: wed, from: '11:00', to: '13:00', kw: 10}\n",
            5,
            "groups[g].schedule[1]",
            "entries 1 and 2 overlap at wed 11:00",
        ),
        (
            "breaker_a: 100",
            "      - {days: mon, kw: 20}\n",
            4,
            "groups[g].schedule[0].kw",
            "group 'g' has no limit_kw",
        ),
        (
            "limit_kw: 40",
            "      - {days: mon, a: 20}\n",
            4,
            "groups[g].schedule[0].a",
            "group 'g' has no breaker_a",
        ),
        (
            "breaker_a: 100, limit_kw: 40",
            "      - {days: mon, kw: 20}\n      - {days: tue, a: 20}\n",
            5,
            "groups[g].schedule[1]",
            "all entries of one schedule use kw:, or all use a:",
        ),
        (
            "limit_kw: 40",
            "      - {days: mon, kw: 50}\n",
            4,
            "groups[g].schedule[0].kw",
            "50 is out of range (allowed: 0..40)",
        ),
        (
            "limit_kw: 40",
            "      - {days: mon, from: '25:00', kw: 5}\n",
            4,
            "groups[g].schedule[0].from",
            "'25:00' is not a time of day",
        ),
        (
            "limit_kw: 40",
            "      - {days: moon, kw: 5}\n",
            4,
            "groups[g].schedule[0].days",
            "unknown day 'moon'",
        ),
        (
            "limit_kw: 40",
            "      - {days: mon, from: '08:00', to: '08:00', kw: 5}\n",
            4,
            "groups[g].schedule[0].to",
            "from and to are the same time",
        ),
        (
            "limit_kw: 40",
            "      - {days: mon, kw: 5, a: 3}\n",
            4,
            "groups[g].schedule[0]",
            "an entry has exactly one of kw:",
        ),
        (
            "limit_kw: 40",
            "      - {days: mon, from: '24:00', kw: 5}\n",
            4,
            "groups[g].schedule[0].from",
            "24:00 is only allowed as an end",
        ),
    ],
)
def test_bad_schedules_are_refused_with_file_line_field(
    tmp_path: Path, group: str, schedule: str, line: int, field: str, message: str
) -> None:
    path = _site(tmp_path, group, schedule)
    with pytest.raises(ConfigError) as caught:
        load_site_config(path)
    err = caught.value
    first_entry = 6 + group.count(",")
    assert (err.line, err.field) == (first_entry + line - 4, field), str(err)
    assert message in err.message, str(err)
    with pytest.raises(ConfigError):  # load_site validates the same
        load_site(path)


def test_unquoted_times_and_day_lists_are_read(tmp_path: Path) -> None:
    # YAML 1.1 reads 06:00 unquoted as a base-60 number; the schedule reads the source text.
    path = _site(
        tmp_path,
        "breaker_a: 100",
        "      - {days: [mon, wed-thu], from: 06:00, to: 18:30, a: 16}\n",
    )
    schedule = load_site_config(path).schedules["g"]
    assert schedule.unit == "a"
    assert schedule.value_at(MONDAY + timedelta(hours=18, minutes=29)) == 16.0
    assert schedule.value_at(MONDAY + timedelta(hours=18, minutes=30)) is None
    assert schedule.value_at(MONDAY + timedelta(days=1, hours=8)) is None
    assert schedule.value_at(MONDAY + timedelta(days=3, hours=8)) == 16.0


_entries = st.lists(
    st.builds(
        lambda days, start, length, value: ScheduleEntry(
            frozenset(days), start, (start + length) % 1440 or 1440, value
        ),
        st.sets(st.integers(0, 6), min_size=1, max_size=3),
        st.integers(0, 1439),
        st.integers(1, 1439),
        st.sampled_from([0.0, 5.0, 10.0, 20.0]),
    ),
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(_entries, st.integers(0, 7 * 24 * 3600 - 1))
def test_the_value_is_constant_until_the_next_boundary_and_changes_there(
    entries: list[ScheduleEntry], offset: int
) -> None:
    try:
        schedule = WeeklySchedule(entries)
    except ScheduleError:
        return  # overlapping: refused, which is what the other tests check
    at = MONDAY + timedelta(seconds=offset)
    nxt = schedule.next_boundary(at)
    value = schedule.value_at(at)
    if nxt is None:
        for k in range(0, 7 * 24 * 60, 37):
            assert schedule.value_at(MONDAY + timedelta(minutes=k)) == value
        return
    assert at < nxt <= at + timedelta(days=7)
    assert schedule.value_at(nxt) != schedule.value_at(nxt - timedelta(seconds=1))
    span = (nxt - at).total_seconds()
    for k in range(1, 8):
        assert schedule.value_at(at + timedelta(seconds=span * k / 8.0 - 1e-3)) == value
