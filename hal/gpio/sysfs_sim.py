"""The kernel's side of the PWM sysfs interface, simulated in a folder: for tests and for a
station run without hardware.

One job: make a folder behave like ``/sys/class/pwm`` to ``hal.gpio.sysfs_pwm``, with plain
files and a polling thread. ``SimPwmKernel`` lays out ``pwmchipN/`` (``npwm``, ``export``,
``unexport``, and a ``device`` link into ``root/.devices/``, so a temporary folder holds it
all), answers an export with ``pwmM/`` and an unexport by removing it, and reads back what the
output does (``output``).

Export is answered in steps, as on a Raspberry Pi: ``pwmM/`` at once, empty; its files
(``period``, ``duty_cycle``, ``enable``, ``polarity``) ``ready_delay_s`` later, read-only; and
writable after another ``ready_delay_s``. On a Pi the files are there at once but belong to root
until udev gives them to the gpio group; here they are missing at first because a process
running as root (tests may) writes read-only files regardless: only a missing file makes
such a writer wait.

Plain files cannot refuse a write as the kernel does (EINVAL for duty_cycle > period, or for
enabling with period 0), so the thread checks every state it sees, and ``output`` the state it
reads, and note what the kernel would have refused in ``errors``. A state that lasts less than
a poll (2 ms) can go unseen: the thread is a second observer, not a proof.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["SimPwmKernel"]

# A channel's attribute files and the value the kernel gives each at export. The kernel makes
# them all at once; here they appear one by one, those a writer waits for last (enable), so
# that when it goes on they are all there.
_FILES = {"polarity": "normal", "period": "0", "duty_cycle": "0", "enable": "0"}
_POLARITIES = ("normal", "inversed")


class SimPwmKernel:
    """PWM chips in a folder: chip number -> (npwm, device name, e.g. ``fe20c000.pwm``).

    The layout is made at once (in a folder that may not exist yet, or holds a previous
    layout, whose exported channels are kept); exports are answered only while the thread runs
    (``start``/``stop``, or ``with``). ``ready_delay_s=None``: exported channels never get
    their files (a kernel or udev that never finishes).
    """

    def __init__(
        self,
        root: Path,
        chips: Mapping[int, tuple[int, str]],
        *,
        ready_delay_s: float | None = 0.02,
        poll_s: float = 0.002,
    ) -> None:
        self.root = root
        self.chips = dict(chips)
        self.ready_delay_s = ready_delay_s
        self.poll_s = poll_s
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # (chip, channel) -> (when, stage) of an export in progress: 1 files appear, 2 writable.
        self._pending: dict[tuple[int, int], tuple[float, int]] = {}
        for chip, (npwm, device) in self.chips.items():
            self._lay_out(chip, npwm, device)

    def start(self) -> None:
        """Start answering exports and watching states (a daemon thread)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="sim-pwm-kernel", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread; the files stay as they are."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def output(self, chip: int, channel: int) -> tuple[bool, float]:
        """(enabled, the fraction of each period the pin is high while enabled), from the
        files; (False, 0.0) for a channel not exported or not ready. A disabled output idles
        low whatever its duty. What the kernel would have refused is noted in ``errors``."""
        state = self._check(chip, channel)
        if state is None:
            return False, 0.0
        period, duty, enabled, polarity = state
        fraction = min(duty / period, 1.0) if period else 0.0
        return enabled, 1.0 - fraction if polarity == "inversed" else fraction

    def _lay_out(self, chip: int, npwm: int, device: str) -> None:
        device_dir = self.root / ".devices" / "platform" / "soc" / device
        device_dir.mkdir(parents=True, exist_ok=True)
        chip_dir = self.root / f"pwmchip{chip}"
        chip_dir.mkdir(parents=True, exist_ok=True)
        (chip_dir / "npwm").write_text(f"{npwm}\n", encoding="ascii")
        for name in ("export", "unexport"):
            (chip_dir / name).write_text("", encoding="ascii")
        link = chip_dir / "device"
        if link.is_symlink():
            link.unlink()
        # Relative, as the kernel's own links are: the folder can move (tmp_path).
        link.symlink_to(os.path.relpath(device_dir, chip_dir))

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._step()
            except Exception as exc:  # a simulator bug must show in errors, not end the thread
                self._note(f"simulated kernel: {exc!r}")

    def _step(self) -> None:
        now = time.monotonic()
        for chip, (npwm, _) in self.chips.items():
            chip_dir = self.root / f"pwmchip{chip}"
            for channel in self._take(chip_dir / "export"):
                pwm_dir = chip_dir / f"pwm{channel}"
                if channel >= npwm:
                    self._note(f"{chip_dir}/export: no channel {channel} (npwm {npwm})")
                elif not pwm_dir.exists():  # the kernel answers EBUSY otherwise
                    pwm_dir.mkdir()
                    if self.ready_delay_s is not None:
                        self._pending[chip, channel] = (now + self.ready_delay_s, 1)
            for channel in self._take(chip_dir / "unexport"):
                self._pending.pop((chip, channel), None)
                shutil.rmtree(chip_dir / f"pwm{channel}", ignore_errors=True)
        for (chip, channel), (when, stage) in list(self._pending.items()):
            if now >= when:
                self._make_ready(chip, channel, stage)
        for chip, (npwm, _) in self.chips.items():
            for channel in range(npwm):
                self._check(chip, channel)

    def _make_ready(self, chip: int, channel: int, stage: int) -> None:
        pwm_dir = self.root / f"pwmchip{chip}" / f"pwm{channel}"
        if stage == 1:
            for name, value in _FILES.items():
                # Written aside and renamed: a reader never sees a file without its value.
                staged = pwm_dir / f".{name}.new"
                staged.write_text(f"{value}\n", encoding="ascii")
                staged.chmod(0o444)
                staged.replace(pwm_dir / name)
            assert self.ready_delay_s is not None  # stage 1 is only pending with a delay
            self._pending[chip, channel] = (time.monotonic() + self.ready_delay_s, 2)
        else:
            for name in _FILES:
                (pwm_dir / name).chmod(0o644)
            del self._pending[chip, channel]

    def _take(self, path: Path) -> list[int]:
        """The channel numbers written to an export/unexport file since the last look."""
        text = path.read_text(encoding="ascii")
        if not text:
            return []
        path.write_text("", encoding="ascii")
        channels = []
        for word in text.split():
            try:
                channels.append(int(word))
            except ValueError:
                self._note(f"{path}: {word!r} is not a channel number")
        return channels

    def _check(self, chip: int, channel: int) -> tuple[int, int, bool, str] | None:
        """The channel's (period, duty, enabled, polarity), noting what the kernel refuses;
        None if it has no files, or they changed while being read (read twice, since a
        writer's period and duty can be read from either side of its write)."""
        pwm_dir = self.root / f"pwmchip{chip}" / f"pwm{channel}"
        try:
            first = _read_state(pwm_dir)
            if first != _read_state(pwm_dir):
                return None
        except (OSError, ValueError):  # not exported, not ready, or read mid-write
            return None
        period, duty, enable, polarity = first
        if duty > period:
            self._note(f"{pwm_dir}: duty_cycle {duty} > period {period}")
        if enable not in ("0", "1"):
            self._note(f"{pwm_dir}: enable {enable!r} (0 or 1)")
        elif enable == "1" and period == 0:
            self._note(f"{pwm_dir}: enabled with period 0")
        if polarity not in _POLARITIES:
            self._note(f"{pwm_dir}: polarity {polarity!r} (normal or inversed)")
        return period, duty, enable == "1", polarity

    def _note(self, message: str) -> None:
        with self._lock:
            if message not in self.errors:
                self.errors.append(message)


def _read_state(pwm_dir: Path) -> tuple[int, int, str, str]:
    def text(name: str) -> str:
        value = (pwm_dir / name).read_text(encoding="ascii").strip()
        if not value:  # between a writer's truncation and its write
            raise ValueError(f"{pwm_dir / name} is being written")
        return value

    return int(text("period")), int(text("duty_cycle")), text("enable"), text("polarity")
