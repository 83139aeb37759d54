"""Allocation: a limit tree and what each port asks for -> amperes per port.

This module's one job is to split the room under every limit (breaker conductors, panel
phases, site kW; `controller.limits`) between the ports that want current, by a sharing
policy (the guide, "Available Power Sharing Algorithms" and "Sharing Policy"):

1. Admission (equal and proportional). A port whose request has a floor (``min_a`` > 0: the
   port gets 0 or at least that much; J1772's pilot cannot offer under 6 A) is admitted in
   order of ``priority`` (then ``since``, then port id) if every port admitted so far can
   still get its floor at the same time under every limit; the others get 0 and are
   "paused" (the guide, "Equal Charge Policy": round robin keeps vehicles at 8 A or more; the
   rotation layer lowers a waiting port's priority number so that it is admitted next).
   A port that does not fit is skipped, not a stop: a later port elsewhere may still fit.
2. Filling, between each admitted port's floor and ``min(want_a, cap)``:

   * EQUAL: lexicographic max-min fairness by progressive filling (docs/design.md "Electrical
     rules"; the guide, "Power Sharing Jumper": 50/50, and what one vehicle cannot take goes
     to the other). A common level rises; each port follows it between its floor and its
     ceiling; when a limit becomes full, the ports under it that are still rising stop
     there, and the others rise on.
   * PROPORTIONAL: the same with each port's level scaled by its rated power (``rated_kw``,
     default cap x voltage), so throttled ports keep their rated ratio (the guide's 40 kW
     DC / 10 kW AC example at 25 kW: 20 / 5 kW).
   * FCFS: in order of ``since``, each port gets all it can under every limit given the ports
     before it; the floor reserves nothing (the guide: "The Minimum Power Level does not
     apply to First Come, First Served"), but a port whose share is under its floor gets 0
     and is paused, since a pilot cannot offer it.

3. Rounding. Currents are floored to the 0.1 A grid (`PILOT_STEP_A`), so rounding never
   overshoots a limit; then 0.1 A steps go, one at a time, to the lowest port that can still
   take one under every limit, until none can: nothing the pilot could offer is left unused.
   So EQUAL gives the continuous max-min fair solution to within the grid: a port short of
   its ceiling sits under a limit that is full to within a step per port, where nobody has
   more than a step above it (ports held at their floor aside). Exact lexicographic
   optimality on the grid is an integer problem this does not solve: a port on a line's
   phasor costs that line 0.1 A a step, one 30 degrees off only 0.087 A, so the grid may
   leave a port a step short of what an exchange would give it. A last check lowers a port
   if floating error ever left a limit above its value by more than
   `controller.limits.LOAD_TOLERANCE`.

How the filling is computed: between two events every rising port's current is linear in
the level t, so each line phasor (and each kW sum) is ``a + b*t`` with a and b kept per row,
and the level at which a row becomes full is the root of a quadratic. Events (a port
reaching its floor or its ceiling, a row becoming full) are taken in order from a sorted list
and a heap; a port's change touches only its own rows. A row's entry in the heap may be
early (a port under it stopped since, so it fills later): it is recomputed when it comes
up, which is cheap and never late. The result is deterministic: ports are handled in sorted
id order, whatever the order of ``requests``.

Size: one algorithm (progressive filling with minimum-current admission, and its three
policies); its phases share one set of working arrays and split apart would pass them around.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass
from operator import ge, sub
from typing import NoReturn

from controller.limits import LOAD_TOLERANCE, LimitTree, max_step
from controller.model import J1772_MIN_A, Policy

__all__ = [
    "PILOT_STEP_A",
    "Allocation",
    "PortRequest",
    "allocate",
    "fits",
]

# Offers are on a 0.1 A grid, the resolution the station loop works in. The PWM's 0.1 % duty
# steps (IEC 61851-1 Table A.7) resolve 0.06 A below 51 A but only 0.25 A above; hal.pilot
# rounds a duty down, so the EV never reads more than the offer.
PILOT_STEP_A = 0.1
_STEPS_PER_A = 10  # 1 / PILOT_STEP_A, exact
# Float noise allowed when flooring to the 0.1 A grid: 8.0 * 10 may come out as 79.99999...
_GRID_EPS = 1e-9
# A 0.1 A top-up must fit with this much to spare below LOAD_TOLERANCE, so that the final
# loads, summed afresh in another order, still pass the LOAD_TOLERANCE check.
_TOPUP_TOL = 1e-10

# |b|^2 under this is a float residue of ports that stopped rising, not a slope: with weights
# normalised to >= 1 and coefficients >= 1e-3 (1 V ports), a real slope is far above it.
_SLOPE_EPS = 1e-12

_INF = math.inf
# Why a port stopped rising (negative codes; >= 0 is the row that became full).
_AT_CEILING = -1
_NOT_ADMITTED = -2
_NO_REQUEST = -3

# Port states during the filling.
_DONE = 0  # frozen, not admitted or not requested
_BELOW = 1  # held at its floor until the level reaches it
_RISING = 2


@dataclass(frozen=True, slots=True)
class PortRequest:
    """What one port asks for now.

    ``want_a``: the most to give this port now (its cap applies on top; the demand learner
    lowers it to what the vehicle really takes). 0 asks for nothing.
    ``min_a``: all-or-nothing floor: the port gets 0 or at least this (otherwise >= 6 A,
    J1772). 0 means no floor at all, so the port may get any current, under 6 A too: a pilot
    cannot offer that, so a charging port should always carry its floor. A floor above
    ``want_a`` wins: an admitted port is offered its floor (pausing a vehicle that draws
    little would stop it).
    ``priority``: admission order when not all floors fit: lower first.
    ``since``: session start, for FCFS and to break ties.
    """

    want_a: float
    min_a: float = 0.0
    priority: float = 0.0
    since: float = 0.0


@dataclass(frozen=True, slots=True)
class Allocation:
    """The result of `allocate`.

    ``amps``: every requested port; 0.0 = not admitted (paused) or nothing wanted.
    ``binding``: per requested port, what stops it: the limit id that became full above it
    (``"c1"``, ``"panel:L2"``, ``"site:kW"``), ``"port"`` (its cap), ``"demand"`` (its want,
    or it wants nothing) or ``"paused"``.
    ``loads``: per limit id of the tree, its load under ``amps``. ``limits``: per limit id,
    its value. ``paused``: the requested ports that got 0 for lack of room.
    """

    amps: dict[str, float]
    binding: dict[str, str]
    loads: dict[str, float]
    limits: dict[str, float]
    paused: frozenset[str]


def fits(tree: LimitTree, amps: Mapping[str, float], tol: float = LOAD_TOLERANCE) -> bool:
    """Whether ports at ``amps`` keep every limit of ``tree`` (within ``tol``).

    For the sequencing layer: e.g. the effective offers of the last 5 s with one increase
    applied. Port caps are not checked; ports not named draw nothing.
    """
    return tree.fits(amps, tol)


def _grid_floor(a: float) -> float:
    return math.floor(a * _STEPS_PER_A + _GRID_EPS) / _STEPS_PER_A


def allocate(
    tree: LimitTree, requests: Mapping[str, PortRequest], policy: Policy = Policy.EQUAL
) -> Allocation:
    """Share the room under every limit of ``tree`` between the requesting ports.

    Ports not in ``requests`` are idle (0 A, and absent from the result). Raises ValueError
    for an unknown port id, a negative or NaN ``want_a``, a ``min_a`` that is not 0 and not
    between 6 A and the port's cap, or a NaN ``priority`` / ``since``.
    """
    n = len(tree._port_ids)
    index = tree._index
    caps = tree._caps
    lo = [0.0] * n  # floor, on the 0.1 A grid (rounded up)
    hi = [0.0] * n  # ceiling, on the 0.1 A grid (rounded down), >= lo
    req_of: dict[int, PortRequest] = {}
    requested: list[int] = []
    floor, ceil = math.floor, math.ceil
    for pid, req in requests.items():
        i = index.get(pid)
        want = req.want_a
        m = req.min_a
        if (
            i is None
            or not want >= 0.0  # NaN too
            or (m != 0.0 and not J1772_MIN_A <= m <= caps[i])
            or req.priority != req.priority  # NaN
            or req.since != req.since
        ):
            _refuse(tree, pid, req)
        req_of[i] = req
        if want > 0.0:
            cap = caps[i]
            top = floor((want if want < cap else cap) * _STEPS_PER_A + _GRID_EPS) / _STEPS_PER_A
            f = ceil(m * _STEPS_PER_A - _GRID_EPS) / _STEPS_PER_A if m else 0.0
            lo[i] = f
            hi[i] = top if top > f else f
            requested.append(i)
    requested.sort()

    x = [0.0] * n
    why = [_NO_REQUEST] * n
    for i in requested:
        why[i] = _NOT_ADMITTED
    if policy is Policy.FCFS:
        acc = _fcfs(tree, requested, req_of, lo, hi, x, why)
    else:
        admitted, at_floors = _admit(tree, requested, req_of, lo)
        w = _rated_weights(tree, admitted) if policy is Policy.PROPORTIONAL else [1.0] * n
        equal = policy is Policy.EQUAL
        acc = _fill(tree, admitted, lo, hi, w, x, why, at_floors, equal)
        acc = _round(tree, admitted, hi, w, x, why, acc, equal)
    return _result(tree, req_of, lo, x, why, acc)


def _refuse(tree: LimitTree, pid: str, req: PortRequest) -> NoReturn:
    """Raise the ValueError that says what is wrong with one request."""
    if pid not in tree._index:
        raise ValueError(f"request for unknown port {pid!r}")
    if not req.want_a >= 0.0:
        raise ValueError(f"port {pid!r}: want_a must be >= 0, not {req.want_a}")
    if math.isnan(req.priority) or math.isnan(req.since):
        raise ValueError(f"port {pid!r}: priority and since must not be NaN")
    cap = tree._caps[tree._index[pid]]
    raise ValueError(
        f"port {pid!r}: min_a must be 0 or between {J1772_MIN_A:g} A (J1772) and its cap "
        f"{cap:g} A, not {req.min_a}"
    )


def _rated_weights(tree: LimitTree, admitted: list[int]) -> list[float]:
    """PROPORTIONAL: each port's rated power in amperes, scaled so the smallest is 1."""
    w = [1.0] * len(tree._port_ids)
    ports = tree._ports
    ids = tree._port_ids
    kw_per_a = tree._kw_per_a
    for i in admitted:
        p = ports[ids[i]]
        # The guide, "Sharing Policy": rated power is the most the charger can deliver as
        # installed; by default its cap (Power Select included) at its voltage.
        w[i] = p.rated_kw / kw_per_a[i] if p.rated_kw is not None else p.cap_a
    smallest = min((w[i] for i in admitted), default=1.0)
    for i in admitted:
        w[i] /= smallest
    return w


