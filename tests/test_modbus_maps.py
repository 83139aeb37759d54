"""Meter register maps: the shipped maps load, bad maps are refused with file:line, reads are
batched into the fewest requests, and the construct codec agrees with pymodbus's own
converters (an independent implementation) for every type and word order."""

from __future__ import annotations

import itertools
import math
import struct
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient

from hal.modbus import codec
from hal.modbus.maps import (
    TYPES,
    Block,
    MapError,
    Quantity,
    known_models,
    load_map,
    plan_blocks,
)

SHIPPED = ["abb-b23", "em340", "sdm120", "sdm630", "sdm72"]


def test_every_required_model_is_shipped() -> None:
    assert set(SHIPPED) <= set(known_models())


@pytest.mark.parametrize("model", SHIPPED)
def test_shipped_map_loads_and_names_its_source(model: str) -> None:
    m = load_map(model)
    assert m.model == model
    assert m.source
    assert m.phases in (1, 3)
    for name in ("amps_l1", "volts_l1", "kwh_import"):
        assert name in m.by_name
    # every quantity is in exactly one block, and every block respects the model's limit
    covered = [q.name for b in m.blocks for q in b.quantities]
    assert sorted(covered) == sorted(q.name for q in m.quantities)
    for b in m.blocks:
        assert b.count <= m.max_registers
        assert b.address == b.quantities[0].address
        assert b.address + b.count == b.quantities[-1].end


def test_known_addresses_from_the_vendor_documents() -> None:
    sdm630 = load_map("sdm630").by_name
    assert (sdm630["volts_l1"].address, sdm630["amps_l1"].address) == (0x0000, 0x0006)
    assert (sdm630["watts"].address, sdm630["kwh_import"].address) == (0x0034, 0x0048)
    assert sdm630["amps_l1"].function == "input" and sdm630["amps_l1"].type == "float32"
    abb = load_map("abb-b23").by_name
    assert abb["amps_l1"].address == 0x5B0C and abb["amps_l1"].function == "holding"
    assert abb["kwh_import"].type == "uint64" and abb["kwh_import"].scale == 0.01
    em340 = load_map("em340").by_name
    assert em340["amps_l1"].word_order == "little" and em340["amps_l1"].scale == 0.001


def test_batching_uses_the_fewest_requests_the_limits_allow() -> None:
    # SDM630: everything from 0x0000 to 0x004B in one 76-register read (limit 80)
    assert [(b.address, b.count) for b in load_map("sdm630").blocks] == [(0x0000, 76)]
    # SDM72: its limit of 60 registers splits the same layout in two
    assert [(b.address, b.count) for b in load_map("sdm72").blocks] == [(0, 54), (0x46, 6)]
    # EM340: 20 registers per read
    assert [b.count for b in load_map("em340").blocks] == [20, 4, 14, 2]
    # ABB: energy and instantaneous values are far apart
    assert [(b.address, b.count) for b in load_map("abb-b23").blocks] == [
        (0x5000, 8),
        (0x5B00, 45),
    ]


def _q(name: str, address: int, kind: str = "float32", function: str = "input") -> Quantity:
    return Quantity(name, address, function, kind)


def _feasible(run: list[Quantity], max_registers: int, max_gap: int) -> bool:
    if run[-1].end - run[0].address > max_registers:
        return False
    return all(b.address - a.end <= max_gap for a, b in itertools.pairwise(run))


def _fewest(qs: list[Quantity], max_registers: int, max_gap: int) -> int:
    """Brute force over every way to cut the address-ordered list into runs."""
    best = len(qs)
    for cuts in itertools.product((False, True), repeat=len(qs) - 1):
        runs, run = [], [qs[0]]
        for q, cut in zip(qs[1:], cuts, strict=True):
            if cut:
                runs.append(run)
                run = []
            run.append(q)
        runs.append(run)
        if all(_feasible(r, max_registers, max_gap) for r in runs):
            best = min(best, len(runs))
    return best


