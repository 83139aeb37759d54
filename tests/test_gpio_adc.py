"""Pilot sensing through the MCP3008: the SPI transaction, the divider, the plateau detection,
all against the chip simulated at the byte level and a simulated pilot waveform."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal.gpio.adc import (
    BURST_SAMPLES,
    CLOCKS_PER_CONVERSION,
    MAX_SAMPLE_RATE_HZ,
    REFERENCE_DIVIDER,
    SPI_HZ,
    Divider,
    Mcp3008,
    burst_size,
    plateaus,
    sample_burst,
)
from hal.gpio.adc_sim import Mcp3008Sim, PilotMode, PilotWave, adc_input
from hal.interfaces import PilotSample
from hal.pilot import PilotError, PilotState, diode_ok, state_from_high_voltage
from hal.sim.bus import SimBus
from hal.sim.ev import HANDSHAKE_S, EvSpec

VREF = 3.3
STATES = [(PilotState.A, 12.0), (PilotState.B, 9.0), (PilotState.C, 6.0), (PilotState.D, 3.0)]
# The duties of the brief (6 A, 16 A, 32 A, 65 A) and anything between.
DUTIES = st.one_of(st.sampled_from([0.1, 0.267, 0.53, 0.9]), st.floats(0.1, 0.9))
# Time between conversions: 0 is the bus's own ceiling (the clock stands still and the chip
# converts at 24 clocks / 1.35 MHz, the shortest burst); 25 and 40 µs are a Pi's Python.
STEPS = st.sampled_from([0.0, 25e-6, 40e-6])


class FakeClock:
    """Advances by ``step_s`` every time it is read (the chip reads it once per frame)."""

    def __init__(self, step_s: float) -> None:
        self.t = 0.0
        self.step_s = step_s

    def __call__(self) -> float:
        now = self.t
        self.t += self.step_s
        return now


def _volts_for(code: int) -> float:
    """The middle of ``code``'s span at the pin."""
    return (code + 0.5) * VREF / 1024


def _code_of(ch: int) -> int:
    return 100 + 111 * ch


def _chip(channels: int = 8, floating: int = 0) -> Mcp3008Sim:
    sim = Mcp3008Sim(channels, vref_v=VREF, clock=FakeClock(25e-6), floating=floating)
    for ch in range(channels):
        sim.connect(ch, _constant(_volts_for(_code_of(ch))))
    return sim


def _constant(volts: float) -> Callable[[float], float]:
    return lambda t: volts


def _measure(wave: PilotWave, *, pwm_on: bool, step_s: float) -> PilotSample:
    div = REFERENCE_DIVIDER
    sim = Mcp3008Sim(vref_v=div.vref_v, clock=FakeClock(step_s))
    sim.connect(5, adc_input(wave, div))
    counts = sample_burst(Mcp3008(sim), 5, BURST_SAMPLES)
    assert sim.transactions == BURST_SAMPLES
    return plateaus([div.counts_to_pilot_v(c) for c in counts], pwm_on=pwm_on)


# --- the SPI transaction --------------------------------------------------------------------


@pytest.mark.parametrize("ch", range(8))
def test_a_known_code_on_each_channel(ch: int) -> None:
    sim = _chip()
    code = _code_of(ch)
    assert sim.xfer2([0x01, 0x80 | ch << 4, 0x00]) == [0x00, code >> 8, code & 0xFF]
    assert Mcp3008(sim).read(ch) == code


def test_the_driver_masks_the_bits_the_chip_does_not_drive() -> None:
    sim = _chip(floating=1)
    code = _code_of(6)
    rx = sim.xfer2([0x01, 0x80 | 6 << 4, 0x00])
    # High-impedance until the null bit: ones on a pulled-up MISO, then 0, B9, B8.
    assert rx == [0xFF, 0xF8 | code >> 8, code & 0xFF]
    assert Mcp3008(sim).read(6) == code


def test_the_start_bit_is_the_first_high_bit_wherever_it_is() -> None:
    sim = _chip()
    code = _code_of(3)
    # Start bit first: 1, SGL, D2 D1 D0, sample, null, B9 ends the first byte.
    rx = sim.xfer2([0xC0 | 3 << 3, 0x00, 0x00])
    assert (rx[0] & 0x01) << 9 | rx[1] << 1 | rx[2] >> 7 == code
    assert rx[0] & 0x02 == 0  # the null bit
    # Held past B0, the chip repeats B1..B7 LSB first.
    lsb_first = [(rx[2] >> (6 - i)) & 1 for i in range(7)]
    assert lsb_first == [(code >> (i + 1)) & 1 for i in range(7)]


