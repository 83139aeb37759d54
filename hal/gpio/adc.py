"""Pilot sensing through an MCP3008/MCP3004 ADC on SPI: the chip's transaction, the board's
resistor divider, and the two plateaus of a burst of conversions.

One job: turn SPI conversions into a ``PilotSample``. It does not schedule anything: the GPIO
backend calls ``sample_burst`` (blocking, a few milliseconds) in a thread off the control tick
and hands the result to ``plateaus``.

Burst size. One conversion is one 24-clock SPI transaction (Microchip MCP3004/3008 datasheet,
section 6.1, "Using the MCP3004/3008 with Microcontroller SPI Ports"). At the 1.35 MHz clock
the datasheet allows at 2.7 V (3.6 MHz at 5 V; the board runs it at 3.3 V and asks for
1.35 MHz) that is 17.8 µs, so the bus alone caps the rate at 56 250 conversions per second.
Python's per-call overhead of ``xfer2`` (tens of µs on a Pi) only makes a burst slower, that is
longer, never shorter. So the burst is sized for that ceiling (``BURST_SAMPLES``, 113): it
spans at least two PWM periods on any machine, and costs about 113 × 40 µs ≈ 4.5 ms on a Pi,
which is nothing off the 50 ms tick. Sizing it from a measured typical rate instead (e.g. 60
conversions at 30 kHz) would span barely one period on a faster machine or a faster clock.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from hal.interfaces import PilotSample

__all__ = [
    "BURST_SAMPLES",
    "CLOCKS_PER_CONVERSION",
    "CODES",
    "MAX_SAMPLE_RATE_HZ",
    "MIN_PLATEAU_SAMPLES",
    "PLATEAU_BAND_V",
    "PWM_HZ",
    "REFERENCE_DIVIDER",
    "SINGLE_LEVEL_SPAN_V",
    "SPI_HZ",
    "ClosableSpiDevice",
    "Divider",
    "Mcp3008",
    "SpiDevice",
    "burst_size",
    "ideal_code",
    "open_spidev",
    "plateaus",
    "sample_burst",
]

CODES = 1024  # a 10-bit converter
SPI_HZ = 1_350_000  # MCP3004/3008 datasheet: maximum clock at VDD = 2.7 V
CLOCKS_PER_CONVERSION = 24  # three bytes per transaction (datasheet section 6.1)
MAX_SAMPLE_RATE_HZ = SPI_HZ / CLOCKS_PER_CONVERSION  # the bus's ceiling: 56 250 /s
PWM_HZ = 1000.0  # SAE J1772: the pilot oscillates at 1 kHz

# Plateau detection (see ``plateaus``). With PWM on, the smallest real gap between the plateaus
# is 6 V (state D, +3 V, with a missing diode: -3 V); noise of 0.2 V rms spans about 1.2 V over
# a burst. A spread below 3 V is therefore one level, not two.
SINGLE_LEVEL_SPAN_V = 3.0
# A sample farther than this from its plateau's estimate is on an edge. It is J1772's
# band half-width (SAE J1772 Table 3, +-1 V): an edge sample within it cannot move the result
# out of the state's band, and it is five times the noise's 0.2 V rms.
PLATEAU_BAND_V = 1.0
# Fewer samples than this on a plateau is not a measurement of it (a lone edge sample).
MIN_PLATEAU_SAMPLES = 2


class SpiDevice(Protocol):
    """An SPI device as py-spidev's ``SpiDev`` offers it: one transaction per call, chip
    select held for the whole list, as many bytes read as written."""

    def xfer2(self, data: list[int]) -> list[int]: ...


class ClosableSpiDevice(SpiDevice, Protocol):
    """An SPI device the caller opened and must release (``open_spidev``)."""

    def close(self) -> None: ...


def open_spidev(
    bus: int, device: int, max_speed_hz: int = SPI_HZ, mode: int = 0
) -> ClosableSpiDevice:
    """``/dev/spidevBUS.DEVICE`` through py-spidev, set up for the MCP3008 (SPI mode 0).

    spidev is imported here, not at the top: it exists only on Linux with the ``pi`` extra,
    and every other machine (the tests, a laptop simulating a station) never opens one.
    """
    import spidev

    spi = spidev.SpiDev()
    spi.open(bus, device)
    try:
        spi.max_speed_hz = max_speed_hz
        spi.mode = mode
    except BaseException:
        spi.close()
        raise
    dev: ClosableSpiDevice = spi
    return dev


class Mcp3008:
    """An MCP3008 (8 channels) or MCP3004 (``channels=4``), single-ended conversions."""

    def __init__(self, spi: SpiDevice, channels: int = 8) -> None:
        if channels not in (4, 8):
            raise ValueError(f"an MCP300x has 4 or 8 channels, not {channels!r}")
        self.spi = spi
        self.channels = channels
        self.name = "MCP3008" if channels == 8 else "MCP3004"

    def read(self, channel: int) -> int:
        """One conversion of ``channel``: its code, 0..1023."""
        if not 0 <= channel < self.channels:
            raise ValueError(
                f"{self.name} channel {channel!r} is out of range 0..{self.channels - 1}"
            )
        # Start bit last in the first byte, so the 10 result bits end the third byte.
        rx = self.spi.xfer2([0x01, 0x80 | channel << 4, 0x00])
        if len(rx) != 3:
            raise OSError(f"{self.name}: SPI returned {len(rx)} bytes for a 3-byte transaction")
        # The chip drives a low null bit just before B9; a high one means nobody answered
        # (MISO floating high), which would otherwise read as a plausible 10-bit code.
        if rx[1] & 0x04:
            raise OSError(f"{self.name}: null bit high: no chip answering on this chip select")
        return ((rx[1] & 0x03) << 8) | rx[2]


def ideal_code(pin_v: float, vref_v: float) -> int:
    """The code an ideal 10-bit converter gives for ``pin_v`` (code k covers k..k+1 LSB)."""
    return min(max(math.floor(pin_v / vref_v * CODES), 0), CODES - 1)


@dataclass(frozen=True, slots=True)
class Divider:
    """The board's network from the pilot (+-12 V) to the ADC pin (0..vref).

    ::

        pilot --r_top--+--r_bias-- bias_v
                       |
                    ADC pin
                       |
                       +--r_bottom-- GND

    By Kirchhoff at the node, with G = 1/r_top + 1/r_bias + 1/r_bottom::

        V_pin = (V_pilot / r_top + bias_v / r_bias) / G

    a gain of (1/r_top)/G around an offset of (bias_v/r_bias)/G. The reference board
    (``REFERENCE_DIVIDER``: 100 k, 20 k, 24 k, bias and vref both 3.3 V) has a gain of 0.0984
    and an offset of 1.623 V: -12 V -> 0.443 V, +12 V -> 2.803 V, and -13..+13 V ->
    0.344..2.902 V, a third of a volt inside the rails at either end; one code is 33 mV of
    pilot. Bias and vref from the same 3.3 V rail keep the zero ratiometric. The network
    loads the pilot with about 111 kΩ: 1 % against the EVSE's 1 kΩ source, 0.1 V at +12 V.
    (A two-resistor network, pilot -- R1 -- node -- R2 -- 3.3 V, cannot both centre the range
    and shrink it: a mid-scale zero needs R1 = R2, a gain of 0.5.)

    Every value must be positive, and -13..+13 V (J1772's +-12 V and its 1 V band) must stay
    inside 0..vref_v; a ``ValueError`` says which value is wrong.
    """

    # The board file's keys (hal/gpio/board.py reads them all, each positive).
    KEYS: ClassVar[tuple[str, ...]] = (
        "r_top_ohm",
        "r_bias_ohm",
        "r_bottom_ohm",
        "bias_v",
        "vref_v",
    )
    # SAE J1772 Table 3: +-12 V and the +-1 V of a state band around it.
    _CHECK_V: ClassVar[float] = 13.0

    r_top_ohm: float
    r_bias_ohm: float
    r_bottom_ohm: float
    bias_v: float
    vref_v: float

    def __post_init__(self) -> None:
        for key in self.KEYS:
            value = getattr(self, key)
            if not (isinstance(value, int | float) and 0.0 < value < math.inf):
                raise ValueError(f"divider {key} = {value!r}: must be a positive number")
        low, high = self.pin_v(-self._CHECK_V), self.pin_v(self._CHECK_V)
        where = (
            f"-13..+13 V maps to {low:.3f}..{high:.3f} V, outside the ADC's 0..{self.vref_v:g} V"
        )
        if high - low > self.vref_v:
            raise ValueError(
                f"divider: {where}: too much gain: r_top_ohm {self.r_top_ohm:g} is too small "
                "for r_bias_ohm and r_bottom_ohm"
            )
        if high > self.vref_v:
            raise ValueError(
                f"divider: {where}: the zero is too high: r_bias_ohm {self.r_bias_ohm:g} too "
                f"small or bias_v {self.bias_v:g} too high against r_bottom_ohm"
            )
        if low < 0.0:
            raise ValueError(
                f"divider: {where}: the zero is too low: r_bias_ohm {self.r_bias_ohm:g} too "
                f"large or bias_v {self.bias_v:g} too low against r_bottom_ohm"
            )

    @property
    def _conductance(self) -> float:
        return 1.0 / self.r_top_ohm + 1.0 / self.r_bias_ohm + 1.0 / self.r_bottom_ohm

    def pin_v(self, pilot_v: float) -> float:
        """The ADC pin's voltage for a pilot voltage (the formula above)."""
        return (pilot_v / self.r_top_ohm + self.bias_v / self.r_bias_ohm) / self._conductance

    def counts_to_pilot_v(self, counts: int) -> float:
        """The pilot voltage a code means: the middle of the code's span, through the network."""
        if not 0 <= counts < CODES:
            raise ValueError(f"ADC code {counts!r} is out of range 0..{CODES - 1}")
        pin = (counts + 0.5) * self.vref_v / CODES
        return (pin * self._conductance - self.bias_v / self.r_bias_ohm) * self.r_top_ohm

    def pilot_v_to_counts(self, volts: float) -> int:
        """The code an ideal converter gives for a pilot voltage, clamped to 0..1023."""
        return ideal_code(self.pin_v(volts), self.vref_v)


REFERENCE_DIVIDER = Divider(
    r_top_ohm=100_000.0, r_bias_ohm=20_000.0, r_bottom_ohm=24_000.0, bias_v=3.3, vref_v=3.3
)


def burst_size(sample_rate_hz: float, periods: float = 2, pwm_hz: float = PWM_HZ) -> int:
    """How many conversions at ``sample_rate_hz`` span at least ``periods`` PWM periods."""
    for name, value in (
        ("sample_rate_hz", sample_rate_hz),
        ("periods", periods),
        ("pwm_hz", pwm_hz),
    ):
        if not 0.0 < value < math.inf:
            raise ValueError(f"burst_size: {name} = {value!r}: must be a positive number")
    return math.ceil(periods * sample_rate_hz / pwm_hz)


# Two periods at the bus's ceiling: long enough on any machine (module docstring).
BURST_SAMPLES = burst_size(MAX_SAMPLE_RATE_HZ)


def sample_burst(adc: Mcp3008, channel: int, n: int) -> list[int]:
    """``n`` conversions of ``channel`` back to back. Blocking: run it off the control tick."""
    if n < 1:
        raise ValueError(f"a burst needs at least one conversion, not {n!r}")
    read = adc.read
    return [read(channel) for _ in range(n)]


def plateaus(volts: Sequence[float], *, pwm_on: bool) -> PilotSample:
    """The pilot's high and low plateaus from a burst of samples (in pilot volts).

    PWM off: the pilot is one steady level; ``high_v`` is the median of every sample and
    ``low_v`` None (``PilotSample``). That includes state F's -12 V: ``high_v`` is returned as
    measured and the port machine classifies it (``hal.pilot.state_from_high_voltage``).

    PWM on: the burst (two periods or more) holds two clusters, the plateaus, and samples on
    the edges between them (the sense amplifier slews). The samples are split at the midpoint
    between the lowest and the highest (the second lowest and second highest: one spike does
    not count), which lies between the plateaus whatever the duty. A
    side's median is not its plateau: at 96 % duty (80 A) the low plateau is 40 µs a period,
    a couple of samples, and the edge samples on that side can be as many (the more so when
    the sampling is locked to the PWM and hits the same edge phase every period). What sets
    the plateau apart is that it is the side's extreme and tightly clustered, while edge
    samples lie between the plateaus and spread over volts. So each plateau is anchored at its
    side's second most extreme sample (one spike cannot move it), estimated as the median of
    the samples within ``PLATEAU_BAND_V`` of that anchor, and refined as the median of those
    within the band of the estimate (the anchor sits a couple of noise deviations out; the
    second pass re-centres the band). The median averages the noise; edge samples only count
    when they are already within a volt of the plateau.

    A spread under ``SINGLE_LEVEL_SPAN_V`` is a pilot stuck at one level with PWM on (a
    short, or no oscillation): both plateaus are that level, so a missing negative half fails
    the diode check. A side with fewer than ``MIN_PLATEAU_SAMPLES`` samples in its band (only
    an edge sample, the plateau missed) gives NaN for that plateau: a failed measurement,
    which ``hal.pilot`` reads as outside every band and as a failed diode check, never as a
    state. Raises ValueError for an empty burst.

    The limit: a plateau needs two samples off its edges. 96 % duty leaves the low half 30 µs
    beside 10 µs edges; at one conversion per 40 µs that is one sample a period at best, and
    sampling locked to the PWM can land on an edge every period and report the edge's
    voltage. Real timing jitters, so locking does not last; a backend should still confirm a
    failed diode check with a second burst before it reports it.
    """
    if not volts:
        raise ValueError("no samples: a burst holds at least one conversion")
    if not pwm_on:
        return PilotSample(statistics.median(volts), None)
    # The second most extreme samples, so that one spike neither makes a steady pilot look
    # like two levels nor drags the split past a plateau.
    ordered = sorted(volts)
    k = min(MIN_PLATEAU_SAMPLES - 1, len(ordered) - 1)
    lo, hi = ordered[k], ordered[-1 - k]
    if hi - lo < SINGLE_LEVEL_SPAN_V:
        level = statistics.median(volts)
        return PilotSample(level, level)
    mid = (lo + hi) / 2.0
    high = _plateau([v for v in volts if v >= mid], top=True)
    low = _plateau([v for v in volts if v < mid], top=False)
    return PilotSample(high, low)


def _plateau(side: list[float], *, top: bool) -> float:
    if len(side) < MIN_PLATEAU_SAMPLES:
        return math.nan
    anchor = sorted(side, reverse=top)[MIN_PLATEAU_SAMPLES - 1]
    estimate = statistics.median([v for v in side if abs(v - anchor) <= PLATEAU_BAND_V])
    near = [v for v in side if abs(v - estimate) <= PLATEAU_BAND_V]
    if len(near) < MIN_PLATEAU_SAMPLES:
        return math.nan
    return statistics.median(near)