def _admit(
    tree: LimitTree, requested: list[int], req_of: dict[int, PortRequest], lo: list[float]
) -> tuple[list[int], list[complex]]:
    """The ports admitted with their floors, and the rows' phasors with them at their floors."""
    limit = tree._row_limit
    sums = tree._row_sums(lo)  # lo is 0 for the ports not requested
    if _all_fit(sums, limit, _TOPUP_TOL):
        return requested, sums  # the common case: every floor fits at once
    ids = tree._port_ids
    order = sorted(requested, key=lambda i: (req_of[i].priority, req_of[i].since, ids[i]))
    acc = [0j] * len(limit)
    admitted = []
    port_rows = tree._port_rows
    for i in order:
        f = lo[i]
        if f > 0.0:
            rows = port_rows[i]
            if any(abs(acc[r] + c * f) > limit[r] + _TOPUP_TOL for r, c in rows):
                continue
            for r, c in rows:
                acc[r] += c * f
        admitted.append(i)
    admitted.sort()
    return admitted, acc


def _all_fit(sums: list[complex], limit: list[float], tol: float) -> bool:
    """Whether every row's |phasor| is within ``tol`` of its limit (in C: map, not a loop)."""
    return max(map(sub, map(abs, sums), limit), default=0.0) <= tol