def test_a_frame_without_a_start_bit_reads_as_the_floating_line() -> None:
    assert _chip().xfer2([0x00, 0x00, 0x00]) == [0x00, 0x00, 0x00]
    assert _chip(floating=1).xfer2([0x00, 0x00, 0x00]) == [0xFF, 0xFF, 0xFF]
    # Too short to configure a conversion: the chip never gets to answer.
    assert _chip(floating=1).xfer2([0x01]) == [0xFF]


def test_differential_mode_converts_the_pair() -> None:
    sim = Mcp3008Sim(vref_v=VREF, clock=FakeClock(25e-6))
    sim.connect(2, lambda t: 2.0)
    sim.connect(3, lambda t: 0.5)
    rx = sim.xfer2([0x01, 0b0010 << 4, 0x00])  # CH2+ CH3-
    assert (rx[1] & 0x03) << 8 | rx[2] == math.floor(1.5 / VREF * 1024)
    rx = sim.xfer2([0x01, 0b0011 << 4, 0x00])  # CH2- CH3+: negative reads zero
    assert (rx[1] & 0x03) << 8 | rx[2] == 0


def test_mcp3004_has_four_channels() -> None:
    adc = Mcp3008(_chip(channels=4), channels=4)
    assert adc.read(3) == _code_of(3)
    for ch in (4, 5, -1):
        with pytest.raises(ValueError, match="MCP3004 channel"):
            adc.read(ch)
    # D2 is "don't care" on the MCP3004: channel 5's bits address channel 1.
    rx = _chip(channels=4).xfer2([0x01, 0x80 | 5 << 4, 0x00])
    assert (rx[1] & 0x03) << 8 | rx[2] == _code_of(1)


def test_mcp3008_refuses_channels_it_does_not_have() -> None:
    adc = Mcp3008(_chip())
    for ch in (8, -1):
        with pytest.raises(ValueError, match="MCP3008 channel"):
            adc.read(ch)
    with pytest.raises(ValueError, match="4 or 8"):
        Mcp3008(_chip(), channels=6)


class _Reply:
    def __init__(self, rx: list[int]) -> None:
        self.rx = rx

    def xfer2(self, data: list[int]) -> list[int]:
        return list(self.rx)


def test_no_chip_answering_is_an_error_not_a_code() -> None:
    with pytest.raises(OSError, match="null bit"):
        Mcp3008(_Reply([0xFF, 0xFF, 0xFF])).read(0)
    with pytest.raises(OSError, match="2 bytes"):
        Mcp3008(_Reply([0x00, 0x00])).read(0)


def test_the_chip_never_converts_faster_than_its_bus() -> None:
    times: list[float] = []

    def record(t: float) -> float:
        times.append(t)
        return 1.0

    sim = Mcp3008Sim(clock=lambda: 0.0)  # a host infinitely fast
    sim.connect(0, record)
    sample_burst(Mcp3008(sim), 0, BURST_SAMPLES)
    gaps = {round(b - a, 12) for a, b in itertools.pairwise(times)}
    assert gaps == {round(CLOCKS_PER_CONVERSION / SPI_HZ, 12)}
    # So even at the ceiling a design burst spans two PWM periods.
    assert times[-1] - times[0] >= 2e-3 - CLOCKS_PER_CONVERSION / SPI_HZ


# --- the divider ---------------------------------------------------------------------------


def test_the_reference_divider_keeps_the_pilot_inside_the_rails() -> None:
    div = REFERENCE_DIVIDER
    assert div.pin_v(-12.0) == pytest.approx(0.4426, abs=1e-4)
    assert div.pin_v(12.0) == pytest.approx(2.8033, abs=1e-4)
    assert 0.3 < div.pin_v(-13.0) < div.pin_v(13.0) < VREF - 0.3


@given(st.floats(-13.0, 13.0))
def test_the_pin_voltage_satisfies_kirchhoff(pilot: float) -> None:
    d = REFERENCE_DIVIDER
    node = d.pin_v(pilot)
    currents = (pilot - node) / d.r_top_ohm + (d.bias_v - node) / d.r_bias_ohm
    assert currents - node / d.r_bottom_ohm == pytest.approx(0.0, abs=1e-12)


def test_every_code_round_trips() -> None:
    d = REFERENCE_DIVIDER
    assert [d.pilot_v_to_counts(d.counts_to_pilot_v(c)) for c in range(1024)] == list(range(1024))
    assert d.pilot_v_to_counts(-100.0) == 0
    assert d.pilot_v_to_counts(100.0) == 1023
    with pytest.raises(ValueError, match="1024"):
        d.counts_to_pilot_v(1024)


@given(st.floats(-13.0, 13.0))
def test_volts_round_trip_within_one_count(pilot: float) -> None:
    d = REFERENCE_DIVIDER
    one_count = VREF / 1024 / (d.pin_v(1.0) - d.pin_v(0.0))
    assert abs(d.counts_to_pilot_v(d.pilot_v_to_counts(pilot)) - pilot) <= one_count


