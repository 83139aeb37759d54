"""Round robin: who charges and who waits when not every vehicle fits at its minimum, and
getting waiting vehicles going again.

This module's one job is the state behind pausing: the order in which charging ports are
admitted (`Rotation`), the ports that only hold their minimum and get it from what the
charging ones leave (`Leftover`), and the wake-up of a vehicle that does not resume when
offered current again (`WakeUp`). How much each admitted port gets is
`controller.allocate`'s job; this module hands it priorities and decides which waiting ports
may be tried.

Round robin (docs/design.md "Electrical rules": "as many vehicles as fit get at least the minimum,
the rest are paused (PWM off), and who waits rotates so that averages even out. Rotation has
hysteresis: no stop/start flapping"; the guide, "Equal Charge Policy"):

* Order. Charging ports (in C, or waiting to charge) are ranked by *served* ampere-seconds
  (what they drew while some port was waiting; least served first), then by session start
  and id. A newcomer starts at the least served of the others (as in start-time fair
  queueing), so it neither starves the others nor waits forever. `controller.allocate`
  admits in that order.
* Rotation. While a port waits, the order is frozen and re-ranked every ``period_s``: the
  waiting ports, now the least served, come first and the most served running ports make
  room. Over whole periods the energy per vehicle evens out. Newcomers between two re-ranks
  go last: they start at once if they fit, otherwise at the next re-rank.
* Hysteresis. Pausing is immediate (a limit is a limit). Resuming a waiting port between
  re-ranks needs room for its minimum plus ``resume_margin_a``, continuously for
  ``resume_hold_s``; at a re-rank the plain minimum is enough (a swap, not a resume).
* FCFS policy: no rotation; the order is session start (the guide, "First in, First Out
  Policy": later vehicles wait until earlier ones complete).

Leftover: a finished vehicle or one in state B by choice keeps its minimum offer so it can
resume, but only out of what the charging vehicles leave after their full share (the guide:
a completed charge "rediverts the available power ... to the remaining actively charging
vehicles"; on a 32 A jumper the one still charging gets its 30 A). Same hysteresis.

Wake-up (by interrupting the pilot, the way EVerest handles legacy EVs): a vehicle that does not
resume (go to C) within ``timeout_s`` of PWM coming back on gets PWM off for
``off_s`` and on again, up to ``attempts`` times; then it is *not responding*: its share goes to
others. It is tried again when it goes to C on its own, and after ``retry_s`` with one plain
offer (no further interruptions, so a full car parked for hours is not pulsed every half hour).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from controller.allocate import Allocation, PortRequest

__all__ = ["Leftover", "Rotation", "RotationSettings", "WakeSettings", "WakeUp"]


@dataclass(frozen=True, slots=True)
class RotationSettings:
    """Round-robin timing (docs/design.md "Electrical rules"; the guide, "Equal Charge
    Policy"), each default with its reason."""

    # Who waits changes every 15 min (our choice; the guide gives no period): a pause and
    # restart (a contactor cycle, a vehicle restart of some seconds) then costs ~1 % of the
    # slot and a contactor sees < 100 cycles a day, while with 12 vehicles on 10 slots
    # (the guide's 8 A example) each waits one 15 min turn in every 1.5 h.
    period_s: float = 900.0
    # A paused vehicle resumes between rotations only if its minimum plus 1 A fits: ten times
    # the 0.1 A allocation step, above meter and site-meter (DLM) jitter of a few tenths.
    resume_margin_a: float = 1.0
    # ... and keeps fitting for a minute: DLM and ramping neighbours move the room for
    # seconds at a time; a restart that is undone a minute later is the flapping to avoid.
    resume_hold_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.period_s > 0.0:
            raise ValueError("period_s must be > 0")
        if not (self.resume_margin_a >= 0.0 and self.resume_hold_s >= 0.0):
            raise ValueError("resume_margin_a and resume_hold_s must be >= 0")


@dataclass(slots=True)
class Rotation:
    """Round-robin state of one limit tree: served amounts, the frozen order, who waits."""

    settings: RotationSettings = field(default_factory=RotationSettings)
    served: dict[str, float] = field(default_factory=dict)  # ampere-seconds while contended
    _order: dict[str, int] = field(default_factory=dict)  # position at the last re-rank
    _waiting: set[str] = field(default_factory=set)
    _hold_since: dict[str, float] = field(default_factory=dict)
    _rates: dict[str, float] = field(default_factory=dict)
    _last: float | None = None
    _next_rerank: float | None = None  # set while some port waits

    @property
    def active(self) -> bool:
        """Whether some port waits (round robin is on)."""
        return self._next_rerank is not None

    @property
    def waiting(self) -> frozenset[str]:
        return frozenset(self._waiting)

    def reset(self) -> None:
        """Forget who runs and who waits (sharing suspended, e.g. offline fallback)."""
        self._waiting.clear()
        self._hold_since.clear()
        self._rates.clear()
        self._next_rerank = None

    def forget(self, port_id: str) -> None:
        """A session ended: its service account and place go (a new one starts afresh)."""
        self.served.pop(port_id, None)
        self._order.pop(port_id, None)
        self._waiting.discard(port_id)
        self._hold_since.pop(port_id, None)
        self._rates.pop(port_id, None)

    def record(self, now: float, rates: Mapping[str, float]) -> None:
        """What each port draws from ``now`` on (amperes), for the served accounts."""
        self._accrue(now)
        self._rates = dict(rates)

    def _accrue(self, now: float) -> None:
        if self._last is not None and now > self._last and self.active:
            dt = now - self._last
            for pid, rate in self._rates.items():
                if pid in self.served:
                    self.served[pid] += rate * dt
        self._last = now if self._last is None else max(self._last, now)

    def deadline(self, after: float) -> float | None:
        """The next re-rank or end of a resume hold (after ``after``), if any."""
        times = [t + self.settings.resume_hold_s for t in self._hold_since.values()]
        if self._next_rerank is not None:
            times.append(self._next_rerank)
        due = [t for t in times if t > after]
        return min(due) if due else None

    def admit(
        self,
        now: float,
        requests: Mapping[str, PortRequest],
        allocate: Callable[[Mapping[str, PortRequest]], Allocation],
        *,
        fcfs: bool = False,
        caps: Mapping[str, float] | None = None,
        late: Collection[str] = (),
    ) -> Allocation:
        """Allocate ``requests`` with round-robin priorities and resume hysteresis.

        ``allocate``: the allocation to run (a tree and a policy bound). ``caps``: each port's
        cap, so that a resume margin never asks for more than the port can be offered.
        ``late``: ports that, if new here, start as the most served instead of the least (a
        vehicle retried after it did not respond had its turn: it must not push a charging
        one out, and comes in at its next turn).
        """
        self._accrue(now)
        s = self.settings
        for gone in [p for p in self.served if p not in requests]:
            del self.served[gone]
            self._order.pop(gone, None)
        self._waiting &= set(requests)
        known = [self.served[p] for p in requests if p in self.served]
        least = min(known) if known else 0.0
        most = max(known) if known else 0.0
        for pid in sorted(requests):
            if pid not in self.served:
                # Just above the most served (1 A s), so that ties do not put it first.
                self.served[pid] = most + 1.0 if pid in late else least

        rerank = not self.active or (self._next_rerank is not None and now >= self._next_rerank)
        if rerank:
            order = sorted(requests, key=lambda p: self._fresh_key(p, requests, fcfs))
            self._order = {p: i for i, p in enumerate(order)}
        else:
            tail = len(self._order)
            order = sorted(requests, key=lambda p: (self._order.get(p, tail), requests[p].since, p))
        ranked = {
            p: dataclasses.replace(requests[p], priority=float(i)) for i, p in enumerate(order)
        }

        waiting = set() if rerank else set(self._waiting)
        if not waiting:
            result = allocate(ranked)
        else:
            # Hysteresis: a waiting port is tried with its minimum plus a margin, and resumes
            # only once that has fit for the whole hold time.
            trial = dict(ranked)
            for p in waiting:
                r = ranked[p]
                floor = _with_margin(r.min_a, s.resume_margin_a, (caps or {}).get(p))
                trial[p] = dataclasses.replace(r, min_a=floor, want_a=max(r.want_a, floor))
            tried = allocate(trial)
            ready: set[str] = set()
            for p in sorted(waiting):
                if tried.amps.get(p, 0.0) > 0.0:
                    since = self._hold_since.setdefault(p, now)
                    if now - since >= s.resume_hold_s:
                        ready.add(p)
                else:
                    self._hold_since.pop(p, None)
            final = {p: r for p, r in ranked.items() if p not in waiting or p in ready}
            result = allocate(final)

        paused = {p for p in requests if result.amps.get(p, 0.0) <= 0.0 and requests[p].want_a > 0}
        self._waiting = paused
        for p in [p for p in self._hold_since if p not in paused or rerank]:
            del self._hold_since[p]
        if not paused:
            self._next_rerank = None
        elif rerank:
            self._next_rerank = now + s.period_s
        return result

    def _fresh_key(
        self, pid: str, requests: Mapping[str, PortRequest], fcfs: bool
    ) -> tuple[float, float, str]:
        served = 0.0 if fcfs else self.served.get(pid, 0.0)
        return (served, requests[pid].since, pid)


def _with_margin(floor: float, margin: float, cap: float | None) -> float:
    """A resume floor: the minimum plus the margin, but never above the port's cap."""
    if cap is None:
        return floor + margin
    return min(floor + margin, max(cap, floor))


@dataclass(slots=True)
class Leftover:
    """Ports that only hold their minimum (finished, or in B by choice): each gets it if it
    fits beside what the charging ports got, in session order, with resume hysteresis."""

    settings: RotationSettings = field(default_factory=RotationSettings)
    _hold_since: dict[str, float] = field(default_factory=dict)
    _on: set[str] = field(default_factory=set)  # given their minimum on the last tick

    def admit(
        self,
        now: float,
        ports: Sequence[tuple[str, float]],
        base: Mapping[str, float],
        fits: Callable[[Mapping[str, float]], bool],
        *,
        offered: Mapping[str, bool],
        caps: Mapping[str, float],
    ) -> dict[str, float]:
        """``ports``: (id, minimum) in admission order; ``base``: the charging ports' amps;
        ``offered``: whether each port has an offer now. A port offered now, or given its
        minimum here last tick (its offer may still wait in sequencing), keeps it while it
        fits, without margin or hold. Returns the amps given to ``ports`` (0.0: paused)."""
        s = self.settings
        amps = dict(base)
        out: dict[str, float] = {}
        seen: set[str] = set()
        for pid, floor in ports:
            seen.add(pid)
            out[pid] = 0.0
            if offered.get(pid, False) or pid in self._on:
                if fits({**amps, pid: floor}):
                    amps[pid] = out[pid] = floor
                self._hold_since.pop(pid, None)
                continue
            need = _with_margin(floor, s.resume_margin_a, caps.get(pid))
            if not fits({**amps, pid: need}):
                self._hold_since.pop(pid, None)
                continue
            since = self._hold_since.setdefault(pid, now)
            if now - since >= s.resume_hold_s:
                amps[pid] = out[pid] = floor
                del self._hold_since[pid]
        for gone in [p for p in self._hold_since if p not in seen]:
            del self._hold_since[gone]
        self._on = {p for p, a in out.items() if a > 0.0}
        return out

    def reset(self) -> None:
        self._hold_since.clear()
        self._on.clear()

    def deadline(self, after: float) -> float | None:
        due = [t + self.settings.resume_hold_s for t in self._hold_since.values()]
        due = [t for t in due if t > after]
        return min(due) if due else None


@dataclass(frozen=True, slots=True)
class WakeSettings:
    """Wake-up of legacy vehicles that do not resume after a pause (EVerest-style), each
    default with its reason."""

    # A vehicle closes S2 (B -> C) about 1 s after PWM appears (hal.sim.ev HANDSHAKE_S);
    # 30 s without it, many times that, is a vehicle that did not wake.
    timeout_s: float = 30.0
    # PWM off (+12 V steady, "not available") for 3 s: long enough for every pilot decoder to
    # see the state change, short enough that a vehicle that woke is not left waiting.
    off_s: float = 3.0
    # Three interruptions, then "not-responding" (its share goes to the others).
    attempts: int = 3
    # A not-responding vehicle is offered again after 30 min (or at once when it goes to C on
    # its own): a scheduled-charging car is then at most half an hour late.
    retry_s: float = 1800.0

    def __post_init__(self) -> None:
        if not (self.timeout_s > 0.0 and self.off_s > 0.0 and self.retry_s > 0.0):
            raise ValueError("timeout_s, off_s and retry_s must be > 0")
        if self.attempts < 0:
            raise ValueError("attempts must be >= 0")


@dataclass(slots=True)
class WakeUp:
    """Wake-up state of the vehicle on one port (one session)."""

    settings: WakeSettings = field(default_factory=WakeSettings)
    on_since: float | None = None  # PWM came on and the vehicle has not resumed since
    attempts: int = 0
    off_until: float | None = None  # a wake-up interruption runs until then
    not_responding_since: float | None = None
    _was_requesting: bool = False

    @property
    def watching(self) -> bool:
        """PWM came back on and the vehicle has not resumed yet."""
        return self.on_since is not None

    @property
    def not_responding(self) -> bool:
        return self.not_responding_since is not None

    @property
    def retrying(self) -> bool:
        """Offered again after it did not respond (its wake-up attempts are used up)."""
        return self.not_responding_since is None and self.attempts >= self.settings.attempts

    def interrupting(self, now: float) -> bool:
        """Whether PWM must be off now for a wake-up interruption."""
        return self.off_until is not None and now < self.off_until

    def observe(self, now: float, *, requesting: bool) -> None:
        """One tick of what the vehicle does. Going to C is resuming: it answered the pilot.
        A vehicle in C that then draws nothing is a demand matter (finished), not a wake-up
        one (`controller.demand`)."""
        s = self.settings
        went_to_c = requesting and not self._was_requesting
        self._was_requesting = requesting
        if self.not_responding_since is not None:
            if went_to_c:
                self.not_responding_since = None  # it asks on its own: offer again
                self.attempts = 0
            elif now >= self.not_responding_since + s.retry_s:
                self.not_responding_since = None  # one plain retry (attempts stay used up)
            return
        if self.off_until is not None:
            if now >= self.off_until:
                self.off_until = None  # PWM comes back on: the next edge restarts the timer
            return
        if requesting:
            self.on_since = None
            self.attempts = 0
            return
        if self.on_since is not None and now - self.on_since >= s.timeout_s:
            self.on_since = None
            if self.attempts < s.attempts:
                self.attempts += 1
                self.off_until = now + s.off_s
            else:
                self.not_responding_since = now

    def record_offer(self, now: float, previous: float, offer: float, *, requesting: bool) -> None:
        """The offer sent this tick: PWM coming on starts the resume timer, unless the vehicle
        is already in C (it asks; nothing to wake)."""
        if offer <= 0.0 or requesting:
            self.on_since = None
        elif previous <= 0.0:
            self.on_since = now

    def deadline(self) -> float | None:
        s = self.settings
        times = []
        if self.on_since is not None:
            times.append(self.on_since + s.timeout_s)
        if self.off_until is not None:
            times.append(self.off_until)
        if self.not_responding_since is not None:
            times.append(self.not_responding_since + s.retry_s)
        return min(times) if times else None
