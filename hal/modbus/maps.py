"""Meter register maps: read a model's YAML map, refuse a wrong one, and plan its reads.

One job: turn a shipped model's map (``hal/modbus/meters/<model>.yaml``, package data, so an
installed wheel has it) or a user's own file into a checked ``MeterMap`` whose ``blocks`` are
the fewest contiguous read requests that cover every quantity within the model's request size
limit. The file format is documented in docs/meters.md and at the top of
hal/modbus/meters/sdm630.yaml. Every refusal is a ``MapError`` whose text is
``FILE:LINE: FIELD: message``. The file is read by the project's one YAML reader
(``hal.yamlnodes``), within its bounds on size, depth, merge keys and tags.

No pymodbus here: the station config loader and the command line check maps without loading
the bus library.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml

from hal import shipped
from hal.yamlnodes import ConfigError, Value, did_you_mean, load_document

__all__ = [
    "FUNCTIONS",
    "MAPS_DIR",
    "MAP_KEYS",
    "QUANTITIES",
    "TYPES",
    "Block",
    "MapError",
    "MeterMap",
    "Quantity",
    "known_models",
    "load_map",
    "plan_blocks",
    "read_map",
]

# The shipped maps, read through importlib.resources rather than a path beside the source tree:
# a station runs from a wheel installed into a venv, where only the packages (and the package
# data that pyproject.toml names) exist.
MAPS_DIR: Traversable = resources.files("hal.modbus").joinpath("meters")

# The quantities a map may name, with the unit its ``scale`` must produce.
QUANTITIES: dict[str, str] = {
    "volts_l1": "V",
    "volts_l2": "V",
    "volts_l3": "V",
    "amps_l1": "A",
    "amps_l2": "A",
    "amps_l3": "A",
    "watts_l1": "W",
    "watts_l2": "W",
    "watts_l3": "W",
    "watts": "W",
    "kwh_import": "kWh",
    "kwh_export": "kWh",
    "hz": "Hz",
}
# Register width of each value type (16-bit registers).
TYPES: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "int64": 4,
    "uint64": 4,
    "float32": 2,
    "float64": 4,
}
# Register kind -> Modbus function code that reads it (MODBUS Application Protocol
# Specification V1.1b3, 6.3 Read Holding Registers 0x03, 6.4 Read Input Registers 0x04).
FUNCTIONS: dict[str, int] = {"holding": 3, "input": 4}
WORD_ORDERS = ("big", "little")
# The protocol's own ceiling on one read (V1.1b3 6.3/6.4: "Quantity of Registers 1 to 125").
MODBUS_MAX_REGISTERS = 125
# A port or site meter above this is not one this project can use (the class 1 direct and CT
# meters it targets read at most a few thousand amps); maps usually give their own rating.
DEFAULT_PLAUSIBLE_MAX_A = 5000.0

MAP_KEYS = (
    "model",
    "description",
    "source",
    "phases",
    "max_registers_per_request",
    "max_gap",
    "word_alignment",
    "plausible_max_a",
    "defaults",
    "quantities",
)
_QUANTITY_KEYS = ("address", "function", "type", "word_order", "scale", "invalid")
_DEFAULT_KEYS = ("function", "type", "word_order", "scale", "invalid")


class MapError(ValueError):
    """A map file that cannot be used; ``str()`` is ``FILE:LINE: FIELD: message``."""


@dataclass(frozen=True, slots=True)
class Quantity:
    """One quantity of a map: where it is, how it is encoded and how to scale it."""

    name: str
    address: int
    function: str  # "input" | "holding"
    type: str  # a key of TYPES
    word_order: str = "big"  # "big": most significant register first; "little": least first
    scale: float = 1.0  # register value x scale = value in QUANTITIES[name]'s unit
    # Raw values meaning "not measured", as the type decodes them (signed for intN: a map's
    # 0x80000000 for an int32 is stored as -2147483648; see _as_type).
    invalid: tuple[int, ...] = ()

    @property
    def words(self) -> int:
        return TYPES[self.type]

    @property
    def end(self) -> int:
        """One past its last register."""
        return self.address + self.words


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers of one kind from ``address``; the quantities in it
    (in address order) and, between them, registers that are read and ignored."""

    function: str
    address: int
    count: int
    quantities: tuple[Quantity, ...]

    @property
    def function_code(self) -> int:
        return FUNCTIONS[self.function]