@settings(max_examples=150, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 12), min_size=1, max_size=8),
    kinds=st.lists(st.sampled_from(["int16", "float32", "uint64"]), min_size=8, max_size=8),
    max_registers=st.integers(4, 24),
    max_gap=st.integers(0, 6),
)
def test_greedy_batching_is_optimal(
    gaps: list[int], kinds: list[str], max_registers: int, max_gap: int
) -> None:
    qs, at = [], 0
    for i, gap in enumerate(gaps):
        at += gap
        q = _q(f"q{i}", at, kinds[i])
        qs.append(q)
        at = q.end
    blocks = plan_blocks(qs, max_registers, max_gap)
    for b in blocks:
        assert _feasible(list(b.quantities), max_registers, max_gap)
    assert len(blocks) == _fewest(qs, max_registers, max_gap)


def test_blocks_never_mix_register_kinds() -> None:
    qs = [_q("a", 0), _q("b", 2, function="holding"), _q("c", 4)]
    blocks = plan_blocks(qs, 125, 125)
    assert {(b.function, b.address, b.count) for b in blocks} == {
        ("input", 0, 6),
        ("holding", 2, 2),
    }


# ---- refusals -------------------------------------------------------------------------------

GOOD = """\
model: test
source: a test
phases: 1
max_registers_per_request: 80
defaults: {function: input, type: float32}
quantities:
  volts_l1: 0x0000
  amps_l1: 0x0006
  watts: 0x000C
  kwh_import: 0x0048
"""


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "map.yaml"
    path.write_text(text)
    return str(path)


def _refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(MapError) as info:
        load_map(_write(tmp_path, text))
    return str(info.value)


def test_a_users_own_map_file_loads(tmp_path: Path) -> None:
    m = load_map(_write(tmp_path, GOOD))
    assert m.model == "test" and m.by_name["watts"].address == 0x0C


def test_overlapping_registers_are_refused_with_the_line(tmp_path: Path) -> None:
    text = GOOD.replace("watts: 0x000C", "watts: 0x0007")  # inside amps_l1's two registers
    message = _refusal(tmp_path, text)
    assert ":9: quantities.watts: overlaps amps_l1" in message
    assert "0x0006..0x0007" in message


def test_misaligned_registers_are_refused(tmp_path: Path) -> None:
    text = GOOD.replace(
        "max_registers_per_request: 80", "max_registers_per_request: 80\nword_alignment: 2"
    ).replace("watts: 0x000C", "watts: 0x000D")
    message = _refusal(tmp_path, text)
    assert "quantities.watts: misaligned" in message and ":10:" in message


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (("amps_l1: 0x0006", "amperes: 0x0006"), "quantities.amperes: unknown quantity"),
        (("type: float32", "type: float16"), "defaults.type: 'float16' is not allowed"),
        (("function: input", "function: coil"), "'coil' is not allowed (allowed: holding, input)"),
        (("phases: 1", "phases: 2"), "phases: 2 is not allowed"),
        (("max_registers_per_request: 80", "max_registers_per_request: 200"), "1..125"),
        (("  kwh_import: 0x0048\n", ""), "kwh_import is missing"),
        (("amps_l1: 0x0006", "amps_l1: {address: 6, scale: 0}"), "0 is not allowed"),
        (("amps_l1: 0x0006", "amps_l1: {address: 6, colour: red}"), "unknown key"),
        (("amps_l1: 0x0006", "amps_l1: 0x10000"), "out of range"),
        (("watts: 0x000C", "watts: 0xFFFF"), "runs past register 0xFFFF"),
        (("phases: 1", "phases: 3"), "amps_l2 is missing"),
        (("source: a test\n", ""), "source: missing"),
        (("model: test", "model: [a"), "malformed YAML"),
    ],
)
def test_bad_maps_are_refused_clearly(tmp_path: Path, change: tuple[str, str], expect: str) -> None:
    old, new = change
    assert old in GOOD
    message = _refusal(tmp_path, GOOD.replace(old, new))
    assert expect in message, message
    assert message.startswith(str(tmp_path / "map.yaml"))


def test_single_phase_map_with_a_second_phase_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, GOOD + "  amps_l2: 0x0008\n")
    assert "quantities.amps_l2: a single-phase map (phases: 1) has no amps_l2" in message


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(MapError, match=r"unknown meter model 'sdm999' \(known: abb-b23, em340"):
        load_map("sdm999")
    with pytest.raises(MapError, match="no such meter model file"):
        load_map("/nonexistent/map.yaml")


