"""A simulated electric vehicle behind a J1772 plug (being completed: EvSpec is final).

What lags is the vehicle's view of the EVSE: the PWM offer and the contactor (SAE J1772 and
IEC 61851-1 Annex A: the vehicle follows a change of the offered current within 5 s). Its own
charger limit, the taper of a nearly full battery, applies at once: the battery management
lowers its current by itself and has nothing to wait for.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EvSpec:
    """One plug-in of a simulated vehicle: who it is and when it comes and goes.

    ``port`` is the station port id (``"1"``) or a site's port id. Times are seconds from the
    start of the run. ``response_s`` is how long the vehicle takes to follow a PWM change
    (<= 5 s complies with J1772; more is a non-compliant vehicle). ``min_a``: offered less
    than this, the vehicle draws nothing. ``wakes``: False for a vehicle that does not resume
    after a pause. ``overdraw_a``: draws this much more than offered (a faulty vehicle).
    ``id_tag``: the RFID tag its driver presents on arrival (a station in ``mode: tags``).
    """

    port: str
    arrive_s: float = 0.0
    leave_s: float | None = None
    max_a: float = 32.0
    phases: int = 1
    battery_kwh: float = 60.0
    soc: float = 0.2
    target_soc: float = 0.9
    response_s: float = 2.0
    min_a: float = 6.0
    wakes: bool = True
    overdraw_a: float = 0.0
    id_tag: str | None = None


# Where a typical lithium-ion pack starts to taper its charge current (constant-current to
# constant-voltage transition); an on-board charger's draw falls roughly linearly from there.
TAPER_START_SOC = 0.8
# The floor of the taper as a fraction of the on-board charger's maximum.
TAPER_FLOOR = 0.1
# Charger and battery losses: energy into the pack per energy metered at the port.
CHARGE_EFFICIENCY = 0.9
# An EV's battery management re-evaluates its current this often while tapering.
TAPER_UPDATE_S = 30.0
# State of charge closer than this to a threshold counts as reached. Without it a time-to-
# threshold can become smaller than the clock's resolution late in a long run, and the
# simulated time would stop advancing.
SOC_EPSILON = 1e-9
# Time from seeing PWM to closing S2 (B -> C); J1772 leaves it to the vehicle, cars take ~1 s.
HANDSHAKE_S = 1.0


class SimEv:
    """The behaviour of one plugged-in vehicle: what it draws and which pilot state it shows.

    Pure apart from its own state: the bus tells it what the EVSE is doing and the time, and
    asks it when it will next change by itself.
    """

    def __init__(self, spec: EvSpec, voltage_v: float) -> None:
        self.spec = spec
        self.voltage_v = voltage_v
        self.soc = spec.soc
        self.in_c = False  # S2 closed: the vehicle asks for energy
        self.draw_a = 0.0  # current drawn now (piecewise constant)
        self.overdraw_a = spec.overdraw_a
        self.paused_once = False  # saw PWM go off while asking (for vehicles that do not wake)
        # Lagged changes of what the EVSE allows, (at, allowance) in time order: the vehicle
        # follows each change of the offer or of the contactor response_s after that change,
        # so a second change does not postpone the first (J1772: follow within 5 s of every
        # change; a delay line, not a restarted timer). Only the EVSE's changes go in: fed with
        # the taper's drift, which moves at every event, the line would grow by an entry per
        # event and every entry would become an event of the whole bus (71c84b6).
        self._pending: deque[tuple[float, float]] = deque()
        # The allowance the vehicle follows now: the last one that came out of the line.
        self._allowed = 0.0
        self._c_at: float | None = None  # when S2 closes after a handshake
        self._b_at: float | None = None  # when S2 opens after PWM went off
        self._taper_at: float | None = None

    # --- what the vehicle wants -------------------------------------------------------

    @property
    def wants_energy(self) -> bool:
        return self.soc < self.spec.target_soc - SOC_EPSILON

    def charger_limit_a(self) -> float:
        """The on-board charger's limit at the present state of charge (taper near full)."""
        if self.soc <= TAPER_START_SOC:
            return self.spec.max_a
        frac = (1.0 - self.soc) / (1.0 - TAPER_START_SOC)
        return self.spec.max_a * max(TAPER_FLOOR, frac)

    def allowance(self, offer_a: float, energised: bool) -> float:
        """What the vehicle settles on for this offer before its own taper (amps per phase).

        It depends on the EVSE's offer and contactor and on the vehicle's discrete states (S2
        closed, still asking, a fault's overdraw), never on the state of charge: it changes
        only when something changes, which is what keeps the delay line short.
        """
        if not (energised and self.in_c and self.wants_energy):
            return 0.0
        if offer_a < self.spec.min_a:
            return 0.0  # many vehicles draw nothing rather than less than their minimum
        return min(offer_a, self.spec.max_a) + self.overdraw_a

    @property
    def power_w(self) -> float:
        return self.draw_a * self.voltage_v * self.spec.phases

    # --- time -----------------------------------------------------------------------

    def integrate(self, dt: float) -> float:
        """Charge for ``dt`` seconds at the present draw; returns the metered energy in Wh."""
        if dt <= 0.0 or self.draw_a <= 0.0:
            return 0.0
        wh = self.power_w * dt / 3600.0
        self.soc = min(1.0, self.soc + wh * CHARGE_EFFICIENCY / (self.spec.battery_kwh * 1000.0))
        return wh

    def seconds_to_soc(self, soc: float) -> float | None:
        """How long at the present draw until the battery reaches ``soc``."""
        if self.draw_a <= 0.0 or self.soc >= soc - SOC_EPSILON:
            return None
        wh = (soc - self.soc) * self.spec.battery_kwh * 1000.0 / CHARGE_EFFICIENCY
        return wh * 3600.0 / self.power_w

    def react(self, now: float, pwm_on: bool, offer_a: float, energised: bool) -> None:
        """Re-plan after the EVSE changed what it does (or after the vehicle's own change)."""
        # Pilot handshake: S2 closes when PWM appears; opens some time after PWM disappears.
        if pwm_on and not self.in_c and self.wants_energy:
            if (self.spec.wakes or not self.paused_once) and self._c_at is None:
                self._c_at = now + HANDSHAKE_S
        elif not pwm_on:
            self._c_at = None
        if not pwm_on and self.in_c:
            if self._b_at is None:
                self.paused_once = True
                self._b_at = now + self.spec.response_s
        else:
            self._b_at = None
        if not energised:
            # The contactor is open: no current can flow, whatever the vehicle would like, and
            # once it closes again the vehicle starts over, response_s after the closing.
            self.draw_a = 0.0
            self._allowed = 0.0
            self._pending.clear()
            return
        want = self.allowance(offer_a, energised)
        last = self._pending[-1][1] if self._pending else self._allowed
        if abs(last - want) >= 1e-9:
            # J1772: a vehicle follows a changed offer within its response time (<= 5 s).
            self._pending.append((now + self.spec.response_s, want))

    def next_change(self, now: float) -> float | None:
        times = [t for t in (self._c_at, self._b_at) if t is not None]
        if self._pending:
            times.append(self._pending[0][0])
        full = self.seconds_to_soc(self.spec.target_soc)
        if full is not None:
            times.append(now + full)
        if self.draw_a > 0.0:
            if self.soc < TAPER_START_SOC - SOC_EPSILON:
                to_taper = self.seconds_to_soc(TAPER_START_SOC)
                if to_taper is not None:
                    times.append(now + to_taper)
            else:
                if self._taper_at is None or self._taper_at <= now:
                    # On a shared grid, so that a hundred tapering cars do not each need a
                    # tick of their own (the update period is a model choice, not physics).
                    self._taper_at = (math.floor(now / TAPER_UPDATE_S) + 1) * TAPER_UPDATE_S
                times.append(self._taper_at)
        return min(times) if times else None

    def fire(self, now: float, pwm_on: bool, offer_a: float, energised: bool) -> None:
        """Apply whatever of the vehicle's own changes are due at ``now``."""
        eps = 1e-9
        if self._c_at is not None and self._c_at <= now + eps:
            self._c_at = None
            self.in_c = True
        if self._b_at is not None and self._b_at <= now + eps:
            self._b_at = None
            self.in_c = False
            self.draw_a = 0.0
            self._allowed = 0.0
            self._pending.clear()
        while self._pending and self._pending[0][0] <= now + eps:
            self._allowed = self._pending.popleft()[1]
            self.draw_a = self._allowed if energised else 0.0
        if not self.wants_energy:
            # Target reached: the BMS stops charging at once (the car stays in C) and follows
            # nothing from now on.
            self.draw_a = 0.0
            self._allowed = 0.0
        elif self.draw_a > 0.0 and self.soc > TAPER_START_SOC:
            limit = self.charger_limit_a() + self.overdraw_a
            if self.draw_a > limit:
                self.draw_a = limit  # the BMS lowers current by itself: no lag
        if self._taper_at is not None and self._taper_at <= now + eps:
            self._taper_at = None
        self.react(now, pwm_on, offer_a, energised)