@dataclass(frozen=True)
class MeterMap:
    """A checked register map of one meter model."""

    model: str
    description: str
    source: str
    phases: int
    max_registers: int
    max_gap: int
    quantities: tuple[Quantity, ...]
    plausible_max_a: float = DEFAULT_PLAUSIBLE_MAX_A
    path: str = ""
    by_name: Mapping[str, Quantity] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {q.name: q for q in self.quantities})

    @cached_property
    def blocks(self) -> tuple[Block, ...]:
        return plan_blocks(self.quantities, self.max_registers, self.max_gap)


def plan_blocks(
    quantities: Sequence[Quantity], max_registers: int, max_gap: int
) -> tuple[Block, ...]:
    """The fewest read requests covering ``quantities``: per register kind, in address order,
    a request grows while it stays within ``max_registers`` and no run of unused registers
    inside it is longer than ``max_gap``.

    Growing greedily is optimal here: a request is a contiguous run of quantities in address
    order, and any part of a feasible run is feasible, so ending each request as late as
    possible never needs more requests (the interval-cover exchange argument).
    """
    blocks: list[Block] = []
    for function in sorted({q.function for q in quantities}):
        ordered = sorted((q for q in quantities if q.function == function), key=lambda q: q.address)
        run: list[Quantity] = []
        for q in ordered:
            if run and (
                q.end - run[0].address > max_registers or q.address - run[-1].end > max_gap
            ):
                blocks.append(_block(function, run))
                run = []
            run.append(q)
        if run:
            blocks.append(_block(function, run))
    return tuple(blocks)


def _block(function: str, run: Sequence[Quantity]) -> Block:
    return Block(function, run[0].address, run[-1].end - run[0].address, tuple(run))


def known_models() -> list[str]:
    """The shipped models: the map files in hal/modbus/meters/."""
    return shipped.known("hal.modbus", "meters")


def load_map(model: str) -> MeterMap:
    """The map of a shipped model (``sdm630``) or of a user's file (a path ending in .yaml)."""
    try:
        with shipped.located("hal.modbus", "meters", model, "meter model") as path:
            return _parse(path)
    except FileNotFoundError as exc:
        raise MapError(str(exc)) from None


# ---- reading the file (hal.yamlnodes: line numbers, and the bounds on what a file may be) ----


def _choice(value: Value, allowed: Sequence[str]) -> str:
    text = value.string().strip().lower()
    if text not in allowed:
        value.fail(f"{text!r} is not allowed (allowed: {', '.join(allowed)})")
    return text


def _parse(path: Path) -> MeterMap:
    """The map in ``path``; every refusal (the reader's or the map's) is a ``MapError``."""
    try:
        return read_map(load_document(path))
    except ConfigError as exc:
        raise MapError(str(exc)) from None


def read_map(root: Value) -> MeterMap:
    """A map from an already-read document; refusals are ``ConfigError`` (``config check``)."""
    top = root.mapping(MAP_KEYS)
    # Present but empty counts as present: its accessor then refuses the empty value.
    given = top.values
    needed = ("model", "source", "phases", "max_registers_per_request", "quantities")
    for required in needed:
        if required not in given:
            root.fail(f"{required}: missing (a map needs {', '.join(needed)})")

    phases_value = given["phases"]
    phases = phases_value.integer(1, 3)
    if phases == 2:
        phases_value.fail("2 is not allowed (allowed: 1 or 3)")
    max_registers = given["max_registers_per_request"].integer(1, MODBUS_MAX_REGISTERS)
    max_gap = given["max_gap"].integer(0, MODBUS_MAX_REGISTERS) if "max_gap" in given else 0
    alignment = given["word_alignment"].integer(1, 4) if "word_alignment" in given else 1
    plausible = DEFAULT_PLAUSIBLE_MAX_A
    if "plausible_max_a" in given:
        plausible = given["plausible_max_a"].number()
        if plausible <= 0:
            given["plausible_max_a"].fail("must be > 0")

    defaults = given["defaults"].mapping(_DEFAULT_KEYS).values if "defaults" in given else {}
    quantities: list[tuple[Quantity, Value]] = []
    quantities_value = given["quantities"]
    for qname, qvalue in quantities_value.mapping(None).values.items():
        if qname not in QUANTITIES:
            known = ", ".join(QUANTITIES)
            qvalue.fail(f"unknown quantity (known: {known}){did_you_mean(qname, QUANTITIES)}")
        quantities.append((_quantity(qname, qvalue, defaults), qvalue))

    for q, where in quantities:
        if q.words > max_registers:
            where.fail(
                f"a {q.type} takes {q.words} registers, more than max_registers_per_request "
                f"({max_registers})"
            )
        if q.end > 0x10000:
            where.fail(f"0x{q.address:04X} + {q.words} registers runs past register 0xFFFF")
        if q.words > 1 and q.address % alignment:
            where.fail(
                f"misaligned: a {q.type} at 0x{q.address:04X} does not start on a multiple of "
                f"word_alignment ({alignment}) registers"
            )
    _check_overlaps(quantities)

    by_name = {q.name: where for q, where in quantities}
    for required in ("amps_l1", "volts_l1", "kwh_import"):
        if required not in by_name:
            quantities_value.fail(
                f"{required} is missing (every map needs amps_l1, volts_l1, "
                "kwh_import, and watts or watts_l1)"
            )
    if "watts" not in by_name and "watts_l1" not in by_name:
        quantities_value.fail("needs watts (total) or watts_l1")
    for n in (2, 3):
        for kind in ("amps", "volts", "watts"):
            key = f"{kind}_l{n}"
            if phases == 1 and key in by_name:
                by_name[key].fail(f"a single-phase map (phases: 1) has no {key}")
        if phases == 3 and f"amps_l{n}" not in by_name:
            quantities_value.fail(f"amps_l{n} is missing (phases: 3 needs amps_l1..amps_l3)")

    return MeterMap(
        model=given["model"].string(),
        description=given["description"].string() if "description" in given else "",
        source=given["source"].string(),
        phases=phases,
        max_registers=max_registers,
        max_gap=max_gap,
        quantities=tuple(q for q, _ in quantities),
        plausible_max_a=plausible,
        path=root.path,
    )


