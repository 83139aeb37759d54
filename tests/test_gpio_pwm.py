"""The pilot PWM through sysfs (hal.gpio.sysfs_pwm) against a simulated kernel side
(hal.gpio.sysfs_sim) in a temporary folder: Raspberry Pi 4 and 5 layouts, the wait for udev,
the kernel's duty <= period rule at every write, the J1772 duties, and the refusals.

The rule at every write is checked twice: by the simulated kernel's thread (which sees states,
every 2 ms), and by replaying every write the writer logs on a model of the kernel, which sees
all of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hal.gpio.sysfs_pwm import PILOT_PERIOD_NS, PilotPwm, PwmError, SysfsPwm, find_chip
from hal.gpio.sysfs_sim import SimPwmKernel
from hal.pilot import PilotError, amps_to_duty

PI4 = {0: (2, "fe20c000.pwm")}
PI4_DEVICE = "fe20c000.pwm"
PI5_DEVICE = "1f00098000.pwm"  # the RP1's PWM0
PI5_FAN = "1f0009c000.pwm"  # the RP1's PWM1 (the fan): another chip to tell apart
# Generous bounds for what the simulated kernel does in milliseconds: never a measured time.
WAIT_S = 5.0


def until(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the simulated kernel did not get there"
        time.sleep(0.002)


@pytest.fixture
def pi4(tmp_path: Path) -> Iterator[SimPwmKernel]:
    with SimPwmKernel(tmp_path / "pwm", PI4) as kernel:
        yield kernel
    assert kernel.errors == []


def opened(kernel: SimPwmKernel, chip: int, channel: int, **kwargs: int) -> SysfsPwm:
    pwm = SysfsPwm(kernel.root, chip, channel, **kwargs)
    pwm.open()
    return pwm


def read(path: Path) -> str:
    return path.read_text().strip()


class WriteLog:
    """Every write the writer made (its debug log), replayed on the kernel's rules."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        caplog.set_level(logging.DEBUG, logger="ampshare.gpio.pwm")

    def writes(self) -> list[tuple[str, str]]:
        out = []
        for record in self.caplog.records:
            if record.name == "ampshare.gpio.pwm" and record.msg == "write %s %s":
                assert isinstance(record.args, tuple)
                path, value = record.args
                out.append((Path(str(path)).name, str(value)))
        return out

    def replay(self, period: int = 0, duty: int = 0, enable: int = 0) -> list[str]:
        """What the kernel would have refused (EINVAL), from the state given on."""
        refused = []
        for name, value in self.writes():
            if name == "period":
                period = int(value)
            elif name == "duty_cycle":
                duty = int(value)
            elif name == "enable":
                enable = int(value)
            else:
                continue
            if period == 0 or duty > period:
                refused.append(f"{name} {value}: period {period}, duty {duty}, enable {enable}")
        return refused


# --- Finding the chip: Raspberry Pi 4 and 5 -------------------------------------------------


def test_pi4_layout_chip_0_two_channels(pi4: SimPwmKernel) -> None:
    chip = find_chip(pi4.root, PI4_DEVICE, None)
    assert chip == 0
    pilot = PilotPwm(opened(pi4, chip, 1))  # GPIO 13 or 19
    pilot.pwm(amps_to_duty(16))
    enabled, fraction = pi4.output(0, 1)
    assert enabled
    assert fraction == pytest.approx(0.266)
    assert pi4.output(0, 0) == (False, 0.0)  # the other port's channel: never exported
    assert not (pi4.root / "pwmchip0" / "pwm0").exists()