def _divider(**change: float) -> Divider:
    values = {
        "r_top_ohm": 100e3,
        "r_bias_ohm": 20e3,
        "r_bottom_ohm": 24e3,
        "bias_v": 3.3,
        "vref_v": 3.3,
    }
    return Divider(**(values | change))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"r_top_ohm": 47e3}, "r_top_ohm"),  # too much gain: +-13 V spans more than vref
        ({"bias_v": 5.0}, "bias_v"),  # zero too high: +13 V clips
        ({"bias_v": 1.0}, "bias_v"),  # zero too low: -13 V clips
        ({"r_bias_ohm": -20e3}, "r_bias_ohm"),
        ({"vref_v": 0.0}, "vref_v"),
        ({"r_bottom_ohm": math.inf}, "r_bottom_ohm"),
    ],
)
def test_a_divider_that_clips_or_makes_no_sense_is_refused(
    change: dict[str, float], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        _divider(**change)


def test_the_divider_names_its_board_file_keys() -> None:
    assert set(Divider.KEYS) == {"r_top_ohm", "r_bias_ohm", "r_bottom_ohm", "bias_v", "vref_v"}
    assert _divider() == REFERENCE_DIVIDER


# --- burst size ------------------------------------------------------------------------------


def test_burst_size() -> None:
    assert burst_size(30_000) == 60
    assert burst_size(MAX_SAMPLE_RATE_HZ) == BURST_SAMPLES == 113
    assert burst_size(10_000, periods=3, pwm_hz=500) == 60
    with pytest.raises(ValueError, match="sample_rate_hz"):
        burst_size(0)


# --- plateaus ------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    state=st.sampled_from(STATES),
    duty=DUTIES,
    noise=st.floats(0.0, 0.2),
    phase=st.floats(0.0, 1e-3),
    step=STEPS,
    seed=st.integers(0, 2**16),
)
def test_pwm_plateaus_with_the_diode(
    state: tuple[PilotState, float],
    duty: float,
    noise: float,
    phase: float,
    step: float,
    seed: int,
) -> None:
    expected, level = state
    wave = PilotWave(duty=duty, ev_high_v=level, noise_v=noise, phase_s=phase, seed=seed)
    sample = _measure(wave, pwm_on=True, step_s=step)
    assert abs(sample.high_v - level) <= 0.5
    assert sample.low_v is not None
    assert abs(sample.low_v + 12.0) <= 0.5
    assert state_from_high_voltage(sample.high_v) is expected
    assert diode_ok(sample.low_v)


@settings(max_examples=50, deadline=None)
@given(
    state=st.sampled_from(STATES[1:]),
    duty=DUTIES,
    noise=st.floats(0.0, 0.2),
    phase=st.floats(0.0, 1e-3),
    step=STEPS,
    seed=st.integers(0, 2**16),
)
def test_a_missing_diode_fails_the_port_machines_check(
    state: tuple[PilotState, float],
    duty: float,
    noise: float,
    phase: float,
    step: float,
    seed: int,
) -> None:
    expected, level = state
    wave = PilotWave(
        duty=duty, ev_high_v=level, diode=False, noise_v=noise, phase_s=phase, seed=seed
    )
    sample = _measure(wave, pwm_on=True, step_s=step)
    assert state_from_high_voltage(sample.high_v) is expected
    assert sample.low_v is not None
    assert abs(sample.low_v + level) <= 0.5  # the EV's resistors load the negative half
    assert not diode_ok(sample.low_v)  # what firmware/station.py hands the port machine


@settings(max_examples=50, deadline=None)
@given(
    state=st.sampled_from([*STATES, (PilotState.F, -12.0)]),
    noise=st.floats(0.0, 0.2),
    step=STEPS,
    seed=st.integers(0, 2**16),
)
def test_a_steady_pilot_has_no_low_plateau(
    state: tuple[PilotState, float], noise: float, step: float, seed: int
) -> None:
    expected, level = state
    mode: PilotMode = "low" if expected is PilotState.F else "high"
    wave = PilotWave(mode, ev_high_v=level, noise_v=noise, seed=seed)
    sample = _measure(wave, pwm_on=False, step_s=step)
    assert sample.low_v is None
    assert abs(sample.high_v - level) <= 0.5
    assert state_from_high_voltage(sample.high_v) is expected


def test_a_shorted_pilot_with_pwm_on_is_one_level_and_no_diode() -> None:
    wave = PilotWave(duty=0.53, ev_high_v=0.0, diode=False, noise_v=0.2, seed=1)
    sample = _measure(wave, pwm_on=True, step_s=25e-6)
    assert sample.low_v is not None
    assert state_from_high_voltage(sample.high_v) is PilotState.E
    assert not diode_ok(sample.low_v)


