"""Dynamic limits: what time of use and dynamic load management make of a site's limits now.

One job, pure: from a `SiteConfig`, the wall-clock moment and the site meters' readings, the
limit values to hand to `LimitTree.with_limits` (which only ever lowers them):

* a group's schedule (`controller.schedule`): its value at ``wall`` (kW on ``"<group>:kW"``,
  A on the group's current limit); no entry at that moment leaves the configured limit;
* a group's site meter (DLM, the guide, "How to set the Limits?" 3): ``max_kw`` minus the
  unmanaged load it reads ("if a Site has an absolute maximum of 500 kW, and if the
  un-managed load at the site is currently 200 kW, Dynamic Load Management would allocate the
  remaining 300 kW"), never below 0; no reading (None: absent, stale or invalid) ->
  ``conservative_kw``;
* where several apply to one limit, the lowest.

`DynamicLimits` is that over time, for whoever drives a site's limits (the coordinator,
`firmware.link.coordinator`; the simulator running a site as one controller,
`tools.simulate`): it keeps each meter's last reading with when it was taken, and a reading
older than the meter's ``stale_s`` counts as none. Still pure: the caller passes the time in,
``now`` on its monotonic clock and ``wall`` as the wall-clock moment.

API::

    dynamic_limits(site, wall, meter_kw) -> dict[limit id, value]
    next_change(site, wall) -> datetime | None     # next schedule boundary

    dyn = DynamicLimits(site)
    dyn.read(group, kw, now)                       # a meter reading taken at now (None: none)
    dyn.readings(now) -> dict[group, kw | None]    # the fresh ones at now
    dyn.limits(wall, now) -> dict[limit id, value]
    dyn.next_change(wall) -> datetime | None       # as above, the boundary cached
    dyn.deadlines(now, wall) -> list[float]        # when limits() changes with no new input
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

from controller.site import SiteConfig

__all__ = ["DynamicLimits", "dynamic_limits", "next_change"]

# A reading is stale once older than ``stale_s``: the deadline to look again falls just after.
_STALE_STEP_S = 1e-6


def dynamic_limits(
    site: SiteConfig, wall: datetime | None, meter_kw: Mapping[str, float | None]
) -> dict[str, float]:
    """The limit values time of use and site meters set now (module docstring).

    ``wall`` None: no schedule applies (no time known). ``meter_kw``: per meter group, the
    unmanaged load in kW, or None when the reading is missing or stale; a NaN or infinite
    reading counts as none.
    """
    out: dict[str, float] = {}

    def lower(key: str, value: float) -> None:
        out[key] = min(out.get(key, math.inf), value)

    if wall is not None:
        for gid, schedule in site.schedules.items():
            value = schedule.value_at(wall)
            if value is not None:
                lower(f"{gid}:kW" if schedule.unit == "kw" else gid, value)
    for gid, meter in site.meters.items():
        reading = meter_kw.get(gid)
        if reading is None or not math.isfinite(reading):
            lower(f"{gid}:kW", meter.conservative_kw)
        else:
            lower(f"{gid}:kW", max(0.0, meter.max_kw - reading))
    return out


def next_change(site: SiteConfig, wall: datetime) -> datetime | None:
    """The next moment after ``wall`` a schedule of the site changes its value."""
    times = [b for s in site.schedules.values() if (b := s.next_boundary(wall)) is not None]
    return min(times) if times else None


class DynamicLimits:
    """One site's dynamic limits as time passes: the meters' last readings, each with when it
    was taken, and the next schedule boundary (cached: a site asks at every step)."""

    def __init__(self, site: SiteConfig) -> None:
        self.site = site
        self._readings: dict[str, tuple[float | None, float]] = {}
        self._boundary: tuple[datetime, datetime | None] | None = None  # (asked at, answer)

    def read(self, group: str, kw: float | None, now: float) -> None:
        """The unmanaged load ``kw`` that ``group``'s meter read at ``now`` (None: it has no
        reading). A group without a meter is a caller's bug, refused with ValueError."""
        if group not in self.site.meters:
            raise ValueError(f"no meter configured on group {group!r}")
        self._readings[group] = (kw, now)

    def readings(self, now: float) -> dict[str, float | None]:
        """Per meter group, its last reading if taken at most ``stale_s`` before ``now``,
        else None (no reading, or a stale one: the conservative limit)."""
        out: dict[str, float | None] = {}
        for gid, meter in self.site.meters.items():
            reading = self._readings.get(gid)
            fresh = reading is not None and now - reading[1] <= meter.stale_s
            out[gid] = reading[0] if fresh and reading is not None else None
        return out

    def limits(self, wall: datetime | None, now: float) -> dict[str, float]:
        """The limit values at wall-clock ``wall``, with the meters as they read at ``now``."""
        return dynamic_limits(self.site, wall, self.readings(now))

    def next_change(self, wall: datetime) -> datetime | None:
        """The next schedule boundary after ``wall`` (`next_change`), computed again only when
        ``wall`` has left the span the last answer covers."""
        cached = self._boundary
        if cached is None or wall < cached[0] or (cached[1] is not None and wall >= cached[1]):
            cached = self._boundary = (wall, next_change(self.site, wall))
        return cached[1]

    def deadlines(self, now: float, wall: datetime) -> list[float]:
        """When, on the ``now`` clock (``wall`` being the wall-clock moment of ``now``), the
        limits change with no new reading: each reading going stale, the next schedule
        boundary. Some may be past; the caller keeps the ones it cares about."""
        times = [
            at + self.site.meters[gid].stale_s + _STALE_STEP_S
            for gid, (_, at) in self._readings.items()
        ]
        boundary = self.next_change(wall)
        if boundary is not None:
            times.append(now + (boundary - wall).total_seconds())
        return times
