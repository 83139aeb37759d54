"""The bounded record of a simulated run that its plot and its printed summary read.

One job: keep, in memory that does not grow with the run's duration, what an installer looks
at afterwards: each port's current and offer and each limit's load as step functions
decimated to the plot's resolution (`Steps`), each port's status over time (charging, paused,
full, fault...), the moments that tell the story (arrivals, departures, faults and lockouts,
link changes), and how to say a moment of the run (a clock time when the scenario has a
``start:`` or a time-of-use schedule, else the time since the start). The full-resolution
trace goes to disk as the run goes (`tools.recorder`), never through here.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hal.yamlnodes import ConfigError, load_document
from tools.scenario import Scenario

__all__ = [
    "PLOT_BUCKETS",
    "STATES",
    "Clock",
    "Marker",
    "Steps",
    "Timeline",
    "clock_for",
    "span",
]

# A plot is about 1,200 pixels wide: 2,000 buckets is finer than a pixel, and at most four
# points a bucket (first, lowest, highest, last) draws the same picture as every tick would.
PLOT_BUCKETS = 2000

# A port's status, most telling first when more than one holds (a faulted port that still has
# a car is shown as faulted). "paused": plugged in, wanting energy, offered nothing (waiting
# its turn, or no power under the limits); "full": the car reached its target (not paused).
STATES = ("fault", "empty", "not-responding", "full", "paused", "charging", "connected")


def span(seconds: float) -> str:
    """A duration for people: ``45s``, ``12m 30s``, ``1h 12m``, ``24h 00m``, ``2d 3h 05m``."""
    s = round(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    days, s = divmod(s, 86_400) if s >= 2 * 86_400 else (0, s)
    hours, s = divmod(s, 3_600)
    minutes, secs = divmod(s, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if secs else f"{minutes}m"


@dataclass(frozen=True, slots=True)
class Clock:
    """How a moment of a run is said: the wall clock from ``start`` (time of use), or, without
    one, the time since the run began."""

    start: datetime | None
    days: bool = False  # the run reaches another day: clock times name the weekday

    def moment(self, t: float) -> str:
        """``08:00`` (``Mon 08:00`` over several days; seconds only when not whole minutes),
        or ``1h 12m`` into the run."""
        if self.start is None:
            return span(t)
        wall = self.start + timedelta(seconds=round(t))
        text = wall.strftime("%H:%M:%S" if wall.second else "%H:%M")
        return wall.strftime("%a ") + text if self.days else text

    def axis_label(self) -> str:
        if self.start is None:
            return "time since the start (h:mm)"
        return f"clock time (from {self.start:%a %d %b %Y %H:%M})"

    def tick(self, hours: float) -> str:
        """An x-axis tick label for ``hours`` into the run."""
        if self.start is None:
            minutes = round(hours * 60.0)
            return f"{minutes // 60}:{minutes % 60:02d}"
        wall = self.start + timedelta(hours=hours)
        # Over several days the weekday goes under midnight's tick only: every tick saying
        # it would crowd the axis.
        if self.days and wall.hour == 0 and wall.minute == 0:
            return wall.strftime("%H:%M\n%a")
        return wall.strftime("%H:%M")


def clock_for(scenario: Scenario, duration_s: float) -> Clock:
    """Clock times when the scenario says when it starts (``start:``) or its site runs a
    time-of-use schedule (whose boundaries are clock times); else time since the start."""
    site = scenario.site_config
    timed = site is not None and bool(site.schedules)
    if not timed:
        # Scenario keeps only the start (a default Monday when absent): ask the file, which
        # load_scenario has read already (one made in memory has none to ask).
        try:
            timed = "start" in load_document(scenario.path).mapping(None)
        except ConfigError:
            timed = False
    if not timed:
        return Clock(None)
    return Clock(scenario.start, days=duration_s >= 86_400.0)


class Steps:
    """A step function of time (each value holds until the next point) in bounded memory.

    Only changes are kept, and within one bucket of time at most four of them: the first, the
    lowest, the highest and the last, in time order; that draws the same line at any width up
    to one pixel per bucket, so the memory is bounded by the number of buckets however many
    ticks the run has.
    """

    __slots__ = ("_bucket", "_first", "_width", "t", "v")

    def __init__(self, bucket_s: float) -> None:
        self.t = array("d")
        self.v = array("d")
        self._width = bucket_s
        self._bucket = -1
        self._first = 0  # index of the current bucket's first point

    def add(self, t: float, value: float) -> None:
        if self.v:
            last = self.v[-1]
            # NaN (a limit not in force) never equals itself: compare as "both NaN".
            if value == last or (value != value and last != last):
                return
        bucket = int(t // self._width)
        if bucket != self._bucket:
            self._bucket, self._first = bucket, len(self.t)
        self.t.append(t)
        self.v.append(value)
        if len(self.t) - self._first > 4:
            self._squeeze()

    def _squeeze(self) -> None:
        first = self._first
        ts, vs = self.t[first:], self.v[first:]
        real = [i for i, v in enumerate(vs) if v == v]
        keep = {0, len(vs) - 1}
        if real:
            keep.add(min(real, key=vs.__getitem__))
            keep.add(max(real, key=vs.__getitem__))
        del self.t[first:]
        del self.v[first:]
        for i in sorted(keep):
            self.t.append(ts[i])
            self.v.append(vs[i])

    def __len__(self) -> int:
        return len(self.t)


@dataclass(frozen=True, slots=True)
class Marker:
    """A moment worth marking on the time axis: ``kind`` is arrival, departure, fault, lockout
    (recorded on a port), fallback or sharing (a station's link status), or event (a scenario
    event: link down/up, coordinator restart, injected fault, site load)."""

    t: float
    kind: str
    subject: str  # a port, a station, or "" for the whole site
    text: str


@dataclass
class Timeline:
    """What the plot and the printed summary need of a run, bounded in memory."""

    clock: Clock
    until: float
    ports: list[str]
    limit_units: dict[str, str]  # limit id -> "A" or "kW"
    numeric: bool = True  # keep the decimated current and load series (for a plot)
    drawn: dict[str, Steps] = field(default_factory=dict)
    offer: dict[str, Steps] = field(default_factory=dict)
    load: dict[str, Steps] = field(default_factory=dict)
    limit: dict[str, Steps] = field(default_factory=dict)
    states: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    markers: list[Marker] = field(default_factory=list)
    link: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    # Exact, not decimated (the recorder integrates them): time each port spent paused while
    # its car wanted energy, and when each of its cars reached its target.
    waiting_s: dict[str, float] = field(default_factory=dict)
    full_at: dict[str, list[float]] = field(default_factory=dict)
    bucket_s: float = 0.0

    def __post_init__(self) -> None:
        self.bucket_s = max(self.until, 1.0) / PLOT_BUCKETS
        if self.numeric:
            w = self.bucket_s
            self.drawn = {p: Steps(w) for p in self.ports}
            self.offer = {p: Steps(w) for p in self.ports}
            self.load = {lid: Steps(w) for lid in self.limit_units}
            self.limit = {lid: Steps(w) for lid in self.limit_units}
        self.states = {p: [] for p in self.ports}

    def port(self, t: float, pid: str, drawn_a: float, offer_a: float, state: str) -> None:
        if self.numeric:
            self.drawn[pid].add(t, drawn_a)
            self.offer[pid].add(t, offer_a)
        runs = self.states[pid]
        if runs and runs[-1][1] == state:
            return
        # A status that lasted less than a bucket cannot be seen: the new one takes its place
        # (bounding the runs by the buckets), unless it was a fault, which must stay visible.
        if runs and t - runs[-1][0] < self.bucket_s and runs[-1][1] != "fault":
            start = runs.pop()[0]
            if runs and runs[-1][1] == state:
                return
            runs.append((start, state))
            return
        runs.append((t, state))

    def limit_load(self, t: float, lid: str, load: float, value: float) -> None:
        if self.numeric:
            self.load[lid].add(t, load)
            self.limit[lid].add(t, value)

    def mark(self, t: float, kind: str, subject: str, text: str) -> None:
        self.markers.append(Marker(t, kind, subject, text))

    def link_status(self, transitions: list[dict[str, object]]) -> None:
        """A coordinated site's station statuses over time (``link.transitions`` of the
        summary). A station starts in fallback until the coordinator's first limits reach it:
        that is not news, so a station's story (and its markers) starts when it first shares."""
        started: set[str] = set()
        for item in transitions:
            t, sid, status = item["t_s"], item["station"], item["status"]
            assert isinstance(t, float | int) and isinstance(sid, str) and isinstance(status, str)
            self.link.setdefault(sid, []).append((float(t), status))
            if sid not in started:
                if status == "sharing":
                    started.add(sid)
                continue
            self.mark(float(t), status, sid, f"{sid} {status}")