def test_a_missed_plateau_is_a_failed_measurement_not_a_state() -> None:
    # The burst caught the low plateau and two samples on rising edges, never the top.
    sample = plateaus([-12.0] * 50 + [2.0, 5.0], pwm_on=True)
    assert sample.low_v == -12.0
    assert math.isnan(sample.high_v)
    with pytest.raises(PilotError):
        state_from_high_voltage(sample.high_v)
    with pytest.raises(ValueError, match="no samples"):
        plateaus([], pwm_on=True)


def test_edge_samples_do_not_move_the_plateaus() -> None:
    # 10 % duty at the bus's ceiling with a slow 15 µs slew: ramp samples on both sides.
    wave = PilotWave(duty=0.1, ev_high_v=9.0, rise_s=15e-6, phase_s=3e-6)
    sample = _measure(wave, pwm_on=True, step_s=0.0)
    one_count = 0.033
    assert sample.high_v == pytest.approx(9.0, abs=one_count)
    assert sample.low_v == pytest.approx(-12.0, abs=one_count)


@settings(max_examples=30, deadline=None)
@given(
    state=st.sampled_from(STATES),
    duty=st.sampled_from([0.04, 0.96]),
    noise=st.floats(0.0, 0.2),
    phase=st.floats(0.0, 1e-3),
    step=st.sampled_from([0.0, 25e-6]),
    seed=st.integers(0, 2**16),
)
def test_a_40_us_plateau_is_still_measured(
    state: tuple[PilotState, float],
    duty: float,
    noise: float,
    phase: float,
    step: float,
    seed: int,
) -> None:
    # 80 A is 96 % duty: the negative half is 40 µs a period, a sample or two of it, with
    # about as many on the edges beside it.
    expected, level = state
    wave = PilotWave(duty=duty, ev_high_v=level, noise_v=noise, phase_s=phase, seed=seed)
    sample = _measure(wave, pwm_on=True, step_s=step)
    assert state_from_high_voltage(sample.high_v) is expected
    assert sample.low_v is not None
    assert diode_ok(sample.low_v)


@pytest.mark.parametrize("duty", [0.04, 0.96])
@pytest.mark.parametrize("phase_us", range(0, 50, 2))
def test_a_short_plateau_beside_as_many_edge_samples(duty: float, phase_us: int) -> None:
    # Sampling locked to the PWM (40 conversions a period) hits the same edge phases every
    # period: the short plateau's side holds as many edge samples as plateau samples, and
    # its median is an edge's voltage.
    wave = PilotWave(duty=duty, ev_high_v=9.0, phase_s=phase_us * 1e-6)
    sample = _measure(wave, pwm_on=True, step_s=25e-6)
    assert sample.high_v == pytest.approx(9.0, abs=0.05)
    assert sample.low_v == pytest.approx(-12.0, abs=0.05)


def test_one_spike_does_not_make_a_plateau() -> None:
    burst = [9.0, 9.1, 8.9, 9.0] + [-12.0] * 40
    assert plateaus([*burst, 15.5], pwm_on=True) == PilotSample(9.0, -12.0)
    assert plateaus([*burst, -15.5], pwm_on=True) == PilotSample(9.0, -12.0)
    # Nor does it drag the split past a plateau: D with a missing diode, the closest two.
    burst = [3.0, 3.1, 2.9, 3.0] + [-3.0] * 40
    assert plateaus([*burst, 15.9], pwm_on=True) == PilotSample(3.0, -3.0)
    # Nor make a steady pilot two levels.
    assert plateaus([-12.0] * 40 + [15.9], pwm_on=True) == PilotSample(-12.0, -12.0)


# --- agreement with the sim:// backend's pilot ------------------------------------------------


@pytest.mark.parametrize("diode_missing", [False, True])
@pytest.mark.parametrize("in_c", [False, True])
def test_the_waveform_agrees_with_the_simulated_bus(diode_missing: bool, in_c: bool) -> None:
    bus = SimBus(["1"], [EvSpec(port="1")], noise_a=0.0)
    bus.advance(0.0)
    port = bus.port("1")
    port.pwm(53.3)
    if diode_missing:
        bus.inject("1", "diode")
    bus.advance(HANDSHAKE_S if in_c else 0.0)
    reported = port.sample()
    assert reported.low_v is not None
    assert state_from_high_voltage(reported.high_v) is (PilotState.C if in_c else PilotState.B)
    wave = PilotWave(duty=0.533, ev_high_v=reported.high_v, diode=not diode_missing, noise_v=0.1)
    measured = _measure(wave, pwm_on=True, step_s=25e-6)
    assert measured.low_v is not None
    assert measured.high_v == pytest.approx(reported.high_v, abs=0.5)
    assert measured.low_v == pytest.approx(reported.low_v, abs=0.5)
    assert diode_ok(measured.low_v) is diode_ok(reported.low_v) is not diode_missing