def _crossing(a: complex, b: complex, limit: float) -> float:
    """The level t at which ``|a + b*t|`` reaches ``limit`` (inf if it does not grow)."""
    bb = b.real * b.real + b.imag * b.imag
    if bb <= _SLOPE_EPS:
        return _INF
    ab = a.real * b.real + a.imag * b.imag
    q = a.real * a.real + a.imag * a.imag - limit * limit
    if q >= 0.0:
        return 0.0
    # Positive root of bb t^2 + 2 ab t + q = 0, cancellation-free (ab >= 0, q < 0).
    return -q / (ab + math.sqrt(ab * ab - bb * q))


def _fill(
    tree: LimitTree,
    admitted: list[int],
    lo: list[float],
    hi: list[float],
    w: list[float],
    x: list[float],
    why: list[int],
    at_floors: list[complex],
    equal: bool,
) -> list[complex]:
    """Weighted progressive filling: port i follows clamp(w[i]*t, lo[i], hi[i]) until frozen.

    A port stopped by a full row gets its level floored to the 0.1 A grid in ``x`` (floors and
    ceilings are on the grid already), while the rows go on with the exact level: what
    flooring frees is not handed to the ports still rising, who have more already; `_round`
    gives it to the lowest. Writes each admitted port's current into ``x`` and the reason it
    stopped into ``why``; returns the rows' phasors at ``x``. ``at_floors``: the rows'
    phasors with the admitted ports at their floors; ``equal``: every weight is 1.
    """
    port_rows = tree._port_rows
    row_members = tree._row_members
    limit = tree._row_limit
    nrows = len(limit)
    n = len(x)

    state = [_DONE] * n
    top = [0.0] * n  # every admitted port at its ceiling
    movable = []
    for i in admitted:
        f = lo[i]
        h = hi[i]
        x[i] = f
        if f >= h:
            why[i] = _AT_CEILING  # floor == ceiling: nothing to share
            top[i] = f
        else:
            movable.append(i)
            top[i] = h
    if not movable:
        return at_floors
    # A row that holds with every port at its ceiling can never fill: no heap entry. When
    # no row can fill, every port simply gets its ceiling (an unloaded site).
    at_top = tree._row_sums(top)
    live = list(map(_TOPUP_TOL.__lt__, map(sub, map(abs, at_top), limit)))  # over the limit
    if not any(live):
        for i in movable:
            x[i] = hi[i]
            why[i] = _AT_CEILING
        return at_top
    # Level at which each movable port starts rising (reaches its floor) and stops (reaches
    # its ceiling): for equal weights, the floor and ceiling themselves.
    if equal:
        rise, stop = lo, hi
    else:
        rise = [0.0] * n
        stop = [0.0] * n
        for i in movable:
            rise[i] = lo[i] / w[i]
            stop[i] = hi[i] / w[i]
    t0 = min(map(rise.__getitem__, movable))
    # Nothing rises below t0, so nothing can fill there: start at t0 with the ports whose
    # floor t0 reaches already rising (all of them, with equal floors and weights).
    slope = [0.0] * n
    starts = []
    for i in movable:
        if rise[i] == t0:
            state[i] = _RISING
            slope[i] = w[i]
        else:
            state[i] = _BELOW
            starts.append(i)
    # Row phasors a + b*t: b sums the rising ports' c*w, a the others' c*x.
    n_fixed = len(admitted) - len(movable)
    # (Adding up the few fixed ports port by port is cheaper than a pass over every row.)
    if not starts and t0 > 0.0 and n_fixed * 8 < nrows:
        # All movable ports rise together from their floors, c*w*t0 each, so the rows'
        # slope is (at_floors - fixed ports) / t0: no pass over every row's members.
        a = [0j] * nrows
        if n_fixed:
            for i in admitted:
                if state[i] == _DONE:
                    f = lo[i]
                    for r, c in port_rows[i]:
                        a[r] += c * f
        inv = 1.0 / t0
        b = [(s - d) * inv for s, d in zip(at_floors, a, strict=True)]
    else:
        b = tree._row_sums(slope)
        a = [s - t0 * d for s, d in zip(at_floors, b, strict=True)]
    starts.sort(key=rise.__getitem__)  # stable: ties in port index order
    stops = sorted(movable, key=stop.__getitem__)
    ns, ne = len(starts), len(stops)
    si = ei = 0

    done_row = [False] * nrows
    due = [_INF] * nrows  # the level of each row's live heap entry
    heap: list[tuple[float, int]] = []
    sqrt = math.sqrt
    for r in range(nrows):
        if not live[r]:
            done_row[r] = True  # never fills: its entries are never made or looked at
            continue
        br = b[r]  # _crossing, inlined: this loop runs once per row
        bb = br.real * br.real + br.imag * br.imag
        if bb <= _SLOPE_EPS:
            continue
        ar = a[r]
        q = ar.real * ar.real + ar.imag * ar.imag - limit[r] * limit[r]
        if q >= 0.0:
            t_r = t0
        else:
            ab = ar.real * br.real + ar.imag * br.imag
            t_r = -q / (ab + sqrt(ab * ab - bb * q))
            if t_r < t0:
                t_r = t0
        due[r] = t_r
        heap.append((t_r, r))
    heapq.heapify(heap)

    heappop, heappush = heapq.heappop, heapq.heappush
    floor = math.floor
    cut = [0j] * nrows  # per row: what flooring took off the frozen ports' exact levels
    t = t0
    while True:
        while heap and heap[0][0] != due[heap[0][1]]:
            heappop(heap)  # superseded entries
        t_row = heap[0][0] if heap else _INF
        t_start = rise[starts[si]] if si < ns else _INF
        t_stop = stop[stops[ei]] if ei < ne else _INF
        t_event = t_start if t_start < t_stop else t_stop
        if t_event <= t_row:
            if t_event == _INF:
                # Every port is frozen: a holds the rows' phasors at the exact levels.
                return [p - q for p, q in zip(a, cut, strict=True)]
            if t_event > t:
                t = t_event
            if t_start == t_event:  # ports reaching their floor start rising
                dirty = set()
                while si < ns and rise[starts[si]] == t_start:
                    i = starts[si]
                    si += 1
                    if state[i] != _BELOW:
                        continue
                    state[i] = _RISING
                    f, wi = lo[i], w[i]
                    for r, c in port_rows[i]:
                        a[r] -= c * f
                        b[r] += c * wi
                        dirty.add(r)
                for r in sorted(dirty):  # these rows now fill earlier: new entries
                    if not done_row[r]:
                        t_r = _crossing(a[r], b[r], limit[r])
                        if t_r < due[r]:
                            t_r = max(t_r, t)
                            due[r] = t_r
                            heappush(heap, (t_r, r))
            else:  # ports reaching their ceiling stop; their rows fill later (lazy)
                while ei < ne and stop[stops[ei]] == t_stop:
                    i = stops[ei]
                    ei += 1
                    if state[i] != _RISING:
                        continue
                    state[i] = _DONE
                    level, wi = hi[i], w[i]
                    x[i] = level
                    why[i] = _AT_CEILING
                    for r, c in port_rows[i]:
                        a[r] += c * level
                        b[r] -= c * wi
            continue
        r = heappop(heap)[1]
        # _crossing(a[r], b[r], limit[r]), inlined: this runs for every entry that comes up.
        ar, br, lim = a[r], b[r], limit[r]
        bb = br.real * br.real + br.imag * br.imag
        if bb <= _SLOPE_EPS:
            due[r] = _INF  # nothing rises under it now: a start would queue it again
            continue
        q = ar.real * ar.real + ar.imag * ar.imag - lim * lim
        if q < 0.0:
            ab = ar.real * br.real + ar.imag * br.imag
            t_r = -q / (ab + sqrt(ab * ab - bb * q))
            if t_r > t_row:  # it fills later than its entry said: requeue
                due[r] = t_r
                heappush(heap, (t_r, r))
                continue
        # Row r is full at level t: every port under it that can still move stops here.
        if t_row > t:
            t = t_row
        done_row[r] = True
        due[r] = _INF
        for i in row_members[r]:
            s = state[i]
            if s == _RISING:
                state[i] = _DONE
                wi = w[i]
                level = wi * t
                if level > hi[i]:  # float noise only: the port would have stopped already
                    level = hi[i]
                elif level < lo[i]:
                    level = lo[i]
                on_grid = floor(level * _STEPS_PER_A + _GRID_EPS) / _STEPS_PER_A
                x[i] = on_grid
                why[i] = r
                d = level - on_grid
                if d:
                    for r2, c in port_rows[i]:
                        a[r2] += c * level
                        b[r2] -= c * wi
                        cut[r2] += c * d
                else:
                    for r2, c in port_rows[i]:
                        a[r2] += c * level
                        b[r2] -= c * wi
            elif s == _BELOW:
                state[i] = _DONE  # held at its floor, which is already in the rows
                why[i] = r


