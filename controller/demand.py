"""Demand learning: how much each vehicle really takes, learned from its port meter.

This module's one job is to turn, per port, the offers a vehicle was given and what its meter
shows it drawing into the most worth offering it now (its *want*). J1772 vehicles declare
nothing, so unused current is found by measurement (docs/design.md "Electrical rules": "a vehicle
drawing well under its offer is lowered to near its draw, the difference goes to others, and
it is probed upward again from time to time. A finished vehicle (state C, near 0 A) gives its
share back without being unplugged"; the guide, "Power Sharing": "rediverts the available
power ... to the remaining actively charging vehicles").

Rules (numbers in `DemandSettings`, each with its reason):

* Lowering: in state C with an offer, a draw under ``offer - max(low_margin_a,
  low_fraction x offer)`` for ``low_window_s`` lowers the want to the highest draw seen in
  that window plus ``headroom_a`` (never under the port's minimum). The window restarts when
  the offer rises, so a vehicle always gets a full window to take a larger offer.
* Probing: a lowered vehicle is given its full want back at once when it draws within
  ``near_a`` of its (lowered) offer, and every ``probe_interval_s`` anyway. A probe is judged
  over ``probe_window_s`` (shorter than a demand window: the vehicle follows within 5 s);
  each probe in a row it does not take doubles the interval, up to ``probe_interval_max_s``.
* Finished: in state C with an offer, a draw under ``finished_a`` for ``finished_window_s``
  marks the vehicle finished: its want falls to the port's minimum, so it can resume at any
  moment; when it draws ``finished_a`` or more again it is an ordinary lowered vehicle (and
  is probed upward as soon as it takes its minimum).
* A stale or absent meter (None) counts as drawing the full effective offer, never 0: it
  never lowers a vehicle or marks it finished, and it ends a lowering (probe).
* Nothing is learned in state B or while the offer is 0 (paused): drawing nothing then says
  nothing about the vehicle. Leaving state C forgets what was learned; the vehicle starts
  again from its cap when it asks next.
* Timing: `DemandTracker.observe` judges a reading against the offer the vehicle has been
  seeing (the one sent before); `DemandTracker.arm`, after each decision, starts the windows
  from the moment a new offer went out, so that `DemandTracker.deadline` is exact.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

__all__ = ["DemandSettings", "DemandTracker"]


@dataclass(frozen=True, slots=True)
class DemandSettings:
    """Thresholds and windows of demand learning (docs/design.md "Electrical rules": unused
    current is redistributed by what meters measure), each default with its reason."""

    # "Well below its offer": under offer - max(2 A, 15 %). 2 A is well above meter noise
    # and on-board-charger ripple; 15 % scales it for large offers (4.5 A at 30 A).
    low_margin_a: float = 2.0
    low_fraction: float = 0.15
    # ... for a minute: a vehicle follows a new offer within 5 s (SAE J1772) and ramps over
    # some seconds more; a whole minute below is a vehicle that does not want more.
    low_window_s: float = 60.0
    # Lowered to its highest draw in that minute plus 1 A. The headroom is what lets a
    # vehicle show it wants more (J1772: it can never draw above its offer), and it is taken
    # from the others all the time: 1 A keeps ~97 % of a 32 A jumper in use beside a 12 A
    # charger (the guide, "Power Sharing Jumper": the other car gets what one cannot take).
    headroom_a: float = 1.0
    # Drawing within 0.5 A of its lowered offer: it wants more; probe upward at once. Twice
    # a class 1 meter's error at 16 A and above on-board-charger ripple (a few tenths), and
    # under the headroom, so a steady vehicle is not probed back up at once.
    near_a: float = 0.5
    # Probe a lowered vehicle every 10 min anyway (battery warm-up and cabin heating end,
    # taper is slow): it costs its neighbours at most one demand window per probe.
    probe_interval_s: float = 600.0
    # A probe is answered within the vehicle's 5 s follow time plus its ramp: judge it after
    # 15 s rather than a full demand window, since the neighbours pay for every second of a
    # probe that the vehicle does not use.
    probe_window_s: float = 15.0
    # Each probe in a row that the vehicle does not take doubles the interval, up to 1 h: a
    # car held back by its own charger all evening is not probed 6 times an hour.
    probe_interval_max_s: float = 3600.0
    # "Finished" (the guide, "complete their charge"): in C and under 1 A, which is a
    # vehicle's standby draw (BMS, contactor coils), for 2 min (twice the demand window:
    # long enough to not mistake a pause in the charge profile for the end).
    finished_a: float = 1.0
    finished_window_s: float = 120.0
    # A vehicle is judged against a new offer once it has seen it: when the same reading
    # would change its want at once (a stale meter counts as drawing the whole offer), that
    # happens this long after the offer went out: about one port-meter sample (~1 s polls).
    react_s: float = 1.0

    def __post_init__(self) -> None:
        if self.near_a >= self.headroom_a:
            # Lowered to draw + headroom, a steady vehicle must not look "near its offer",
            # or it would be probed back up on the next tick (flapping).
            raise ValueError("near_a must be smaller than headroom_a")
        for name in (
            "low_margin_a",
            "low_fraction",
            "low_window_s",
            "headroom_a",
            "near_a",
            "probe_interval_s",
            "probe_window_s",
            "probe_interval_max_s",
            "finished_a",
            "finished_window_s",
            "react_s",
        ):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be >= 0")


def _ceil_dA(amps: float) -> float:
    # Round a learned want up to the pilot's 0.1 A grid: generous to the vehicle.
    return math.ceil(amps * 10.0 - 1e-6) / 10.0


@dataclass(slots=True)
class DemandTracker:
    """What has been learned about the vehicle on one port during its session."""

    settings: DemandSettings
    learned_a: float | None = None  # the lowered want; None: not lowered (want = cap)
    finished: bool = False
    low_since: float | None = None
    low_peak: float = 0.0
    zero_since: float | None = None
    next_probe: float | None = None
    last_offer: float = 0.0
    react_at: float | None = None  # a judgement against the offer just sent is due then
    probing: bool = False  # given its full want back to see whether it takes more
    probe_from: float = 0.0  # the lowered want the probe started from
    failed_probes: int = 0  # probes in a row it did not take (the interval backs off)

    @property
    def reason(self) -> str | None:
        """Why the want is under the cap: ``"finished"``, ``"demand"``, or None."""
        if self.finished:
            return "finished"
        return None if self.learned_a is None else "demand"

    def want(self, cap_a: float, min_a: float) -> float:
        """The most worth offering: the cap, or the learned draw; never under the minimum."""
        if self.learned_a is None:
            return cap_a
        return min(cap_a, max(min_a, self.learned_a))

    def observe(
        self,
        now: float,
        *,
        requesting: bool,
        metered: float | None,
        offer: float,
        effective: float,
        min_a: float,
    ) -> None:
        """Learn from one tick: ``offer`` is what the vehicle has been seeing (the offer sent
        on the previous tick), ``effective`` its effective offer, ``metered`` its draw."""
        s = self.settings
        self.react_at = None
        if not requesting or offer <= 0.0:
            self.low_since = None
            self.zero_since = None
            if not requesting:
                self.learned_a = None
                self.finished = False
                self.next_probe = None
                self.probing = False
                self.failed_probes = 0
            self.last_offer = offer
            return

        drawn = effective if metered is None else metered  # stale: full offer, never 0
        if offer > self.last_offer:
            self.low_since = None  # a fresh window to take the larger offer
        self.last_offer = offer

        # Finished: ~0 A in C for a while.
        if drawn < s.finished_a:
            if self.zero_since is None:
                self.zero_since = now
            if not self.finished and now - self.zero_since >= s.finished_window_s:
                self.finished = True
                self.learned_a = min_a
                self.next_probe = None
                self.low_since = None
        else:
            self.zero_since = None
            if self.finished:
                # It draws again: an ordinary lowered vehicle, probed when it takes its offer.
                self.finished = False
                self.next_probe = now + s.probe_interval_s
        if self.finished:
            return

        if self.learned_a is not None:
            near = drawn >= min(offer, self.learned_a) - s.near_a
            due = self.next_probe is not None and now >= self.next_probe
            if near or due:
                self._probe()
                return

        threshold = offer - max(s.low_margin_a, s.low_fraction * offer)
        if drawn < threshold:
            if self.low_since is None:
                self.low_since = now
                self.low_peak = drawn
            else:
                self.low_peak = max(self.low_peak, drawn)
            if now - self.low_since >= self._window():
                lowered = _ceil_dA(max(min_a, self.low_peak + s.headroom_a))
                if self.learned_a is None or lowered < self.learned_a:
                    self.learned_a = lowered
                if self.probing:
                    self.failed_probes += 1
                    self.probing = False
                backoff = s.probe_interval_s * 2.0 ** min(self.failed_probes, 16)
                self.next_probe = now + min(s.probe_interval_max_s, backoff)
                self.low_since = None
        else:
            self.low_since = None
        if self.probing and drawn >= self.probe_from + s.near_a:
            # It draws more than it was lowered to: the probe found demand.
            self.probing = False
            self.failed_probes = 0

    def arm(
        self,
        now: float,
        *,
        requesting: bool,
        metered: float | None,
        offer: float,
        effective: float,
        min_a: float,
    ) -> None:
        """Start (or stop) the windows for the offer just sent, without acting on them.

        Called after a decision with the new ``offer``: a window then runs from the moment the
        offer went out, not from whenever the next reading happens to come, so the deadline a
        virtual-time runner skips to is exact. If the same reading judged against the new
        offer would change the want at once (a stale meter counts as drawing the whole offer,
        so a finished or lowered vehicle given an offer is probed), that is due ``react_s``
        later: the vehicle is judged against an offer only once it has seen it.
        """
        trial = copy.copy(self)
        trial.observe(
            now,
            requesting=requesting,
            metered=metered,
            offer=offer,
            effective=effective,
            min_a=min_a,
        )
        self.low_since = trial.low_since
        self.low_peak = trial.low_peak
        self.probing = trial.probing
        self.probe_from = trial.probe_from
        self.failed_probes = trial.failed_probes
        self.zero_since = trial.zero_since
        self.last_offer = trial.last_offer
        acts = (trial.learned_a, trial.finished) != (self.learned_a, self.finished)
        self.react_at = now + self.settings.react_s if acts else None

    def _probe(self) -> None:
        self.probe_from = self.learned_a if self.learned_a is not None else 0.0
        self.learned_a = None
        self.next_probe = None
        self.low_since = None
        self.probing = True

    def _window(self) -> float:
        s = self.settings
        return s.probe_window_s if self.probing else s.low_window_s

    def deadline(self) -> float | None:
        """The next time this tracker would change its mind with unchanged readings."""
        s = self.settings
        times: list[float] = []
        if self.low_since is not None:
            times.append(self.low_since + self._window())
        if self.zero_since is not None and not self.finished:
            times.append(self.zero_since + s.finished_window_s)
        if self.learned_a is not None and self.next_probe is not None and not self.finished:
            times.append(self.next_probe)
        if self.react_at is not None:
            times.append(self.react_at)
        return min(times) if times else None