@pytest.mark.parametrize(
    ("kernel", "chips", "expected"),
    [
        ("before 6.12", {0: (2, PI5_FAN), 2: (4, PI5_DEVICE)}, 2),
        ("6.12 and later", {0: (4, PI5_DEVICE), 1: (2, PI5_FAN)}, 0),
    ],
)
def test_pi5_layout_chip_found_by_device(
    tmp_path: Path, kernel: str, chips: dict[int, tuple[int, str]], expected: int
) -> None:
    with SimPwmKernel(tmp_path / "pwm", chips) as sim:
        chip = find_chip(sim.root, PI5_DEVICE, None)
        assert chip == expected, kernel
        pwm = opened(sim, chip, 3)  # GPIO 19: channel 3 exists only on the RP1's 4
        PilotPwm(pwm).steady()
        assert sim.output(chip, 3) == (True, 1.0)
    assert sim.errors == []


def test_find_chip_by_number(pi4: SimPwmKernel) -> None:
    assert find_chip(pi4.root, None, 0) == 0
    with pytest.raises(PwmError, match=r"pwmchip2 does not exist.*pwmchip0 \(fe20c000\.pwm\)"):
        find_chip(pi4.root, None, 2)


def test_find_chip_refusals(tmp_path: Path) -> None:
    sim = SimPwmKernel(tmp_path / "pwm", {0: (4, PI5_DEVICE), 1: (2, PI5_FAN)})
    listing = r"pwmchip0 \(1f00098000\.pwm\), pwmchip1 \(1f0009c000\.pwm\)"
    with pytest.raises(PwmError, match=rf"no PWM chip .*'fe20c000\.pwm'.*{listing}"):
        find_chip(sim.root, PI4_DEVICE, None)
    with pytest.raises(PwmError, match="more than one PWM chip"):
        find_chip(sim.root, ".pwm", None)
    with pytest.raises(PwmError, match="no pwmchip under"):
        find_chip(tmp_path / "empty", PI4_DEVICE, None)
    with pytest.raises(ValueError, match="one of the two"):
        find_chip(sim.root, None, None)
    with pytest.raises(ValueError, match="one of the two"):
        find_chip(sim.root, PI5_DEVICE, 0)


# --- Export and the wait for udev ----------------------------------------------------------


def test_open_waits_for_the_files_to_appear(tmp_path: Path) -> None:
    # A writer that did not wait would write to files not there yet and fail.
    with SimPwmKernel(tmp_path / "pwm", PI4, ready_delay_s=0.2) as sim:
        pwm = opened(sim, 0, 0)
        assert read(sim.root / "pwmchip0" / "pwm0" / "period") == str(PILOT_PERIOD_NS)
        assert (pwm.duty_ns(), pwm.enabled()) == (0, False)
    assert sim.errors == []


def test_open_async(pi4: SimPwmKernel) -> None:
    pwm = SysfsPwm(pi4.root, 0, 0)
    asyncio.run(pwm.open_async())
    assert read(pi4.root / "pwmchip0" / "pwm0" / "period") == str(PILOT_PERIOD_NS)


def test_files_that_never_appear_time_out(tmp_path: Path) -> None:
    with SimPwmKernel(tmp_path / "pwm", PI4, ready_delay_s=None) as sim:
        pwm = SysfsPwm(sim.root, 0, 1, timeout_s=0.1)
        with pytest.raises(PwmError, match=r"pwmchip0/pwm1: not usable 0\.1 s.*period missing"):
            pwm.open()


def test_export_never_answered_times_out(tmp_path: Path) -> None:
    sim = SimPwmKernel(tmp_path / "pwm", PI4)  # never started: nobody answers the export
    with pytest.raises(PwmError, match=r"pwm0: not usable .*pwm0/ missing"):
        SysfsPwm(sim.root, 0, 0, timeout_s=0.05).open()
    assert read(sim.root / "pwmchip0" / "export") == "0"


def test_an_exported_channel_is_reused_without_exporting(tmp_path: Path) -> None:
    sim = SimPwmKernel(tmp_path / "pwm", PI4)
    with sim:
        opened(sim, 0, 0)
    # The kernel stopped answering: an export now would never be answered or cleared.
    again = opened(sim, 0, 0)
    assert read(sim.root / "pwmchip0" / "export") == ""
    again.set_duty_ns(500_000)
    assert again.duty_ns() == 500_000


