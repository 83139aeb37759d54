"""The ``gpio://`` URL and the ``gpio:`` section of a station file.

One job: read what the GPIO backend opens with. The URL,
``gpio://?board=NAME_OR_PATH[&pwm_root=DIR][&nohw=1]``, names the board file
(``hal.gpio.board``), the root of the kernel's PWM class in sysfs (default ``/sys/class/pwm``;
a Pi with an unusual layout, or a test, points elsewhere) and the no-hardware mode, where the
Pi's side is simulated (``hal.gpio.nohw``): gpiozero's MockFactory for the pins, a simulated
MCP3008 and the kernel's PWM files laid out in ``pwm_root`` as the kernel would. The section,
``gpio: {evs: [...]}``, holds the simulated vehicles of that mode (the ``evs:`` shape of
docs/design.md, "File shapes"); a station on real hardware has none.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from hal.registry import BackendError
from hal.sim.config import parse_evs
from hal.sim.ev import EvSpec
from hal.yamlnodes import Value

__all__ = ["DEFAULT_PWM_ROOT", "GpioSection", "GpioUrl", "parse_section", "parse_url"]

DEFAULT_PWM_ROOT = Path("/sys/class/pwm")
_URL_KEYS = ("board", "pwm_root", "nohw")


@dataclass(frozen=True, slots=True)
class GpioUrl:
    """A ``gpio://`` URL, read."""

    board: str
    pwm_root: Path = DEFAULT_PWM_ROOT
    nohw: bool = False


@dataclass(frozen=True, slots=True)
class GpioSection:
    """A station file's ``gpio:`` section: the simulated vehicles of the no-hardware mode."""

    evs: tuple[EvSpec, ...] = ()


def parse_url(url: str) -> GpioUrl:
    """``gpio://?board=reference&pwm_root=/tmp/pwm&nohw=1``; ``BackendError`` otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "gpio" or parts.netloc or parts.path not in ("", "/"):
        raise BackendError(f"{url}: expected gpio://?board=NAME_OR_PATH[&pwm_root=DIR][&nohw=1]")
    query = parse_qs(parts.query, keep_blank_values=True)
    for key, values in query.items():
        if key not in _URL_KEYS:
            raise BackendError(f"{url}: unknown parameter {key}= (allowed: {', '.join(_URL_KEYS)})")
        if len(values) > 1:
            raise BackendError(f"{url}: {key}= given twice")
    board = query.get("board", [""])[0]
    if not board:
        raise BackendError(
            f"{url}: board= is missing (a shipped board such as reference, or a path)"
        )
    nohw_text = query.get("nohw", ["0"])[0].lower()
    if nohw_text not in ("0", "1", "false", "true", "no", "yes"):
        raise BackendError(f"{url}: nohw={nohw_text} (expected 1 or 0)")
    root = query.get("pwm_root", [""])[0]
    return GpioUrl(
        board=board,
        pwm_root=Path(root) if root else DEFAULT_PWM_ROOT,
        nohw=nohw_text in ("1", "true", "yes"),
    )


def parse_section(value: Value, port_ids: Collection[str]) -> GpioSection:
    """``gpio:`` of a station whose ports are ``port_ids`` (``hal.registry.SECTION_PARSERS``)."""
    fields = value.mapping(("evs",))
    evs = fields.get("evs")
    return GpioSection(evs=() if evs is None else parse_evs(evs, port_ids))
