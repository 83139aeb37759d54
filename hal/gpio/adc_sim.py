"""A simulated MCP3008/MCP3004 at the SPI byte level, and the pilot waveform it measures.

One job: stand in for the pilot sense hardware of a Raspberry Pi station (the no-hardware
mode, the tests): ``Mcp3008Sim`` answers ``xfer2`` bit by bit as the chip does, and
``PilotWave`` is the voltage at the EVSE's pilot sense point for what the EVSE drives and
what the vehicle presents; ``adc_input`` puts the board's divider between them.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Literal

from hal.gpio.adc import SPI_HZ, Divider, ideal_code

__all__ = ["Mcp3008Sim", "PilotMode", "PilotWave", "adc_input"]

# Clock positions after the start bit (MCP3004/3008 datasheet, figures 5-1 and 6-1): four
# configuration bits (SGL/DIFF, D2, D1, D0), the sample ends on the fifth clock, a null bit,
# then B9..B0 MSB first; held further, B1..B9 again LSB first, then zeros.
_CONFIG_BITS = 4
_NULL_AT = 6
_MSB_AT = 7
_BITS = 10


class Mcp3008Sim:
    """The chip on the far side of the SPI bus, one ``xfer2`` call per chip-select frame.

    Each channel's input is a callable ``volts_at(t)`` (``connect``); an unconnected channel
    is grounded. The clock (``time.perf_counter`` unless injected) is read exactly once per
    ``xfer2``, the moment of the conversion: at 1.35 MHz the real sample window is a few µs
    into the frame, far shorter than the pilot's plateaus. A frame also takes its bits' time
    on a bus clocked at ``spi_hz`` (None: no bus), so conversions are never closer together
    than that: this simulation runs as fast as the bus or faster (55 000-80 000 frames
    a second), and a burst would otherwise span less of the pilot than it does on a Pi.
    With a clock that stands still the chip converts exactly at the bus's rate.
    ``transactions`` counts the calls.

    The frame is decoded bit by bit, as the chip's shift register does: the first clock with
    DIN high is the start bit (not necessarily the last bit of the first byte); SGL/DIFF and
    D2..D0 follow (an MCP3004 ignores D2); differential mode converts IN+ minus IN- of the
    pair (CH0/CH1, CH2/CH3, ...; D0 swaps them), zero when negative. Before the null bit the
    chip's DOUT is high-impedance and reads as ``floating`` (0: the Pi's GPIO 9 has a default
    pull-down; 1 checks that a driver masks those bits). A frame without a start bit, or too
    short to configure a conversion, reads as ``floating`` throughout, as on the chip.
    """

    def __init__(
        self,
        channels: int = 8,
        *,
        vref_v: float = 3.3,
        clock: Callable[[], float] = time.perf_counter,
        floating: int = 0,
        spi_hz: float | None = SPI_HZ,
    ) -> None:
        if channels not in (4, 8):
            raise ValueError(f"an MCP300x has 4 or 8 channels, not {channels!r}")
        if not 0.0 < vref_v < math.inf:
            raise ValueError(f"vref_v = {vref_v!r}: must be a positive number")
        if floating not in (0, 1):
            raise ValueError(f"floating = {floating!r}: a line reads 0 or 1")
        if spi_hz is not None and not 0.0 < spi_hz < math.inf:
            raise ValueError(f"spi_hz = {spi_hz!r}: must be a positive number or None")
        self.channels = channels
        self.vref_v = vref_v
        self.floating = floating
        self.spi_hz = spi_hz
        self._last = -math.inf
        self.transactions = 0
        self._clock = clock
        self._inputs: dict[int, Callable[[float], float]] = {}

    def connect(self, channel: int, volts_at: Callable[[float], float]) -> None:
        """Drive ``channel``'s input pin with ``volts_at(t)`` volts."""
        if not 0 <= channel < self.channels:
            raise ValueError(f"channel {channel!r} is out of range 0..{self.channels - 1}")
        self._inputs[channel] = volts_at

    def close(self) -> None:
        """Nothing to release (``ClosableSpiDevice``)."""

    def xfer2(self, data: list[int]) -> list[int]:
        """One frame: ``data`` clocked out MSB first, the chip's DOUT clocked in."""
        if any(not 0 <= b <= 0xFF for b in data):
            raise ValueError(f"SPI bytes are 0..255: {data!r}")
        now = self._clock()
        if self.spi_hz is not None:
            now = max(now, self._last + len(data) * 8 / self.spi_hz)
        self._last = now
        self.transactions += 1
        din = [(b >> (7 - i)) & 1 for b in data for i in range(8)]
        start = din.index(1) if 1 in din else len(din)
        code: int | None = None
        if start + _CONFIG_BITS < len(din):
            config = din[start + 1 : start + 1 + _CONFIG_BITS]
            code = self._convert(config, now)
        rx = []
        for first in range(0, len(din), 8):
            byte = 0
            for k in range(first, first + 8):
                byte = byte << 1 | self._dout(k - start, code)
            rx.append(byte)
        return rx

    def _dout(self, k: int, code: int | None) -> int:
        """The DOUT bit ``k`` clocks after the start bit."""
        if code is None or k < _NULL_AT:
            return self.floating
        if k == _NULL_AT:
            return 0
        if k < _MSB_AT + _BITS:  # B9..B0
            return (code >> (_MSB_AT + _BITS - 1 - k)) & 1
        lsb_first = k - (_MSB_AT + _BITS - 1)  # B1..B9 after B0
        return (code >> lsb_first) & 1 if lsb_first < _BITS else 0

    def _convert(self, config: list[int], now: float) -> int:
        single, d2, d1, d0 = config
        if self.channels == 4:
            d2 = 0  # MCP3004: D2 is "don't care"
        if single:
            return ideal_code(self._volts(d2 << 2 | d1 << 1 | d0, now), self.vref_v)
        pair = (d2 << 1 | d1) * 2
        plus, minus = (pair, pair + 1) if d0 == 0 else (pair + 1, pair)
        return ideal_code(self._volts(plus, now) - self._volts(minus, now), self.vref_v)

    def _volts(self, channel: int, now: float) -> float:
        source = self._inputs.get(channel)
        return 0.0 if source is None else source(now)