# ---- the codec against pymodbus's own converters ------------------------------------------

_DT = AsyncModbusTcpClient.DATATYPE
_PYMODBUS_TYPES = {
    "int16": _DT.INT16,
    "uint16": _DT.UINT16,
    "int32": _DT.INT32,
    "uint32": _DT.UINT32,
    "int64": _DT.INT64,
    "uint64": _DT.UINT64,
    "float32": _DT.FLOAT32,
    "float64": _DT.FLOAT64,
}
_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


@st.composite
def _typed_value(draw: st.DrawFn) -> tuple[str, str, int | float]:
    kind = draw(st.sampled_from(sorted(TYPES)))
    order = draw(st.sampled_from(["big", "little"]))
    if kind in _RANGES:
        low, high = _RANGES[kind]
        return kind, order, draw(st.integers(low, high))
    width = 32 if kind == "float32" else 64
    value = draw(st.floats(allow_nan=False, allow_infinity=False, width=width))
    return kind, order, value


@settings(max_examples=300, deadline=None)
@given(_typed_value())
def test_codec_matches_pymodbus_convert(item: tuple[str, str, int | float]) -> None:
    kind, order, value = item
    q = Quantity("amps_l1", 0, "input", kind, order)
    block = Block("input", 0, q.words, (q,))
    word_order: Literal["big", "little"] = "big" if order == "big" else "little"
    if kind in _RANGES:
        # integers beyond 2**53 do not survive float(); check the raw decode instead
        raw = AsyncModbusTcpClient.convert_to_registers(value, _PYMODBUS_TYPES[kind], word_order)
        decoded = codec.decode(block, raw)["amps_l1"]
        expected = AsyncModbusTcpClient.convert_from_registers(
            raw, _PYMODBUS_TYPES[kind], word_order
        )
        assert decoded == float(expected)  # type: ignore[arg-type]
        if abs(value) < 2**53:
            assert codec.encode(block, {"amps_l1": value}) == raw
    else:
        ours = codec.encode(block, {"amps_l1": value})
        theirs = AsyncModbusTcpClient.convert_to_registers(value, _PYMODBUS_TYPES[kind], word_order)
        assert ours == theirs
        back = codec.decode(block, ours)["amps_l1"]
        if kind == "float32":
            assert back == struct.unpack(">f", struct.pack(">f", value))[0]
        else:
            assert back == value


def test_scale_invalid_values_and_gaps() -> None:
    qs = (
        Quantity("volts_l1", 0x10, "holding", "uint32", "big", 0.1, (0xFFFFFFFF,)),
        Quantity("amps_l1", 0x14, "holding", "int32", "little", 0.001),
    )
    block = Block("holding", 0x10, 6, qs)
    words = codec.encode(block, {"volts_l1": 230.1, "amps_l1": -16.5})
    assert words[:2] == [0, 2301] and words[2:4] == [0, 0]
    assert words[4:] == [0xFFFF & -16500, 0xFFFF]  # low word first
    values = codec.decode(block, words)
    assert values["volts_l1"] == pytest.approx(230.1)
    assert values["amps_l1"] == pytest.approx(-16.5)
    assert codec.decode(block, [0xFFFF, 0xFFFF, 0, 0, 0, 0])["volts_l1"] is None
    with pytest.raises(ValueError, match="registers for a read of 6"):
        codec.decode(block, [0, 0])
    with pytest.raises(ValueError, match="cannot encode"):
        codec.encode(block, {"volts_l1": -1.0})  # an unsigned register cannot hold it
    with pytest.raises(ValueError, match="cannot be encoded"):
        codec.encode(block, {"amps_l1": math.nan})


