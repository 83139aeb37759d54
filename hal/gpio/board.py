"""Board files: which Raspberry Pi pin does what on a station controller board.

One job: read a board file (``hal/gpio/boards/<name>.yaml``, package data, or the path of a
user's own) into a checked ``Board``, refusing with ``FILE:LINE: FIELD: message`` a board that
maps two things to one pin, puts a pilot on a pin without hardware PWM or on a PWM channel the
Pi does not have, or asks for an ADC channel the chip does not have. The format is documented at
the top of ``hal/gpio/boards/reference.yaml`` and in docs/raspberry-pi.md.

Hardware PWM (the pilot must be: hal/gpio/sysfs_pwm.py): on a Pi 4 with ``dtoverlay=pwm-2chan``
GPIO 12 or 18 is channel 0 and GPIO 13 or 19 channel 1 of the SoC's PWM (2 channels); on a Pi 5
the RP1's PWM0 has 4 channels, GPIO 12, 13, 18, 19 being channels 0, 1, 2, 3 (Raspberry Pi
documentation, "config.txt: pwm overlays"; the RP1 peripherals datasheet, GPIO function table).
The SPI0 pins (GPIO 7-11) belong to the pilot ADC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hal import shipped
from hal.gpio.adc import CLOCKS_PER_CONVERSION, SPI_HZ, Divider, burst_size
from hal.yamlnodes import ConfigError, Fields, Value, load_document

__all__ = [
    "BOARD_KEYS",
    "PWM_CHANNELS",
    "Board",
    "BoardError",
    "Input",
    "PortPins",
    "load_board",
    "pin_table",
    "port_count_problem",
    "read_board",
]

# GPIO -> hardware PWM channel, per Pi model (see the module docstring for the sources).
PWM_CHANNELS: dict[int, dict[int, int]] = {
    4: {12: 0, 18: 0, 13: 1, 19: 1},
    5: {12: 0, 13: 1, 18: 2, 19: 3},
}
# The sysfs device of the PWM block the pilot channels are on, by model: how the chip is found
# whatever number the kernel gave it (the Pi 5's changed with kernel 6.12).
PWM_DEVICE: dict[int, str] = {4: "fe20c000.pwm", 5: "1f00098000.pwm"}
# SPI0: CE1, CE0, MISO, MOSI, SCLK.
SPI0_PINS = (7, 8, 9, 10, 11)
ADC_CHANNELS = {"mcp3008": 8, "mcp3004": 4}
GPIO_COUNT = 28  # GPIO 0..27 on the 40-pin header

BOARD_KEYS = ("board", "description", "pi", "gpiochip", "adc", "keepalive", "jumper", "ports")
_PORT_KEYS = ("pilot", "adc_channel", "invert", "contactor", "feedback", "gfci", "gfci_test")
_INPUT_KEYS = ("pin", "active_low")
_ADC_KEYS = ("chip", "spi_bus", "spi_device", "max_speed_hz", "divider")


class BoardError(ConfigError):
    """A board file refused (``FILE:LINE: FIELD: message``)."""


@dataclass(frozen=True, slots=True)
class Input:
    """A digital input: its GPIO and whether it reads active when the pin is low."""

    pin: int
    active_low: bool = False


@dataclass(frozen=True, slots=True)
class PortPins:
    """One port's pins: its pilot (hardware PWM channel and ADC channel), its contactor coil
    and feedback, its GFCI trip input and self-test output."""

    pilot_gpio: int
    pwm_channel: int
    adc_channel: int
    invert: bool
    contactor: int
    feedback: Input
    gfci: Input
    gfci_test: int | None


@dataclass(frozen=True, slots=True)
class Board:
    """A checked board: the Pi model, its pins and the pilot ADC."""

    name: str
    pi: int
    gpiochip: int
    adc_chip: str
    spi_bus: int
    spi_device: int
    max_speed_hz: int
    divider: Divider
    keepalive: int
    jumper: Input
    ports: tuple[PortPins, ...]

    @property
    def pwm_device(self) -> str:
        """The sysfs device name of the PWM block (``find_chip``)."""
        return PWM_DEVICE[self.pi]

    @property
    def burst(self) -> int:
        """Conversions per pilot burst: two PWM periods at this board's SPI clock's ceiling
        (hal.gpio.adc, "Burst size"); a slower host only makes the burst longer."""
        return burst_size(self.max_speed_hz / CLOCKS_PER_CONVERSION)


def load_board(name: str) -> Board:
    """The board of a shipped name (``reference``) or a user's file (a path ending in .yaml).
    Every refusal is a ``BoardError``."""
    try:
        with shipped.located("hal.gpio", "boards", name, "board") as path:
            return _parse(path)
    except FileNotFoundError as exc:
        raise BoardError(name, None, "", str(exc)) from None


def known_boards() -> list[str]:
    """The shipped boards: the files in hal/gpio/boards/."""
    return shipped.known("hal.gpio", "boards")


def _parse(path: Path) -> Board:
    try:
        return read_board(load_document(path))
    except BoardError:
        raise
    except ConfigError as exc:
        raise BoardError(exc.path, exc.line, exc.field, exc.message) from None


class _Pins:
    """Every pin a board uses, with the field that took it: a second claim is refused."""

    def __init__(self) -> None:
        self._owner: dict[int, str] = dict.fromkeys(SPI0_PINS, "adc (SPI0)")

    def take(self, value: Value, what: str) -> int:
        pin = value.integer(0, GPIO_COUNT - 1)
        owner = self._owner.get(pin)
        if owner is not None:
            value.fail(f"GPIO {pin} is already {owner}")
        self._owner[pin] = what
        return pin


def _input(value: Value, pins: _Pins, what: str) -> Input:
    # A bare number is an active-high input; a mapping says active_low too.
    if value.node.tag.endswith(":int"):
        return Input(pins.take(value, what))
    fields = value.mapping(_INPUT_KEYS, ("pin",))
    low = fields.get("active_low")
    return Input(pins.take(fields.require("pin"), what), low.boolean() if low else False)


def _divider(value: Value) -> Divider:
    fields = value.mapping(Divider.KEYS, Divider.KEYS)
    numbers = {key: fields.require(key).positive() for key in Divider.KEYS}
    try:
        return Divider(**numbers)
    except ValueError as exc:
        value.fail(str(exc))


def read_board(root: Value) -> Board:
    """A board from an already-read document; refusals are ``ConfigError``."""
    top = root.mapping(BOARD_KEYS, ("board", "pi", "adc", "keepalive", "jumper", "ports"))
    name = top.require("board").ident()
    pi_value = top.require("pi")
    pi = pi_value.integer()
    if pi not in PWM_CHANNELS:
        pi_value.fail(f"Raspberry Pi {pi} is not supported (supported: 4, 5)")
    gpiochip_value = top.get("gpiochip")
    gpiochip = 0 if gpiochip_value is None else gpiochip_value.integer(0, 16)
    pins = _Pins()
    adc = top.require("adc").mapping(_ADC_KEYS, ("chip", "divider"))
    adc_chip, adc_channels = _adc_chip(adc)
    spi_bus = _int(adc, "spi_bus", 0, 0, 1)
    if spi_bus != 0:
        adc.require("spi_bus").fail("the pilot ADC is on SPI0 (GPIO 7-11) on these boards")
    spi_device = _int(adc, "spi_device", 0, 0, 1)
    max_speed_hz = _int(adc, "max_speed_hz", SPI_HZ, 100_000, 3_600_000)
    divider = _divider(adc.require("divider"))
    keepalive = pins.take(top.require("keepalive"), "keepalive")
    jumper = _input(top.require("jumper"), pins, "jumper")
    ports: list[PortPins] = []
    channels: dict[int, str] = {}
    adc_used: dict[int, str] = {}
    for i, port_value in enumerate(top.require("ports").sequence(allow_empty=False)):
        what = f"ports[{i}]"
        fields = port_value.mapping(
            _PORT_KEYS, ("pilot", "adc_channel", "contactor", "feedback", "gfci")
        )
        pilot_value = fields.require("pilot")
        pilot = pins.take(pilot_value, f"{what}.pilot")
        channel = PWM_CHANNELS[pi].get(pilot)
        if channel is None:
            usable = ", ".join(str(g) for g in sorted(PWM_CHANNELS[pi]))
            pilot_value.fail(
                f"GPIO {pilot} has no hardware PWM on a Raspberry Pi {pi} (pilot pins: {usable})"
            )
        if channel in channels:
            pilot_value.fail(f"PWM channel {channel} is already {channels[channel]}'s pilot")
        channels[channel] = what
        adc_value = fields.require("adc_channel")
        adc_channel = adc_value.integer(0, adc_channels - 1)
        if adc_channel in adc_used:
            adc_value.fail(f"ADC channel {adc_channel} is already {adc_used[adc_channel]}'s")
        adc_used[adc_channel] = what
        invert = fields.get("invert")
        test = fields.get("gfci_test")
        ports.append(
            PortPins(
                pilot_gpio=pilot,
                pwm_channel=channel,
                adc_channel=adc_channel,
                invert=invert.boolean() if invert else False,
                contactor=pins.take(fields.require("contactor"), f"{what}.contactor"),
                feedback=_input(fields.require("feedback"), pins, f"{what}.feedback"),
                gfci=_input(fields.require("gfci"), pins, f"{what}.gfci"),
                gfci_test=None if test is None else pins.take(test, f"{what}.gfci_test"),
            )
        )
    return Board(
        name=name,
        pi=pi,
        gpiochip=gpiochip,
        adc_chip=adc_chip,
        spi_bus=spi_bus,
        spi_device=spi_device,
        max_speed_hz=max_speed_hz,
        divider=divider,
        keepalive=keepalive,
        jumper=jumper,
        ports=tuple(ports),
    )


def _adc_chip(adc: Fields) -> tuple[str, int]:
    value = adc.require("chip")
    chip = value.string().strip().lower()
    if chip not in ADC_CHANNELS:
        value.fail(f"{chip!r} is not a supported ADC (supported: {', '.join(ADC_CHANNELS)})")
    return chip, ADC_CHANNELS[chip]


def _int(fields: Fields, key: str, default: int, low: int, high: int) -> int:
    value = fields.get(key)
    return default if value is None else value.integer(low, high)


def port_count_problem(board: Board, station_ports: int) -> str | None:
    """Why this board cannot carry a station of ``station_ports`` ports, or None."""
    if len(board.ports) == station_ports:
        return None
    return f"board {board.name} has {len(board.ports)} ports, the station {station_ports}"


def pin_table(board: Board) -> Mapping[int, str]:
    """GPIO -> what it does, for the docs and ``config check``."""
    table = {pin: "adc (SPI0)" for pin in SPI0_PINS}
    table[board.keepalive] = "keepalive (charge pump)"
    table[board.jumper.pin] = "jumper sense"
    for i, p in enumerate(board.ports):
        table[p.pilot_gpio] = f"port {i + 1} pilot (PWM channel {p.pwm_channel})"
        table[p.contactor] = f"port {i + 1} contactor coil"
        table[p.feedback.pin] = f"port {i + 1} contactor feedback"
        table[p.gfci.pin] = f"port {i + 1} GFCI trip"
        if p.gfci_test is not None:
            table[p.gfci_test] = f"port {i + 1} GFCI self-test"
    return dict(sorted(table.items()))