PilotMode = Literal["pwm", "high", "low"]

_EVSE_V = 12.0  # SAE J1772: the EVSE's oscillator swings +-12 V


class PilotWave:
    """The pilot at the EVSE's sense point: what the EVSE drives, loaded by the vehicle.

    ``mode``: "pwm" (``freq_hz``, ``duty`` a fraction of the period high), "high" (steady
    +12 V into the vehicle: PWM off) or "low" (steady -12 V: state F). ``ev_high_v`` is the
    positive level the vehicle's resistors leave: 12 unplugged (A), 9 (B), 6 (C), 3 (D),
    0 (a short, E). The negative half is -12 V while the vehicle's diode blocks it; without
    the diode its resistors load that half as they load the positive one, to ``-ev_high_v``,
    as ``hal.sim.bus`` reports a diode fault (unplugged, the two agree at -12 V). A short is
    ``ev_high_v=0`` with ``diode=False`` (0 V throughout); ``hal.sim.bus`` reports its low
    half at -12 V, which is ``diode=True``.

    Edges are linear ramps of ``rise_s`` (the sense amplifier's slew), shortened to the
    plateau when a plateau is shorter. ``noise_v`` is the rms of Gaussian noise added to every
    reading, drawn from a generator seeded with ``seed``. ``phase_s`` shifts the wave in time.
    """

    def __init__(
        self,
        mode: PilotMode = "pwm",
        *,
        duty: float = 0.5,
        ev_high_v: float = _EVSE_V,
        diode: bool = True,
        noise_v: float = 0.0,
        rise_s: float = 10e-6,
        freq_hz: float = 1000.0,
        phase_s: float = 0.0,
        seed: int = 0,
    ) -> None:
        if mode not in ("pwm", "high", "low"):
            raise ValueError(f"pilot mode {mode!r}: expected pwm, high or low")
        if mode == "pwm" and not 0.0 < duty < 1.0:
            raise ValueError(f"duty {duty!r}: a fraction strictly between 0 and 1 with PWM")
        for name, value in (("noise_v", noise_v), ("rise_s", rise_s)):
            if not 0.0 <= value < math.inf:
                raise ValueError(f"{name} = {value!r}: must be zero or positive")
        if not 0.0 < freq_hz < math.inf:
            raise ValueError(f"freq_hz = {freq_hz!r}: must be positive")
        self.mode = mode
        self.duty = duty
        self.ev_high_v = ev_high_v
        self.diode = diode
        self.noise_v = noise_v
        self.rise_s = rise_s
        self.freq_hz = freq_hz
        self.phase_s = phase_s
        self._rng = random.Random(seed)

    @property
    def low_v(self) -> float:
        """The negative half's level while PWM runs."""
        return -_EVSE_V if self.diode else -self.ev_high_v

    def volts(self, t: float) -> float:
        """The pilot's voltage at time ``t`` (seconds), noise included."""
        noise = self._rng.gauss(0.0, self.noise_v) if self.noise_v > 0.0 else 0.0
        return self._clean(t) + noise

    def _clean(self, t: float) -> float:
        if self.mode == "low":
            return -_EVSE_V
        high = self.ev_high_v
        if self.mode == "high":
            return high
        low = self.low_v
        period = 1.0 / self.freq_hz
        p = (t + self.phase_s) % period
        on = self.duty * period
        rise = min(self.rise_s, on, period - on)
        if p < rise:
            return low + (high - low) * p / rise
        if p < on:
            return high
        if p < on + rise:
            return high + (low - high) * (p - on) / rise
        return low


def adc_input(wave: PilotWave, divider: Divider) -> Callable[[float], float]:
    """The ADC pin's voltage over time for ``wave`` through ``divider`` (``connect`` it)."""

    def volts_at(t: float) -> float:
        return divider.pin_v(wave.volts(t))

    return volts_at