def test_invalid_markers_are_stored_as_their_type_decodes_them(tmp_path: Path) -> None:
    """Vendor documents write a signed register's marker in its unsigned form (0x80000000 for
    an int32); it is converted when the map is loaded, so it matches what the register
    decodes to. A negative marker for an unsigned type likewise."""
    text = GOOD.replace(
        "  watts: 0x000C\n",
        "  watts: {address: 0x000C, type: int32, invalid: [0x80000000, 0x7FFFFFFF]}\n"
        "  hz: {address: 0x000E, type: int16, invalid: [0xFFFF]}\n"
        "  kwh_export: {address: 0x0010, type: uint16, invalid: [-1]}\n",
    )
    m = load_map(_write(tmp_path, text))
    by = m.by_name
    assert by["watts"].invalid == (-(2**31), 2**31 - 1)
    assert by["hz"].invalid == (-1,)
    assert by["kwh_export"].invalid == (0xFFFF,)
    for name, words in (
        ("watts", [0x8000, 0x0000]),
        ("watts", [0x7FFF, 0xFFFF]),
        ("hz", [0xFFFF]),
        ("kwh_export", [0xFFFF]),
    ):
        q = by[name]
        assert codec.decode(Block("input", q.address, q.words, (q,)), words)[name] is None
    # and the simulated server serves "not measured" as the marker (it encodes as the type)
    q = by["watts"]
    block = Block("input", q.address, q.words, (q,))
    assert codec.decode(block, codec.encode(block, {"watts": None}))["watts"] is None


# ---- hostile map files: the config reader's bounds protect maps too ---------------------

# (file bytes, the line the refusal names, what it says). Each was a traceback before maps
# were read by hal.yamlnodes: RecursionError, UnicodeDecodeError, ValueError from int().
HOSTILE = {
    "deep": (b"model: " + b"[" * 5000 + b"]" * 5000 + b"\n", 1, "nested more than 64 levels"),
    "not utf-8": (GOOD.replace("a test", "a t\xe9st").encode("latin-1"), 2, "is not UTF-8"),
    "lying tag": (GOOD.replace("phases: 1", "phases: !!int three").encode(), 3, "'three' is not"),
}


def _hostile(tmp_path: Path, kind: str) -> tuple[str, int, str]:
    data, line, says = HOSTILE[kind]
    path = tmp_path / "hostile.yaml"
    path.write_bytes(data)
    return str(path), line, says


def _refusal_of(path: str) -> str:
    with pytest.raises(MapError) as info:
        load_map(path)
    return str(info.value)


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_map_is_refused_with_its_line(tmp_path: Path, kind: str) -> None:
    path, line, says = _hostile(tmp_path, kind)
    message = _refusal_of(path)
    assert message.startswith(f"{path}:{line}: ") and says in message, message


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_map_named_by_a_sim_meter_server_is_a_config_error(
    tmp_path: Path, kind: str
) -> None:
    from firmware.config import ConfigError, load_station

    path, line, says = _hostile(tmp_path, kind)
    station = tmp_path / "station.yaml"
    station.write_text(
        "station: s\nmodel: ct4000\njumper: true\ngroups: [{id: feed, breaker_a: 40}]\n"
        'ports: [{id: "1", group: feed}, {id: "2", group: feed}]\n'
        f"sim:\n  meter_server: {{model: {path}}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_station(str(station))
    error = info.value
    assert (error.line, error.field) == (7, "sim.meter_server.model")
    assert error.message.startswith(f"{path}:{line}: ") and says in error.message, str(error)


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_map_named_by_a_meter_url_is_refused_with_its_line(
    tmp_path: Path, kind: str
) -> None:
    from hal.registry import BackendError, open_meter

    path, line, says = _hostile(tmp_path, kind)
    with pytest.raises(BackendError) as info:
        open_meter(f"modbus-tcp://127.0.0.1:1502?unit=1&model={path}")
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ") and says in message, message


def test_ampshare_run_with_a_hostile_map_in_a_meter_url_is_one_line(tmp_path: Path) -> None:
    path, line, _ = _hostile(tmp_path, "deep")
    station = tmp_path / "station.yaml"
    station.write_text(
        "station: s\nmodel: ct4000\njumper: true\ngroups: [{id: feed, breaker_a: 40}]\n"
        'ports: [{id: "1", group: feed, meter: "modbus-tcp://127.0.0.1:1502?unit=1&model='
        f'{path}"}}, {{id: "2", group: feed}}]\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "run", "--config", str(station), "--for", "1s"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert f"{path}:{line}: malformed YAML: nested more than 64 levels deep" in proc.stderr
