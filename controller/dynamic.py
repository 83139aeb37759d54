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

API::

    dynamic_limits(site, wall, meter_kw) -> dict[limit id, value]
    next_change(site, wall) -> datetime | None     # next schedule boundary
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

from controller.site import SiteConfig

__all__ = ["dynamic_limits", "next_change"]


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