def _round(
    tree: LimitTree,
    admitted: list[int],
    hi: list[float],
    w: list[float],
    x: list[float],
    why: list[int],
    acc: list[complex],
    equal: bool,
) -> list[complex]:
    """Top up by 0.1 A steps, lowest level first, while every row still holds.

    ``x`` is on the 0.1 A grid already (`_fill`), ``acc`` the rows' phasors at ``x``;
    returns them at the final currents.
    """
    limit = tree._row_limit
    cmin = tree._row_cmin
    step = PILOT_STEP_A
    # A row with less room than the cheapest step of any port under it is closed: on a line
    # every phasor lies within 60 degrees of every other, so a step costs at least half of
    # step x |c|.
    open_row = list(map(ge, map(sub, limit, map(abs, acc)), map((0.5 * step).__mul__, cmin)))
    # Only a port stopped by a full row can be below its ceiling; if that row is closed, no
    # step fits.
    candidates = [i for i in admitted if why[i] >= 0 and open_row[why[i]] and x[i] < hi[i]]
    # Discrete progressive filling: the next 0.1 A always goes to the lowest port (by level,
    # then port id) that can still take it; a port that cannot never can later (rows only
    # fill up), so it drops out. The candidates are taken in sorted order; the few that got
    # a step wait in a heap with their new level.
    key = x if equal else [x[i] / w[i] if w[i] else 0.0 for i in range(len(x))]
    candidates.sort(key=key.__getitem__)  # stable: ties stay in port id order
    raised: list[tuple[float, int]] = []
    heappop, heappush = heapq.heappop, heapq.heappush
    port_rows = tree._port_rows
    tol = _TOPUP_TOL
    k, nc = 0, len(candidates)
    while True:
        if raised and (k == nc or raised[0] < (key[candidates[k]], candidates[k])):
            i = heappop(raised)[1]
        elif k < nc:
            i = candidates[k]
            k += 1
        else:
            break
        rows = port_rows[i]
        for r, c in rows:
            if abs(acc[r] + c * step) > limit[r] + tol:
                break
        else:
            for r, c in rows:
                acc[r] += c * step
            v = round(x[i] + step, 1)
            x[i] = v
            if v < hi[i]:
                heappush(raised, (v if equal else v / w[i], i))
    return acc


