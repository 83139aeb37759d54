"""Backends are chosen by URL scheme and imported only when chosen."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hal import registry
from hal.interfaces import Hardware
from hal.sim.bus import SimBus


def test_sim_scheme_opens_the_simulated_bus() -> None:
    hw = registry.open_hardware("sim://?seed=3&noise=0", port_ids=["1", "2"], jumper=True)
    assert isinstance(hw, SimBus) and isinstance(hw, Hardware)
    assert hw.jumper.installed() is True
    assert len(hw.ports) == 2


def test_url_can_override_the_jumper_sense_to_simulate_a_miswired_station() -> None:
    hw = registry.open_hardware("sim://?jumper=0", port_ids=["1"], jumper=True)
    assert hw.jumper.installed() is False


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuch://x", "no hardware backend for nosuch:// (known: serial://, sim://)"),
        ("/dev/ttyUSB0", "not a backend URL"),
        ("", "not a backend URL"),
    ],
)
def test_unknown_or_malformed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(
        registry.BackendError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        registry.open_hardware(url, port_ids=["1"])


def test_unknown_meter_schemes_are_refused_naming_the_known_ones() -> None:
    with pytest.raises(registry.BackendError, match=r"no meter backend for mbus://.*modbus-tcp://"):
        registry.open_meter("mbus://127.0.0.1:5020")


def test_importing_the_registry_imports_no_backend() -> None:
    code = "import sys, hal.registry; print('hal.sim.bus' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
