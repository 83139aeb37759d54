"""Backends are chosen by URL scheme and imported only when chosen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hal import registry
from hal.interfaces import BackendContext, Hardware
from hal.sim.bus import SimBus

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _context(port_ids: list[str], *, jumper: bool = False) -> BackendContext:
    return BackendContext(tuple(port_ids), (208.0,) * len(port_ids), jumper=jumper)


def test_sim_scheme_opens_the_simulated_bus() -> None:
    hw = registry.open_hardware("sim://?seed=3&noise=0", _context(["1", "2"], jumper=True))
    assert isinstance(hw, SimBus) and isinstance(hw, Hardware)
    assert hw.jumper.installed() is True
    assert len(hw.ports) == 2


def test_url_can_override_the_jumper_sense_to_simulate_a_miswired_station() -> None:
    hw = registry.open_hardware("sim://?jumper=0", _context(["1"], jumper=True))
    assert hw.jumper.installed() is False


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuch://x", "no hardware backend for nosuch:// (known: gpio://, serial://, sim://)"),
        ("/dev/ttyUSB0", "not a backend URL"),
        ("", "not a backend URL"),
    ],
)
def test_unknown_or_malformed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(
        registry.BackendError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        registry.open_hardware(url, _context(["1"]))


def test_unknown_meter_schemes_are_refused_naming_the_known_ones() -> None:
    with pytest.raises(registry.BackendError, match=r"no meter backend for mbus://.*modbus-tcp://"):
        registry.open_meter("mbus://127.0.0.1:5020")


def test_importing_the_registry_imports_no_backend() -> None:
    code = "import sys, hal.registry; print('hal.sim.bus' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_sim_section_is_read_by_the_sim_backend_only_when_a_file_has_one() -> None:
    code = (
        "import sys; from firmware.config import load_station; "
        f"load_station({str(CONFIGS / 'ct4000-jumper.yaml')!r}); "
        "a = 'hal.sim.config' in sys.modules; "
        f"c = load_station({str(CONFIGS / 'demo-jumper.yaml')!r}); "
        "b = 'hal.sim.config' in sys.modules; "
        "print(a, b, type(c.hardware_section).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "SimSection"]


def test_the_parsed_section_goes_back_to_the_backend_that_read_it() -> None:
    from firmware.app import backend_context
    from firmware.config import load_station

    config = load_station(CONFIGS / "demo-jumper.yaml")
    context = backend_context(config)
    assert context.port_ids == ("1", "2") and context.voltage_v == (208.0, 208.0)
    assert context.section is config.hardware_section and context.jumper
    assert context.weld_detect_s == config.port_config.weld_detect_s
    bus = registry.open_hardware(config.hardware_url, context)
    assert isinstance(bus, SimBus) and bus.services == ()
    bus.advance(30.0)
    assert bus.port("1").ev is not None  # the section's first EV arrives at 2 s


def test_a_section_for_a_backend_without_one_is_refused() -> None:
    with pytest.raises(
        registry.BackendError,
        match=r"the serial:// backend has no config section \(backends with one: gpio://, sim://\)",
    ):
        registry.parse_section("serial", None, ["1"])  # type: ignore[arg-type]


def test_a_backend_context_has_a_voltage_per_port() -> None:
    with pytest.raises(ValueError, match="2 ports but 1 voltages"):
        BackendContext(("1", "2"), (208.0,))