# --- The kernel's rules: period before duty, never duty > period ------------------------------


def test_a_fresh_channel_gets_its_period_before_any_duty(
    pi4: SimPwmKernel, caplog: pytest.LogCaptureFixture
) -> None:
    log = WriteLog(caplog)
    pilot = PilotPwm(opened(pi4, 0, 0))
    pilot.pwm(amps_to_duty(32))
    pilot.steady()
    pilot.state_f()
    pilot.pwm(amps_to_duty(6))
    assert log.writes()[:2] == [("export", "0"), ("period", str(PILOT_PERIOD_NS))]
    assert log.replay() == []


def test_reopening_at_a_shorter_period_lowers_the_duty_first(
    pi4: SimPwmKernel, caplog: pytest.LogCaptureFixture
) -> None:
    # A previous run left 500 Hz with 75 % duty, running, and went away without closing.
    previous = opened(pi4, 0, 0, period_ns=2_000_000)
    previous.set_duty_ns(1_500_000)
    previous.enable(True)
    until(lambda: pi4.output(0, 0) == (True, 0.75))
    log = WriteLog(caplog)
    pwm = opened(pi4, 0, 0)
    assert log.replay(period=2_000_000, duty=1_500_000, enable=1) == []
    assert [name for name, _ in log.writes()] == ["enable", "duty_cycle", "period"]
    # Nothing of the previous run's offer survives the open: disabled, duty 0.
    assert read(pi4.root / "pwmchip0" / "pwm0" / "period") == str(PILOT_PERIOD_NS)
    assert (pwm.duty_ns(), pwm.enabled()) == (0, False)


def test_a_left_inverted_polarity_is_reset(pi4: SimPwmKernel) -> None:
    previous = opened(pi4, 0, 0)
    (pi4.root / "pwmchip0" / "pwm0" / "polarity").write_text("inversed\n")
    previous.close()
    opened(pi4, 0, 0)
    assert read(pi4.root / "pwmchip0" / "pwm0" / "polarity") == "normal"


def test_duty_is_clamped_to_the_period(pi4: SimPwmKernel) -> None:
    pwm = opened(pi4, 0, 0)
    pwm.set_duty_ns(PILOT_PERIOD_NS + 1)
    assert pwm.duty_ns() == PILOT_PERIOD_NS
    pwm.set_duty_ns(-1)
    assert pwm.duty_ns() == 0


def test_close_disables_and_leaves_the_channel_exported(pi4: SimPwmKernel) -> None:
    pwm = opened(pi4, 0, 0)
    PilotPwm(pwm).steady()
    pwm.close()
    assert pi4.output(0, 0) == (False, 1.0)  # disabled: idles low (-12 V) whatever the duty
    assert (pi4.root / "pwmchip0" / "pwm0").is_dir()
    pwm.close()
    with pytest.raises(PwmError, match="not open"):
        pwm.set_duty_ns(0)


# --- The pilot ------------------------------------------------------------------------------


def test_16_amps(pi4: SimPwmKernel) -> None:
    pwm = opened(pi4, 0, 0)
    PilotPwm(pwm).pwm(amps_to_duty(16))
    # 16 A / 0.6 = 26.67 %; hal.pilot rounds down to its 0.1 % grid (26.6 %).
    assert abs(pwm.duty_ns() - 266_667) <= 1_000
    assert pwm.duty_ns() == 266_000
    assert pwm.enabled()
    assert read(pi4.root / "pwmchip0" / "pwm0" / "period") == "1000000"


def test_every_0_1_percent_step_is_1000_ns(pi4: SimPwmKernel) -> None:
    pwm = opened(pi4, 0, 0)
    pilot = PilotPwm(pwm)
    # Every third step and 100 % (each write costs a truncation on a disk file, not on sysfs).
    for step in [*range(0, 1000, 3), 1000]:
        pilot.pwm(step / 10)
        assert pwm.duty_ns() == step * 1_000