def _quantity(name: str, value: Value, defaults: Mapping[str, Value]) -> Quantity:
    if isinstance(value.node, yaml.ScalarNode):  # short form: just the address
        fields: Mapping[str, Value] = {"address": value}
    else:
        fields = value.mapping(_QUANTITY_KEYS).values
    if "address" not in fields:
        value.fail("address is missing")

    def pick(key: str) -> Value | None:
        return fields.get(key, defaults.get(key))

    address = fields["address"].integer(0, 0xFFFF)
    function_value, type_value = pick("function"), pick("type")
    if function_value is None:
        value.fail("function is missing (input or holding; here or under defaults)")
    if type_value is None:
        value.fail(f"type is missing ({', '.join(TYPES)}; here or under defaults)")
    order_value, scale_value, invalid_value = pick("word_order"), pick("scale"), pick("invalid")
    scale = 1.0 if scale_value is None else scale_value.number()
    if scale == 0.0:
        assert scale_value is not None
        scale_value.fail("0 is not allowed (a value is register x scale)")
    qtype = _choice(type_value, tuple(TYPES))
    invalid: tuple[int, ...] = ()
    if invalid_value is not None:
        bits = 16 * TYPES[qtype]
        items = (
            invalid_value.sequence()
            if isinstance(invalid_value.node, yaml.SequenceNode)
            else [invalid_value]
        )
        invalid = tuple(
            _as_type(qtype, bits, item.integer(-(2 ** (bits - 1)), 2**bits - 1)) for item in items
        )
    return Quantity(
        name=name,
        address=address,
        function=_choice(function_value, tuple(FUNCTIONS)),
        type=qtype,
        word_order="big" if order_value is None else _choice(order_value, WORD_ORDERS),
        scale=scale,
        invalid=invalid,
    )


def _as_type(qtype: str, bits: int, raw: int) -> int:
    """An ``invalid`` value as its type decodes the same bits: vendor documents write markers
    in either form (0x80000000 or -2147483648 for an int32; 0xFFFF or -1 for a uint16), and
    the decoded value is what is compared."""
    if qtype.startswith("int") and raw >= 1 << (bits - 1):
        return raw - (1 << bits)
    if qtype.startswith("uint") and raw < 0:
        return raw + (1 << bits)
    return raw


def _check_overlaps(quantities: Sequence[tuple[Quantity, Value]]) -> None:
    ordered = sorted(quantities, key=lambda item: (item[0].function, item[0].address))
    for (a, _), (b, b_where) in itertools.pairwise(ordered):
        if a.function == b.function and b.address < a.end:
            b_where.fail(
                f"overlaps {a.name}: {b.name} is {b.type} at 0x{b.address:04X}..0x{b.end - 1:04X}, "
                f"{a.name} is {a.type} at 0x{a.address:04X}..0x{a.end - 1:04X} ({a.function} "
                "registers)"
            )
