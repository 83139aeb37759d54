"""Durations as people write them, and back: the one parser of every duration in ampshare.

Configs, scenarios, command-line options and backend URLs (``serial://...?lost=500ms``,
``modbus-tcp://...?timeout=2s``) all read durations here, so ``1h30m`` means the same thing
everywhere. The grammar follows Go's ``time.ParseDuration`` and systemd.time(7): one or more
``<number><unit>`` parts, optionally separated by spaces (``1h30m``, ``2h 15m``, ``1.5h``,
``1d``, ``90s``, ``500ms``); a bare number is seconds. Units: ``ms``/``msec``, ``s``/``sec``/
``second(s)``, ``m``/``min``/``minute(s)``, ``h``/``hr``/``hour(s)``, ``d``/``day(s)``,
``w``/``week(s)``. Durations are never negative and always finite.

``format_duration`` writes seconds back in that grammar (``5400.0`` -> ``1h30m``), exactly to
the millisecond, so that ``parse_duration(format_duration(s))`` gives ``s`` back.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_UNIT_S = {
    "ms": 0.001,
    "msec": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
    "w": 604800.0,
    "week": 604800.0,
    "weeks": 604800.0,
}
_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
# Longest unit names first, so that "ms" is not read as "m" followed by "s".
_UNITS = "|".join(sorted(_UNIT_S, key=len, reverse=True))
# Case-sensitive, as in Go and systemd: "1M" would be a month to systemd, not a minute.
_PART = re.compile(rf"\s*({_NUMBER})\s*({_UNITS})(?![A-Za-z])")
_BARE = re.compile(rf"^\s*({_NUMBER})\s*$")
_EXAMPLES = "e.g. 90s, 30m, 1h30m, '2h 15m', 1.5h, 1d, 500ms"


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or a duration string (``"1h30m"``, ``"2h 15m"``).

    Raises ``ValueError`` whose message says what is wrong: "negative", not finite, or not a
    duration (with examples of what is).
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a duration ({_EXAMPLES})")
    if isinstance(value, str):
        seconds = _parse_text(value)
    else:
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float; the number itself is too long to show
            raise ValueError("too large to be a duration (must be finite)") from None
    if math.isnan(seconds):
        raise ValueError(f"{value!r} is not a number")
    if seconds < 0:
        raise ValueError(f"{value!r} is negative (a duration is >= 0)")
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite duration")
    return seconds


def _parse_text(text: str) -> float:
    if text.strip().startswith("-"):
        raise ValueError(f"{text!r} is negative (a duration is >= 0)")
    bare = _BARE.match(text)
    if bare is not None:
        return float(bare.group(1))
    total, pos, parts = 0.0, 0, 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        match = _PART.match(text, pos)
        if match is None:
            raise ValueError(f"{text!r} is not a duration ({_EXAMPLES})")
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos, parts = match.end(), parts + 1
    if parts == 0:
        raise ValueError(f"{text!r} is not a duration ({_EXAMPLES})")
    return total


def format_duration(seconds: float) -> str:
    """``seconds`` as a duration string, to the millisecond: ``0s``, ``250ms``, ``1m30.5s``,
    ``1h30m``, ``2d3h``. Raises ``ValueError`` for a negative or non-finite value."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{seconds!r} is not a duration (must be finite and >= 0)")
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    days, ms = divmod(ms, 86_400_000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    if ms:
        whole, frac = divmod(ms, 1000)
        if whole == 0 and not parts:
            parts.append(f"{frac}ms")
        else:
            parts.append(f"{whole}.{frac:03d}".rstrip("0").rstrip(".") + "s")
    return "".join(parts)
