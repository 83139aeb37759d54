"""Time of use: a weekly recurring limit schedule for one group.

One job: say which limit value a schedule gives at a wall-clock moment, and when that value
changes next (the guide, "Time of Use (TOU) Power Sharing": "the group limit(s) can vary by hour
of the day or day of the week, in recurring weekly fashion"; its office example is
configs/sites/office-tou.yaml). Pure: the moment is an argument.

API::

    WeeklySchedule(entries, unit="kw")       # ScheduleEntry(days, start_min, end_min, value)
    schedule.value_at(wall) -> float | None   # None: no entry covers it (the configured limit)
    schedule.next_boundary(wall) -> datetime | None   # next moment the value changes
    parse_days("mon-fri") / parse_days("sat,sun") -> frozenset of weekday numbers (mon = 0)
    parse_clock("06:00") -> 360 (minutes); "24:00" only as an end

An entry covers ``[start, end)`` on each of its days; ``end <= start`` runs overnight into the
next day (``22:00``-``06:00``), and ``00:00``-``24:00`` is the whole day. Entries may not
overlap (refused, naming both). Wall times are the site's local time as given: the weekday,
hour and minute fields of the datetime (a timezone-aware datetime is read in its own zone; no
daylight-saving arithmetic is attempted).
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = [
    "DAY_NAMES",
    "ScheduleEntry",
    "ScheduleError",
    "WeeklySchedule",
    "parse_clock",
    "parse_days",
]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


class ScheduleError(ValueError):
    """A schedule that is not valid; ``entries`` are the indices of the entries at fault."""

    def __init__(self, message: str, entries: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.entries = entries


def parse_days(text: str) -> frozenset[int]:
    """``"mon-fri"``, ``"sat,sun"``, ``"fri-mon"`` (wraps), ``"daily"`` -> weekday numbers."""
    days: set[int] = set()
    parts = [p.strip().lower() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ScheduleError(f"{text!r} is not a list of days (e.g. mon-fri, or sat,sun)")
    for part in parts:
        if part in ("daily", "all"):
            days.update(range(7))
            continue
        first, sep, last = part.partition("-")
        a, b = _day(first.strip(), text), _day(last.strip() if sep else first.strip(), text)
        k = a
        while True:
            days.add(k)
            if k == b:
                break
            k = (k + 1) % 7
    return frozenset(days)


def _day(name: str, text: str) -> int:
    if name not in DAY_NAMES:
        raise ScheduleError(
            f"unknown day {name!r} in {text!r} (allowed: {', '.join(DAY_NAMES)}, ranges like "
            "mon-fri, lists like sat,sun, or daily)"
        )
    return DAY_NAMES.index(name)


def parse_clock(text: str, *, end: bool = False) -> int:
    """``"HH:MM"`` -> minutes after midnight; ``"24:00"`` is allowed only as an end."""
    match = _CLOCK.match(text)
    if match is None:
        raise ScheduleError(f"{text!r} is not a time of day (expected HH:MM, e.g. 06:00)")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes != 0):
        raise ScheduleError(f"{text!r} is not a time of day (00:00 to 23:59, or 24:00 as an end)")
    if hours == 24 and not end:
        raise ScheduleError("24:00 is only allowed as an end (use 00:00 for a start)")
    return hours * 60 + minutes


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """One line of a schedule: on ``days``, from ``start_min`` to ``end_min``, ``value``.

    Minutes after midnight; ``end_min`` in 1..1440 (1440 = 24:00); ``end_min <= start_min``
    means the entry runs past midnight into the next day.
    """

    days: frozenset[int]
    start_min: int
    end_min: int
    value: float

    def __post_init__(self) -> None:
        if not self.days or not self.days <= frozenset(range(7)):
            raise ScheduleError("an entry needs at least one day (mon = 0 .. sun = 6)")
        if not 0 <= self.start_min < MINUTES_PER_DAY:
            raise ScheduleError(f"start {self.start_min} min is not within a day")
        if not 0 < self.end_min <= MINUTES_PER_DAY:
            raise ScheduleError(f"end {self.end_min} min is not within a day")
        if self.start_min == self.end_min:
            raise ScheduleError("from and to are the same time: say 00:00 to 24:00 for a whole day")
        if not (math.isfinite(self.value) and self.value >= 0.0):
            raise ScheduleError(f"value {self.value} must be >= 0 and finite")

    def intervals(self) -> list[tuple[int, int]]:
        """The week-minute intervals ``[a, b)`` it covers, split at the end of the week."""
        out: list[tuple[int, int]] = []
        length = (self.end_min - self.start_min) % MINUTES_PER_DAY or MINUTES_PER_DAY
        for day in sorted(self.days):
            a = day * MINUTES_PER_DAY + self.start_min
            b = a + length
            if b <= MINUTES_PER_WEEK:
                out.append((a, b))
            else:
                out.append((a, MINUTES_PER_WEEK))
                out.append((0, b - MINUTES_PER_WEEK))
        return out


def _week_seconds(wall: datetime) -> float:
    return (
        wall.weekday() * 86400.0
        + wall.hour * 3600.0
        + wall.minute * 60.0
        + wall.second
        + wall.microsecond / 1e6
    )


def _where(minute: int) -> str:
    day, rest = divmod(minute % MINUTES_PER_WEEK, MINUTES_PER_DAY)
    return f"{DAY_NAMES[day]} {rest // 60:02d}:{rest % 60:02d}"


class WeeklySchedule:
    """A validated weekly schedule of one limit (``unit`` "kw" or "a")."""

    __slots__ = ("_changes", "_starts", "_values", "entries", "unit")

    def __init__(self, entries: Sequence[ScheduleEntry], unit: str = "kw") -> None:
        if unit not in ("kw", "a"):
            raise ScheduleError(f"unit {unit!r} is not kw or a")
        self.entries = tuple(entries)
        self.unit = unit
        segments: list[tuple[int, int, float, int]] = []
        for i, entry in enumerate(self.entries):
            segments.extend((a, b, entry.value, i) for a, b in entry.intervals())
        segments.sort()
        for (a1, b1, _, i), (a2, _, _, j) in itertools.pairwise(segments):
            if a2 < b1:
                first, second = sorted((i, j))
                raise ScheduleError(
                    f"entries {first + 1} and {second + 1} overlap at {_where(a2)} "
                    f"(entry {i + 1} runs {_where(a1)} to {_where(b1)}); each moment of the week "
                    "may have one value",
                    (first, second),
                )
        # The week as pieces of constant value: starts (minutes) and values, merged where a
        # piece has the same value as the one before, so every start but the first is a change.
        ends = {m for a, b, _, _ in segments for m in (a, b)}
        points = sorted({0} | {m for m in ends if m < MINUTES_PER_WEEK})
        merged_s: list[int] = []
        merged_v: list[float | None] = []
        for at in points:
            v = next((value for a, b, value, _ in segments if a <= at < b), None)
            if not merged_v or merged_v[-1] != v:
                merged_s.append(at)
                merged_v.append(v)
        self._starts = tuple(merged_s)
        self._values = tuple(merged_v)
        changes = list(merged_s[1:])
        if merged_v[0] != merged_v[-1]:
            changes.insert(0, 0)  # the value changes where the week wraps around
        self._changes = tuple(m * 60.0 for m in changes)

    def _value_at_minute(self, minute: float) -> float | None:
        return self._values[bisect.bisect_right(self._starts, minute) - 1]

    def value_at(self, wall: datetime) -> float | None:
        """The scheduled value at ``wall``; None where no entry applies."""
        return self._value_at_minute(_week_seconds(wall) / 60.0)

    def next_boundary(self, wall: datetime) -> datetime | None:
        """The first moment after ``wall`` where the value differs from just before it;
        None when the value never changes."""
        changes = self._changes
        if not changes:
            return None
        now_s = _week_seconds(wall)
        k = bisect.bisect_right(changes, now_s)
        at = changes[k] if k < len(changes) else changes[0] + MINUTES_PER_WEEK * 60.0
        return wall + timedelta(seconds=at - now_s)
