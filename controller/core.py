"""The controller core: one tick of observations in, one safe decision out.

This module's one job is to put the pieces together in the right order on every tick, and to
own the tunables (`ControlSettings`). It is pure and synchronous (docs/design.md "Rules of the
house"): the time comes only from ``now``; the same calls give the same decisions.

One tick (`Controller.update`):

1. Sessions: a port that connects (or shows a new ``session_start``) starts fresh; one that
   is no longer connected is offered 0 (its last offer counts until its meter shows 0).
2. Learning, from the offer each vehicle has been seeing: what it takes
   (`controller.demand`), whether it answered PWM coming back on (`controller.rotation.WakeUp`),
   and whether it sits in state B by choice.
3. Targets. Link up: the charging ports (in C, or in B waiting to charge) ask
   (`controller.allocate.PortRequest`) for their learned want, and round robin
   (`controller.rotation.Rotation`) orders their admission; then the ports that only hold
   their minimum (finished, in B by choice) get it out of what is left
   (`controller.rotation.Leftover`). A not-responding vehicle asks for nothing. Link down:
   each connected port asks for its fallback level (`controller.fallback`). Either way
   `allocate` keeps every limit.
4. Sequencing (`controller.sequence`): decreases at once, increases only into headroom that
   exists under the effective offers, so the safe-offer invariant holds on every tick.
5. Timers are anchored at the tick an offer went out (not at the next reading), which is
   what makes `Controller.next_deadline` exact for a virtual-time runner.

What a port in state B is offered: its minimum (link up). It is plugged in and may go to C at
any moment, so it must see PWM (J1772: a vehicle waits for it) and its offer counts under every
limit like any other; the minimum is enough to start, and it ramps to its share once it asks.
A new plug-in, or a vehicle we paused (it leaves C when PWM stops, J1772), is charging for
round robin; one that left C while offered, or after it finished, is in B by choice and only
gets its minimum out of what the charging ones leave.

New limit values (`set_tree`) are used at once for allocation and for every increase. A limit
that went down is *reported* (``Decision.limits``) at its old value until the effective load
is under the new value or one offer window has passed: the decreases go out at once but
vehicles take up to that long to follow (docs/design.md "The safe-offer invariant").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.allocate import PortRequest, allocate
from controller.demand import DemandSettings, DemandTracker
from controller.fallback import fallback_level, fallback_requests
from controller.limits import LOAD_TOLERANCE, LimitTree
from controller.model import J1772_MIN_A, Decision, Policy, PortObservation
from controller.rotation import Leftover, Rotation, RotationSettings, WakeSettings, WakeUp
from controller.sequence import Sequencer
from hal.pilot import EV_RESPONSE_S

__all__ = ["ControlSettings", "Controller"]

_NOT_CONNECTED = PortObservation(connected=False)


@dataclass(frozen=True, slots=True)
class ControlSettings:
    """Every tunable of the controller: the sequencing ones here, and the demand-learning,
    rotation and wake-up settings objects, each of which holds its own defaults and the reason
    for each (`controller.demand.DemandSettings`, `controller.rotation.RotationSettings`,
    `controller.rotation.WakeSettings`)."""

    # docs/design.md "The safe-offer invariant": an EV may take up to 5 s to follow a lower
    # offer (SAE J1772).
    offer_window_s: float = EV_RESPONSE_S
    # A meter reading at most this far above a lowered offer shows the vehicle came down
    # (the spec's "small tolerance"): a class 1 meter reads within ~1 % (0.3 A at 32 A).
    # What it draws above the offer still counts as effective (controller.sequence), so the
    # tolerance never hides current; it only lets headroom be used before the 5 s are up.
    confirm_tolerance_a: float = 0.5
    demand: DemandSettings = field(default_factory=DemandSettings)
    rotation: RotationSettings = field(default_factory=RotationSettings)
    wake: WakeSettings = field(default_factory=WakeSettings)

    def __post_init__(self) -> None:
        if not self.offer_window_s >= 0.0:
            raise ValueError("offer_window_s must be >= 0")
        if not self.confirm_tolerance_a >= 0.0:
            raise ValueError("confirm_tolerance_a must be >= 0")
        # (The settings objects validate themselves.)


@dataclass(slots=True)
class _Session:
    """One vehicle's plug-in on one port."""

    start: float
    demand: DemandTracker
    wake: WakeUp
    standby: bool = False  # in B by choice: it left C while offered, or when finished
    requesting: bool = False  # on the previous tick

    @property
    def holds_minimum(self) -> bool:
        """Finished or in B by choice: it only holds its minimum, out of what is left."""
        return self.standby or self.demand.finished


