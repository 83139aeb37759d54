"""The pilot's PWM through the Linux kernel's hardware PWM sysfs interface.

One job: drive one hardware PWM channel through ``/sys/class/pwm`` (the kernel ABI,
Documentation/ABI/testing/sysfs-class-pwm) and, on it, the J1772 control pilot. ``SysfsPwm``
is the channel: export, wait for it to be usable, period, duty, enable. ``PilotPwm`` is the
pilot on it: 1 kHz, the duty of an offer, steady +12 V, state F. ``find_chip`` finds the chip
by the device it belongs to, since its number depends on the kernel.

**Why hardware PWM.** J1772 / IEC 61851-1 set the offer by the duty of a 1 kHz square wave in
0.1 % steps (1 µs of a 1 ms period), and an EV reads every period. The PWM of lgpio and
gpiozero is software-timed: about 1 % steps and jitter whenever the CPU is busy. That is not
a pilot. The SoC's PWM block times the edges itself; Linux only sets its registers.

**From GPIO level to pilot volts.** The reference board feeds the GPIO into a comparator /
op-amp stage powered from +-12 V: GPIO high -> +12 V, GPIO low -> -12 V (the EV's resistors
and diode then pull the high plateau to 9 or 6 V). A disabled PWM channel (as at boot, before
anything exports it, and after ``close``) idles low, so the pilot idles at -12 V: state F, "EVSE
not available", the safe state. The board must also pull the pin down so that it is low while
the Pi boots. A board with an inverting stage (``invert=True``) gets every duty as period -
duty; its idle level is then +12 V (no PWM: nothing offered, but not state F).

**The kernel's rules.** Every write applies the whole state and the kernel refuses (EINVAL) one
that leaves duty_cycle > period, or a period of 0, so: the period is written before any duty,
and a duty is lowered before the period is. Each value is one write of ASCII decimal and a
newline. After ``export`` the ``pwmN/`` folder appears at once but its files belong to root
until udev gives them to the ``gpio`` group (Raspberry Pi OS's 99-com.rules) a moment later:
``open`` waits (bounded) until they exist and are writable (``os.access``).

**Raspberry Pi layouts.** Pi 4 with ``dtoverlay=pwm-2chan``: ``pwmchip0``, 2 channels (GPIO
12/18 -> 0, 13/19 -> 1), device ``fe20c000.pwm``. Pi 5: the RP1's PWM0, 4 channels (GPIO 12,
13, 18, 19 -> 0..3), device ``1f00098000.pwm``; usually ``pwmchip2`` before kernel 6.12 and
``pwmchip0`` from 6.12 (chips numbered in probe order). Hence ``find_chip`` by device.

Opening is blocking (file polling for up to ``timeout_s``): the backend does it at start, off
the control tick (``open_async``). After that every call is a few small writes, skipped when
the value is unchanged.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import time
from pathlib import Path

from hal.pilot import MAX_DUTY_PCT, MIN_DUTY_PCT, PilotError

__all__ = ["PILOT_PERIOD_NS", "PilotPwm", "PwmError", "SysfsPwm", "find_chip"]

log = logging.getLogger("ampshare.gpio.pwm")

# SAE J1772 / IEC 61851-1 Annex A: the pilot oscillates at 1 kHz.
PILOT_PERIOD_NS = 1_000_000
# What the channel's files must be before it can be used (polarity is only read).
_READY_FILES = ("period", "duty_cycle", "enable")
# How often open() looks for the exported channel: udev usually takes tens of milliseconds.
_POLL_S = 0.005


class PwmError(OSError):
    """A PWM chip or channel missing, refused or never ready; the message names the path."""


def find_chip(root: Path, device: str | None, chip: int | None) -> int:
    """The number of the PWM chip under ``root`` (``/sys/class/pwm``): ``chip`` itself if it
    exists, or the one chip whose ``device`` link resolves to a path containing ``device``
    (``fe20c000.pwm``, ``1f00098000.pwm``). Give exactly one of the two (ValueError
    otherwise). Raises ``PwmError`` listing the chips there are when none (or several) fit."""
    chips = _chips(root)
    if chip is not None and device is None:
        if chip in chips:
            return chip
        raise PwmError(f"{root / f'pwmchip{chip}'} does not exist; {_listing(root, chips)}")
    if device is None or chip is not None:
        raise ValueError("name the PWM chip by its number or by its device (one of the two)")
    matches = [n for n, path in chips.items() if path is not None and device in path]
    if len(matches) == 1:
        return matches[0]
    what = "no PWM chip" if not matches else "more than one PWM chip"
    raise PwmError(f"{what} under {root} has a device matching {device!r}; {_listing(root, chips)}")


def _chips(root: Path) -> dict[int, str | None]:
    """Chip number -> the resolved path of its ``device`` link (None without one)."""
    found: dict[int, str | None] = {}
    try:
        entries = list(root.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        number = entry.name.removeprefix("pwmchip")
        if number == entry.name or not (number.isascii() and number.isdigit()):
            continue
        link = entry / "device"
        found[int(number)] = str(link.resolve()) if link.exists() else None
    return dict(sorted(found.items()))


def _listing(root: Path, chips: dict[int, str | None]) -> str:
    if not chips:
        return f"there is no pwmchip under {root} (is the PWM overlay in config.txt?)"
    names = (f"pwmchip{n} ({Path(p).name if p else 'no device'})" for n, p in chips.items())
    return "there are: " + ", ".join(names)


class SysfsPwm:
    """One channel of ``root/pwmchip{chip}/``, driven through its sysfs files.

    Nothing is touched before ``open``. ``open`` leaves the channel exported at ``period_ns``,
    disabled, with duty 0 and normal polarity: whatever a previous run left (an offer of
    current, an inverted polarity) is gone before the station decides anything. ``close``
    disables the channel and leaves it exported: the pin idles low either way, and the next
    ``open`` need not wait for udev again.
    """

    def __init__(
        self,
        root: Path,
        chip: int,
        channel: int,
        period_ns: int = PILOT_PERIOD_NS,
        *,
        timeout_s: float = 2.0,
    ) -> None:
        if period_ns <= 0:
            raise ValueError(f"a PWM period must be positive, not {period_ns} ns")
        if chip < 0 or channel < 0:
            raise ValueError(f"no PWM chip {chip} channel {channel}: numbers start at 0")
        self.chip_dir = root / f"pwmchip{chip}"
        self.channel = channel
        self.dir = self.chip_dir / f"pwm{channel}"
        self.period_ns = period_ns
        self.timeout_s = timeout_s
        # What was last written, so that an unchanged value is not written again each tick;
        # None while closed.
        self._duty: int | None = None
        self._enabled: bool | None = None

    def open(self) -> None:
        """Export the channel if needed, wait until it is usable, and set it up (blocking)."""
        if not self.chip_dir.is_dir():
            root = self.chip_dir.parent
            raise PwmError(f"{self.chip_dir}: no such PWM chip; {_listing(root, _chips(root))}")
        npwm = _read_int(self.chip_dir / "npwm")
        if self.channel >= npwm:
            raise PwmError(
                f"{self.chip_dir} has {npwm} channels (0..{npwm - 1}): no channel {self.channel}"
            )
        if not self.dir.is_dir():
            self._export()
        self._wait_ready()
        enabled = _read_int(self.dir / "enable") != 0
        duty = _read_int(self.dir / "duty_cycle")
        if enabled:
            self._put("enable", 0)
        if duty:  # lowered before the period, so duty <= period at every write
            self._put("duty_cycle", 0)
        if _read_int(self.dir / "period") != self.period_ns:
            self._put("period", self.period_ns)
        polarity = self.dir / "polarity"
        # An inverted polarity would turn state F into +12 V. The kernel changes it only while
        # disabled and (as every write) with a period set: hence last.
        if polarity.exists() and _read(polarity) != "normal":
            self._put("polarity", "normal")
        self._duty, self._enabled = 0, False

    async def open_async(self) -> None:
        """``open`` in a worker thread, so the event loop goes on while udev catches up."""
        await asyncio.to_thread(self.open)

    def set_duty_ns(self, ns: int) -> None:
        """The high time of each period, clamped to 0..period."""
        ns = min(max(ns, 0), self.period_ns)
        if self._check_open()[0] != ns:
            self._put("duty_cycle", ns)
            self._duty = ns

    def enable(self, on: bool) -> None:
        """Run the output (True) or let it idle low (False)."""
        if self._check_open()[1] != on:
            self._put("enable", int(on))
            self._enabled = on

    def close(self) -> None:
        """Disable the output (it idles low) and leave the channel exported. Idempotent."""
        if self._duty is not None:
            self.enable(False)
        self._duty = self._enabled = None

    def duty_ns(self) -> int:
        """The duty_cycle the kernel holds, read back from its file."""
        return _read_int(self.dir / "duty_cycle")

    def enabled(self) -> bool:
        """Whether the kernel holds the channel enabled, read back from its file."""
        return _read_int(self.dir / "enable") != 0

    def _check_open(self) -> tuple[int, bool]:
        if self._duty is None or self._enabled is None:
            raise PwmError(f"{self.dir}: not open")
        return self._duty, self._enabled

    def _export(self) -> None:
        try:
            _write(self.chip_dir / "export", self.channel)
        except PwmError as exc:
            # EBUSY: exported since we looked (another process, a previous run): use it.
            if exc.errno != errno.EBUSY:
                raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while missing := self._not_ready():
            if time.monotonic() >= deadline:
                raise PwmError(
                    f"{self.dir}: not usable {self.timeout_s:g} s after export "
                    f"({', '.join(missing)}); the files are given to the gpio group by udev: "
                    "is this user in it?"
                )
            time.sleep(_POLL_S)

    def _not_ready(self) -> list[str]:
        if not self.dir.is_dir():
            return [f"{self.dir.name}/ missing"]
        missing = []
        for name in _READY_FILES:
            path = self.dir / name
            if not path.exists():
                missing.append(f"{name} missing")
            elif not os.access(path, os.W_OK):
                missing.append(f"{name} not writable")
        return missing

    def _put(self, name: str, value: int | str) -> None:
        _write(self.dir / name, value)


class PilotPwm:
    """The J1772 control pilot on a hardware PWM channel: the output half of a
    ``PilotDriver`` (``pwm``, ``steady``, ``state_f``); the backend measures the pilot
    (``sample``) with its ADC. ``invert``: the board's stage inverts (duty -> period - duty).
    The channel must be open before any call."""

    def __init__(self, pwm: SysfsPwm, invert: bool = False) -> None:
        if pwm.period_ns != PILOT_PERIOD_NS:
            raise ValueError(
                f"the J1772 pilot runs at 1 kHz (period {PILOT_PERIOD_NS} ns), "
                f"not with a period of {pwm.period_ns} ns"
            )
        self.sysfs = pwm
        self.invert = invert

    def pwm(self, duty_pct: float) -> None:
        """Oscillate +-12 V at 1 kHz, high for ``duty_pct`` % of each period."""
        if not MIN_DUTY_PCT <= duty_pct <= MAX_DUTY_PCT or math.isnan(duty_pct):
            raise PilotError(
                f"pilot duty {duty_pct!r} % is outside {MIN_DUTY_PCT:g}..{MAX_DUTY_PCT:g} %"
            )
        self._high_ns(round(duty_pct / 100 * PILOT_PERIOD_NS))

    def steady(self) -> None:
        """Steady +12 V (state B's EVSE side, a pause): held high the whole period."""
        self._high_ns(PILOT_PERIOD_NS)

    def state_f(self) -> None:
        """Steady -12 V (state F): held low, still enabled, so that an inverting stage holds
        it too."""
        self._high_ns(0)

    def _high_ns(self, ns: int) -> None:
        # Duty before enable: the first period after a disabled spell already has it.
        self.sysfs.set_duty_ns(PILOT_PERIOD_NS - ns if self.invert else ns)
        self.sysfs.enable(True)


def _write(path: Path, value: int | str) -> None:
    """One whole-value write, as sysfs wants it. No O_CREAT: a file the kernel has not made
    (yet) is an error, never a new plain file."""
    data = f"{value}\n".encode("ascii")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        raise PwmError(exc.errno, f"cannot write {value} to {path}: {exc.strerror}") from exc
    # Every write, in order: what to look at on a Pi whose kernel refused one (and what the
    # tests replay on the kernel's rules).
    log.debug("write %s %s", path, value)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise PwmError(f"cannot read {path}: {exc}") from exc


def _read_int(path: Path) -> int:
    text = _read(path)
    try:
        return int(text)
    except ValueError:
        raise PwmError(f"{path}: {text!r} is not a number") from None
