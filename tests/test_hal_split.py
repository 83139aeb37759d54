"""The serial and Modbus backends after their split by job: each rule is written once, the old
import paths still work, and every module keeps to one job.

Pilot states in ``hal.serial`` are ``hal.pilot``'s (SAE J1772 Table 3); the wire units are the
protocol's and the duty's unit is ``hal.pilot``'s duty step (IEC 61851-1 Table A.7 duties are
on the 0.1 % grid).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hal.modbus.line as line_mod
import hal.modbus.meter as meter_mod
import hal.modbus.url as url_mod
import hal.serial.backend as backend_mod
import hal.serial.board as board_mod
import hal.serial.protocol as protocol_mod
import hal.serial.settings as settings_mod
from hal import pilot
from hal.modbus.server import MeterServer
from hal.registry import BackendError
from hal.serial.state import discrete, pilot_in_c
from hal.sim.bus import SimBus

HAL = Path(__file__).resolve().parents[1] / "hal"
MINE = [
    HAL / "pilot.py",
    *sorted((HAL / "serial").glob("*.py")),
    *sorted((HAL / "modbus").glob("*.py")),
]
MAX_LINES = 500


# --- pilot numbers come from hal.pilot -------------------------------------------------------


def test_state_c_is_hal_pilots_band_for_every_wire_value() -> None:
    """The reconciliation's "pilot in C" is hal.pilot's band, and it is the same, for every
    value the wire can carry, as the +6 V +-1 V in 0.01 V the backend used to hold itself."""
    for cv in range(-32768, 32768):
        assert pilot_in_c(cv) == (abs(cv - 600) <= 100), cv


def test_duty_unit_is_the_pilot_grid() -> None:
    assert pytest.approx(1.0) == protocol_mod.PERMILLE_PER_PCT * pilot.DUTY_RESOLUTION_PCT
    assert protocol_mod.MAX_DUTY_PERMILLE == 1000  # 100.0 %
    for tenth_amps in range(60, 801):
        duty = pilot.amps_to_duty(tenth_amps / 10)
        permille = round(duty * protocol_mod.PERMILLE_PER_PCT)
        assert permille / protocol_mod.PERMILLE_PER_PCT == duty  # travels exactly


@given(st.integers(-32768, 32767))
def test_discrete_pilot_is_whole_volts(cv: int) -> None:
    from hal.serial.protocol import LOW_NONE, Output, PortStatus, Status

    port = PortStatus(cv, LOW_NONE, Output.STEADY, 0, False, False, False, True, 0)
    key = discrete(Status(0, False, False, 0, 0, 0, (port,)))
    assert key == (False, False, ((cv // 100, True, Output.STEADY, False, False, True),))


# --- one rule, one place -----------------------------------------------------------------------


def test_gap_and_minimum_watchdog_are_the_protocols() -> None:
    assert settings_mod.LinkSettings("/dev/x").gap_s == protocol_mod.GAP_S == board_mod.GAP_S
    assert board_mod.MIN_WATCHDOG_S is protocol_mod.MIN_WATCHDOG_S
    settings_mod.parse_url("serial:///dev/x?watchdog=100ms&heartbeat=30ms")
    with pytest.raises(BackendError, match=r"watchdog must be within 100ms\.\.60s"):
        settings_mod.parse_url("serial:///dev/x?watchdog=99ms")
    with pytest.raises(ValueError, match=r"heartbeat timeout must be >= 0\.1 s"):
        board_mod.BoardSim(SimBus(["1"]), -1, heartbeat_timeout_s=0.099)


def test_heartbeat_size_is_counted_once() -> None:
    out, _ = settings_mod.schedule_bytes(2)
    read_status = len(protocol_mod.encode(protocol_mod.ReadStatus(), 0))
    assert out == settings_mod.HEARTBEAT_BYTES + read_status == 14  # docs: "Physical layer"


def test_meter_defaults_follow_the_station() -> None:
    from firmware.port import PortConfig

    assert PortConfig().meter_stale_s == url_mod.DEFAULT_STALE_S


def test_rs485_settings_rule_keeps_both_messages() -> None:
    a = url_mod.parse_url("modbus-rtu:///dev/ttyUSB9?model=sdm120&baud=9600")
    b = url_mod.parse_url("modbus-rtu:///dev/ttyUSB9?model=sdm120&baud=19200&unit=2")
    a.check_same_line(url_mod.parse_url("modbus-rtu:///dev/ttyUSB9?model=sdm630&unit=3"), "x")
    with pytest.raises(BackendError) as info:
        b.check_same_line(a, "used as")
    assert str(info.value) == (
        "modbus-rtu:///dev/ttyUSB9?model=sdm120&baud=19200&unit=2: /dev/ttyUSB9 is already "
        "used as /dev/ttyUSB9 9600 8N1; all meters on one RS485 line must use the same serial "
        "settings"
    )


def test_unit_ranges_are_written_once() -> None:
    assert url_mod.parse_url("modbus-tcp://h?model=sdm120&unit=0").unit == 0
    with pytest.raises(BackendError, match=r"allowed: 1\.\.247"):
        url_mod.parse_url("modbus-rtu:///dev/x?model=sdm120&unit=0")
    with pytest.raises(ValueError, match=r"unit 248 out of range \(1\.\.247\)"):
        MeterServer("sdm120", [248])


# --- the old import paths ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (backend_mod, "hal.serial.settings"),
        (backend_mod, "hal.serial.link"),
        (meter_mod, "hal.modbus.url"),
        (meter_mod, "hal.modbus.line"),
    ],
)
def test_moved_names_still_import_from_the_old_module(old: ModuleType, new: str) -> None:
    module = importlib.import_module(new)
    exported = set(old.__all__)
    for name in module.__all__:
        if name in exported:
            assert getattr(old, name) is getattr(module, name), name


def test_old_public_names_are_all_still_there() -> None:
    for name in (
        "WELD_DETECT_DEFAULT_S",
        "RENEW_PERIODS",
        "WATCHDOG_MARGIN_S",
        "BITS_PER_BYTE",
        "MAX_SCHEDULE_SHARE",
        "LinkSettings",
        "LinkStats",
        "SerialBoard",
        "SerialPort",
        "parse_url",
        "schedule_bytes",
        "check_line_capacity",
        "open_hardware",
    ):
        assert name in backend_mod.__all__ and hasattr(backend_mod, name), name
    for name in (
        "POOL",
        "Line",
        "LinePool",
        "MeterUrl",
        "ModbusMeter",
        "PollError",
        "Polled",
        "open_meter",
        "parse_url",
        "quiet_pymodbus",
        "read_once",
        "DEFAULT_TCP_PORT",
        "DEFAULT_TIMEOUT_S",
        "DEFAULT_RETRIES",
        "DEFAULT_INTERVAL_S",
        "DEFAULT_STALE_S",
        "RECONNECT_MAX_S",
        "EXCEPTION_NAMES",
    ):
        assert name in meter_mod.__all__ and hasattr(meter_mod, name), name
    assert meter_mod.POOL is line_mod.POOL


# --- one job per module ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", MINE, ids=lambda p: str(p.relative_to(HAL)))
def test_module_says_its_one_job_and_stays_readable(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert doc, f"{path.name}: no docstring"
    if path.name != "__init__.py":
        assert "one job" in doc.lower(), f"{path.name}: the docstring does not say its one job"
    lines = text.count("\n")
    if lines > MAX_LINES:
        assert "really is one thing" in doc, f"{path.name}: {lines} lines; say why in its docstring"