def _fcfs(
    tree: LimitTree,
    requested: list[int],
    req_of: dict[int, PortRequest],
    lo: list[float],
    hi: list[float],
    x: list[float],
    why: list[int],
) -> list[complex]:
    """First come, first served: in session order, each port takes all it can.

    Returns the rows' phasors at the final currents.
    """
    ids = tree._port_ids
    limit = tree._row_limit
    port_rows = tree._port_rows
    acc = [0j] * len(limit)
    order = sorted(requested, key=lambda i: (req_of[i].since, req_of[i].priority, ids[i]))
    for i in order:
        rows = port_rows[i]
        best, reason = hi[i], _AT_CEILING
        for r, c in rows:
            y = max_step(acc[r], c, limit[r])
            if y < best:
                best, reason = y, r
        level = _grid_floor(best)
        # Floating error in the root must not overshoot: step down until every row agrees.
        while level > 0.0 and any(abs(acc[r] + c * level) > limit[r] + _TOPUP_TOL for r, c in rows):
            level = round(level - PILOT_STEP_A, 1)
        if level <= 0.0 or level < lo[i]:
            # A pilot cannot offer less than the floor: wait (the guide: under FCFS "later
            # vehicles will be put into a waiting period").
            why[i] = _NOT_ADMITTED if lo[i] > 0.0 else reason
            continue
        x[i] = level
        why[i] = reason if level < hi[i] else _AT_CEILING
        for r, c in rows:
            acc[r] += c * level
    return acc