@dataclass(slots=True)
class _HeldLimit:
    value: float  # the old, higher value still reported
    release_at: float | None = None  # set on the first tick after the change


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the sharing step wants, before sequencing."""

    targets: dict[str, float]
    wants: dict[str, float]  # per connected port: what it asked for
    binding: dict[str, str]  # allocate's reasons for the charging ports
    leftover: frozenset[str] = frozenset()  # ports that only hold their minimum


class Controller:
    """The allocation core of one station (or one site): `update` on every tick."""

    def __init__(self, tree: LimitTree, settings: ControlSettings = ControlSettings()) -> None:
        self._tree = tree
        self._settings = settings
        self._demand_settings = settings.demand
        self._wake_settings = settings.wake
        self._seq = Sequencer(settings.offer_window_s, settings.confirm_tolerance_a)
        self._rotation = Rotation(settings.rotation)
        self._leftover = Leftover(settings.rotation)
        self._sessions: dict[str, _Session] = {}
        self._held: dict[str, _HeldLimit] = {}
        self._now: float | None = None
        self._link_up = True

    @property
    def tree(self) -> LimitTree:
        return self._tree

    @property
    def settings(self) -> ControlSettings:
        return self._settings

    # --- limits -----------------------------------------------------------------------

    def set_tree(self, tree: LimitTree) -> None:
        """Use new limit values (time of use, site meter, remote limits) from the next tick.

        Same ports and limit ids as before. Raised limits apply at once; a lowered one is used
        at once for every new offer and reported at its old value until vehicles followed.
        """
        if set(tree.ports) != set(self._tree.ports):
            raise ValueError("set_tree: the new tree must have the same ports")
        if self._now is not None:
            old = self._reported_limits()
            for lid, value in tree.limits().items():
                before = old.get(lid)
                if before is not None and value < before:
                    self._held[lid] = _HeldLimit(before)
                else:
                    self._held.pop(lid, None)
        self._tree = tree

    def _reported_limits(self) -> dict[str, float]:
        limits = self._tree.limits()
        for lid, held in self._held.items():
            if lid in limits:
                limits[lid] = max(limits[lid], held.value)
        return limits

    # --- round robin ------------------------------------------------------------------

    def restart_round_robin(self) -> None:
        """Forget who waits and every resume hold (served accounts stay), so the next tick
        ranks afresh: what a link that returns starts from, and what a coordinator does when
        stations it held back come back to sharing."""
        self._rotation.reset()
        self._leftover.reset()

    # --- the tick ---------------------------------------------------------------------

    def update(
        self, now: float, observations: Mapping[str, PortObservation], *, link_up: bool = True
    ) -> Decision:
        """One tick: observations of the ports at ``now`` -> offers that are safe to send."""
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, not {now}")
        if self._now is not None and now < self._now:
            raise ValueError(f"time went backwards: {now} < {self._now}")
        tree = self._tree
        ports = tree.ports
        obs = {pid: observations.get(pid, _NOT_CONNECTED) for pid in ports}
        mins = {pid: max(p.min_a, J1772_MIN_A) for pid, p in ports.items()}

        self._track_sessions(now, obs)
        self._learn(now, obs, mins, link_up)
        if link_up != self._link_up:
            # Sharing stops or resumes from a clean slate (who waits, resume holds).
            self.restart_round_robin()
        self._link_up = link_up
        plan = self._share(now, obs, mins) if link_up else self._fallback()

        previous = {pid: self._seq.offer(pid) for pid in ports}
        metered = {pid: o.metered_a for pid, o in obs.items()}
        metered_at = {pid: o.metered_at for pid, o in obs.items()}
        result = self._seq.step(now, tree, plan.targets, metered, mins, metered_at)

        if link_up:
            for pid, s in self._sessions.items():
                # Only a vehicle expected to charge is watched for resuming.
                expect = pid not in plan.leftover
                offer = result.offers[pid] if expect else 0.0
                s.wake.record_offer(now, previous[pid], offer, requesting=obs[pid].requesting)
                s.demand.arm(
                    now,
                    requesting=obs[pid].requesting,
                    metered=obs[pid].metered_a,
                    offer=result.offers[pid],
                    effective=result.effective[pid],
                    min_a=mins[pid],
                )
        self._rotation.record(now, self._served_rates(obs, result.offers, result.effective))

        loads = tree.loads(result.effective)
        limits = self._release_held(now, loads)
        self._now = now
        return Decision(
            offers=result.offers,
            effective=result.effective,
            binding=self._bindings(now, link_up, plan, result.offers),
            loads=loads,
            limits=limits,
        )

    def next_deadline(self) -> float | None:
        """The earliest time `update` would decide differently with unchanged observations.

        Every timer the core keeps: superseded offers leaving the 5 s window, demand windows
        and probes, round-robin re-ranks and resume holds, wake-up timers, held limits.
        None: no timer is running.
        """
        now = self._now
        if now is None:
            return None
        times: list[float | None] = [self._seq.deadline(now)]
        times.extend(h.release_at for h in self._held.values())
        if self._link_up:
            times.append(self._rotation.deadline(now))
            times.append(self._leftover.deadline(now))
            for s in self._sessions.values():
                times.append(s.demand.deadline())
                times.append(s.wake.deadline())
        due = [t for t in times if t is not None and t > now]
        return min(due) if due else None

    # --- steps ------------------------------------------------------------------------

    def _track_sessions(self, now: float, obs: Mapping[str, PortObservation]) -> None:
        for pid, o in obs.items():
            s = self._sessions.get(pid)
            if not o.connected:
                if s is not None:
                    del self._sessions[pid]
                    self._rotation.forget(pid)
                continue
            start = o.session_start
            if s is not None and (start is None or start == s.start):
                continue
            self._rotation.forget(pid)
            self._sessions[pid] = _Session(
                start=now if start is None else start,
                demand=DemandTracker(self._demand_settings),
                wake=WakeUp(self._wake_settings),
            )

    def _learn(
        self,
        now: float,
        obs: Mapping[str, PortObservation],
        mins: Mapping[str, float],
        link_up: bool,
    ) -> None:
        for pid, s in self._sessions.items():
            o = obs[pid]
            offer = self._seq.offer(pid)  # what the vehicle has been seeing
            if o.requesting:
                s.standby = False
            elif s.requesting and (offer > 0.0 or s.demand.finished):
                # It left C while offered, or after it finished: its choice, not our pause
                # (a vehicle we pause leaves C too, J1772, and must rank as charging).
                s.standby = True
            s.requesting = o.requesting
            if not link_up:
                # Offline the level is fixed: nothing to learn, nobody to wake. Sharing
                # resumes from a clean slate when the link returns.
                s.demand = DemandTracker(self._demand_settings)
                s.wake = WakeUp(self._wake_settings)
                continue
            s.wake.observe(now, requesting=o.requesting)
            s.demand.observe(
                now,
                requesting=o.requesting,
                metered=o.metered_a,
                offer=offer,
                effective=self._seq.effective(pid, now),
                min_a=mins[pid],
            )

    def _share(
        self, now: float, obs: Mapping[str, PortObservation], mins: Mapping[str, float]
    ) -> _Plan:
        tree = self._tree
        ports = tree.ports
        caps = {pid: p.cap_a for pid, p in ports.items()}
        charging: dict[str, PortRequest] = {}
        holding: list[tuple[str, float]] = []
        wants: dict[str, float] = {}
        for pid, s in sorted(self._sessions.items(), key=lambda kv: (kv[1].start, kv[0])):
            floor = mins[pid]
            if caps[pid] < floor or s.wake.not_responding:
                continue
            if s.holds_minimum:
                holding.append((pid, floor))
                wants[pid] = floor
                continue
            # In B (new, or paused by us): its minimum, enough to start (module docstring).
            want = s.demand.want(caps[pid], floor) if obs[pid].requesting else floor
            charging[pid] = PortRequest(want_a=want, min_a=floor, since=s.start)
            wants[pid] = want
        policy = tree.spec.policy
        allocation = self._rotation.admit(
            now,
            charging,
            lambda r: allocate(tree, r, policy),
            fcfs=policy is Policy.FCFS,
            caps=caps,
            late={pid for pid, s in self._sessions.items() if s.wake.retrying},
        )
        targets = {pid: allocation.amps.get(pid, 0.0) for pid in ports}
        extra = self._leftover.admit(
            now,
            holding,
            {pid: a for pid, a in targets.items() if a > 0.0},
            tree.fits,
            offered={pid: self._seq.offer(pid) > 0.0 for pid, _ in holding},
            caps=caps,
        )
        targets.update(extra)
        for pid, s in self._sessions.items():
            if s.wake.interrupting(now):
                targets[pid] = 0.0  # wake-up: PWM off for a moment; its room stays reserved
        return _Plan(targets, wants, dict(allocation.binding), frozenset(extra))

    def _fallback(self) -> _Plan:
        tree = self._tree
        since = {pid: s.start for pid, s in self._sessions.items()}
        allocation = allocate(tree, fallback_requests(tree, since), tree.spec.policy)
        targets = {pid: allocation.amps.get(pid, 0.0) for pid in tree.ports}
        wants = {pid: fallback_level(tree.ports[pid]) for pid in since}
        return _Plan(targets, wants, dict(allocation.binding))

    def _served_rates(
        self,
        obs: Mapping[str, PortObservation],
        offers: Mapping[str, float],
        effective: Mapping[str, float],
    ) -> dict[str, float]:
        # What each vehicle gets from now on: its metered draw (never above what it may
        # take), or its offer when the meter is stale.
        rates: dict[str, float] = {}
        for pid in self._sessions:
            m = obs[pid].metered_a
            rates[pid] = offers[pid] if m is None else max(0.0, min(m, effective[pid]))
        return rates

    def _release_held(self, now: float, loads: Mapping[str, float]) -> dict[str, float]:
        limits = self._tree.limits()
        for lid in sorted(self._held):
            held = self._held[lid]
            if held.release_at is None:
                held.release_at = now + self._settings.offer_window_s
            new = limits.get(lid)
            fits = new is None or loads.get(lid, 0.0) <= new + LOAD_TOLERANCE
            if fits or now >= held.release_at:
                del self._held[lid]
        return self._reported_limits()

    def _bindings(
        self, now: float, link_up: bool, plan: _Plan, offers: Mapping[str, float]
    ) -> dict[str, str]:
        binding: dict[str, str] = {}
        ports = self._tree.ports
        for pid in ports:
            s = self._sessions.get(pid)
            target = plan.targets.get(pid, 0.0)
            want = plan.wants.get(pid, 0.0)
            if s is None:
                binding[pid] = "idle"
            elif offers[pid] < target:
                binding[pid] = "sequencing"
            elif not link_up:
                if want <= 0.0 or target >= want:
                    binding[pid] = "fallback"
                else:  # a local limit lowered since the config was checked holds it under
                    binding[pid] = plan.binding.get(pid, "paused")
            elif s.wake.not_responding:
                binding[pid] = "not-responding"
            elif pid in plan.leftover or s.holds_minimum:
                # It does not ask for more (finished, or in B by choice), offered or not.
                binding[pid] = "finished" if s.demand.finished else "demand"
            elif s.wake.interrupting(now) or target <= 0.0:
                binding[pid] = "paused"
            elif target >= want and want < ports[pid].cap_a:
                binding[pid] = "demand"
            else:
                binding[pid] = plan.binding.get(pid, "port")
        return binding