def test_steady_and_state_f(pi4: SimPwmKernel) -> None:
    pwm = opened(pi4, 0, 0)
    pilot = PilotPwm(pwm)
    pilot.steady()
    assert (pwm.duty_ns(), pwm.enabled()) == (PILOT_PERIOD_NS, True)
    assert pi4.output(0, 0) == (True, 1.0)
    pilot.state_f()
    assert (pwm.duty_ns(), pwm.enabled()) == (0, True)
    assert pi4.output(0, 0) == (True, 0.0)


def test_inverted_stage(pi4: SimPwmKernel) -> None:
    pwm = opened(pi4, 0, 1)
    pilot = PilotPwm(pwm, invert=True)
    pilot.pwm(amps_to_duty(16))
    assert pwm.duty_ns() == PILOT_PERIOD_NS - 266_000
    pilot.steady()
    assert (pwm.duty_ns(), pwm.enabled()) == (0, True)
    pilot.state_f()
    assert (pwm.duty_ns(), pwm.enabled()) == (PILOT_PERIOD_NS, True)


@pytest.mark.parametrize("duty", [-0.1, 100.1, float("nan")])
def test_pilot_refuses_a_duty_outside_0_to_100(pi4: SimPwmKernel, duty: float) -> None:
    pwm = opened(pi4, 0, 0)
    with pytest.raises(PilotError, match="outside"):
        PilotPwm(pwm).pwm(duty)
    assert (pwm.duty_ns(), pwm.enabled()) == (0, False)


def test_pilot_refuses_a_period_other_than_1_khz(pi4: SimPwmKernel) -> None:
    with pytest.raises(ValueError, match="1 kHz"):
        PilotPwm(SysfsPwm(pi4.root, 0, 0, period_ns=2_000_000))


# --- Refusals -------------------------------------------------------------------------------


def test_a_missing_chip_is_refused(pi4: SimPwmKernel) -> None:
    with pytest.raises(PwmError, match=r"pwmchip3: no such PWM chip.*pwmchip0 \(fe20c000"):
        SysfsPwm(pi4.root, 3, 0).open()


def test_a_channel_beyond_npwm_is_refused(pi4: SimPwmKernel) -> None:
    with pytest.raises(PwmError, match=r"pwmchip0 has 2 channels \(0\.\.1\): no channel 2"):
        SysfsPwm(pi4.root, 0, 2).open()
    assert read(pi4.root / "pwmchip0" / "export") == ""  # refused before exporting anything


# --- The simulated kernel itself ------------------------------------------------------------


def test_the_simulated_kernel_notes_what_the_kernel_refuses(tmp_path: Path) -> None:
    # Its errors == [] in the tests above mean something only if it does see these.
    with SimPwmKernel(tmp_path / "pwm", PI4) as sim:
        pwm = opened(sim, 0, 0)
        (sim.root / "pwmchip0" / "pwm0" / "duty_cycle").write_text("1000001\n")
        until(lambda: any("duty_cycle 1000001 > period 1000000" in e for e in sim.errors))
        pwm.set_duty_ns(0)
        (sim.root / "pwmchip0" / "pwm0" / "period").write_text("0\n")
        (sim.root / "pwmchip0" / "pwm0" / "enable").write_text("1\n")
        until(lambda: any("enabled with period 0" in e for e in sim.errors))


def test_the_simulated_kernel_unexports(pi4: SimPwmKernel) -> None:
    opened(pi4, 0, 1)
    (pi4.root / "pwmchip0" / "unexport").write_text("1\n")
    until(lambda: not (pi4.root / "pwmchip0" / "pwm1").exists())
    assert pi4.output(0, 1) == (False, 0.0)