def _result(
    tree: LimitTree,
    req_of: dict[int, PortRequest],
    lo: list[float],
    x: list[float],
    why: list[int],
    acc: list[complex],
) -> Allocation:
    ids = tree._port_ids
    caps = tree._caps
    limit = tree._row_limit
    row_name = tree._row_names

    # Last line of defence, never expected to act: a row above its limit by more than the
    # tolerance loses 0.1 A from its largest port, or that port entirely below its floor.
    tol = LOAD_TOLERANCE
    row_loads = list(map(abs, acc))
    if not _all_fit(acc, limit, tol):
        for r, members in enumerate(tree._row_members):
            while abs(acc[r]) > limit[r] + tol:
                i = max(members, key=lambda j: (x[j], j))
                if x[i] <= 0.0:
                    break  # nothing left to lower: only float noise can remain
                new = round(x[i] - PILOT_STEP_A, 1)
                if new < lo[i] or new <= 0.0:
                    new = 0.0
                    why[i] = _NOT_ADMITTED
                else:
                    why[i] = r
                for r2, c in tree._port_rows[i]:
                    acc[r2] += c * (new - x[i])
                x[i] = new
        row_loads = [abs(s) for s in acc]

    order = sorted(req_of)
    amps = {ids[i]: x[i] for i in order}
    # Its cap ("port"), unless the vehicle wants less, or less than its floor and is offered
    # the floor ("demand"); "demand" too when it wants nothing.
    binding = {
        ids[i]: row_name[r]
        if (r := why[i]) >= 0
        else ("port" if req_of[i].want_a >= caps[i] else "demand")
        if r == _AT_CEILING
        else "paused"
        if r == _NOT_ADMITTED
        else "demand"
        for i in order
    }
    paused = frozenset(ids[i] for i in order if why[i] == _NOT_ADMITTED)
    loads = tree._limit_loads(row_loads)
    return Allocation(
        amps=amps,
        binding=binding,
        loads=dict(zip(tree._limit_ids, loads, strict=True)),
        limits=tree.limits(),
        paused=paused,
    )
