"""Meter register maps: read a model's YAML map, refuse a wrong one, and plan its reads.

One job: turn ``configs/meters/<model>.yaml`` (or a user's own file) into a checked
``MeterMap`` whose ``blocks`` are the fewest contiguous read requests that cover every quantity
within the model's request size limit. The file format is documented in docs/meters.md and at
the top of configs/meters/sdm630.yaml. Every refusal is a ``MapError`` whose text is
``FILE:LINE: FIELD: message``.

No pymodbus here: the station config loader and the command line check maps without loading
the bus library.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NoReturn

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

__all__ = [
    "FUNCTIONS",
    "MAPS_DIR",
    "QUANTITIES",
    "TYPES",
    "Block",
    "MapError",
    "MeterMap",
    "Quantity",
    "known_models",
    "load_map",
    "plan_blocks",
]

MAPS_DIR = Path(__file__).resolve().parents[2] / "configs" / "meters"

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

_TOP_KEYS = (
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
    """The shipped models: the map files in configs/meters/."""
    return sorted(p.stem for p in MAPS_DIR.glob("*.yaml"))


def load_map(model: str) -> MeterMap:
    """The map of a shipped model (``sdm630``) or of a user's file (a path ending in .yaml)."""
    if model.endswith((".yaml", ".yml")) or "/" in model:
        path = Path(model)
        if not path.is_file():
            raise MapError(f"{model}: no such map file")
    else:
        path = MAPS_DIR / f"{model.lower()}.yaml"
        if not path.is_file():
            known = ", ".join(known_models()) or "none"
            raise MapError(
                f"unknown meter model {model!r} (known: {known}; or give the path of a .yaml map)"
            )
    return _parse(path)


# ---- reading the file, with line numbers ------------------------------------------------


class _Node:
    """A composed YAML node with the file, line and key path an error message needs."""

    def __init__(self, node: yaml.Node, path: str, where: str) -> None:
        self.node = node
        self.path = path
        self.where = where

    @property
    def line(self) -> int:
        return int(self.node.start_mark.line) + 1

    def fail(self, message: str) -> NoReturn:
        prefix = f"{self.path}:{self.line}"
        raise MapError(
            f"{prefix}: {self.where}: {message}" if self.where else f"{prefix}: {message}"
        )

    def scalar(self) -> object:
        if not isinstance(self.node, yaml.ScalarNode):
            self.fail("expected a single value")
        try:
            return SafeConstructor().construct_object(self.node)
        except ConstructorError as exc:
            self.fail(str(exc.problem))

    def mapping(self, allowed: Sequence[str] | None = None) -> dict[str, _Node]:
        if not isinstance(self.node, yaml.MappingNode):
            self.fail("expected a mapping (key: value)")
        out: dict[str, _Node] = {}
        for key_node, value_node in self.node.value:
            key = _Node(key_node, self.path, self.where).scalar()
            name = str(key)
            child = _Node(value_node, self.path, f"{self.where}.{name}" if self.where else name)
            if name in out:
                _Node(key_node, self.path, child.where).fail("given twice")
            if allowed is not None and name not in allowed:
                _Node(key_node, self.path, child.where).fail(
                    f"unknown key (allowed: {', '.join(allowed)})"
                )
            out[name] = child
        return out

    def integer(self, low: int, high: int) -> int:
        value = self.scalar()
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{value!r} is not an integer")
        if not low <= value <= high:
            self.fail(f"{value} is out of range (allowed: {low}..{high})")
        return value

    def number(self) -> float:
        value = self.scalar()
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"{value!r} is not a number")
        number = float(value)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not finite")
        return number

    def text(self) -> str:
        value = self.scalar()
        if not isinstance(value, str):
            self.fail(f"{value!r} is not text")
        return value

    def choice(self, allowed: Sequence[str]) -> str:
        value = self.text().strip().lower()
        if value not in allowed:
            self.fail(f"{value!r} is not allowed (allowed: {', '.join(allowed)})")
        return value

    def items(self) -> Iterator[_Node]:
        if isinstance(self.node, yaml.SequenceNode):
            for i, item in enumerate(self.node.value):
                yield _Node(item, self.path, f"{self.where}[{i}]")
        else:
            yield self


def _parse(path: Path) -> MeterMap:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MapError(f"{name}: cannot read: {exc.strerror}") from exc
    try:
        root_node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise MapError(f"{name}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if root_node is None:
        raise MapError(f"{name}: empty map file")
    root = _Node(root_node, name, "")
    top = root.mapping(_TOP_KEYS)
    for required in ("model", "source", "phases", "max_registers_per_request", "quantities"):
        if required not in top:
            root.fail(
                f"{required}: missing (a map needs {', '.join(_TOP_KEYS[:5])} and quantities)"
            )

    phases_node = top["phases"]
    phases = phases_node.integer(1, 3)
    if phases == 2:
        phases_node.fail("2 is not allowed (allowed: 1 or 3)")
    max_registers = top["max_registers_per_request"].integer(1, MODBUS_MAX_REGISTERS)
    max_gap = top["max_gap"].integer(0, MODBUS_MAX_REGISTERS) if "max_gap" in top else 0
    alignment = top["word_alignment"].integer(1, 4) if "word_alignment" in top else 1
    plausible = DEFAULT_PLAUSIBLE_MAX_A
    if "plausible_max_a" in top:
        plausible = top["plausible_max_a"].number()
        if plausible <= 0:
            top["plausible_max_a"].fail("must be > 0")

    defaults: dict[str, _Node] = top["defaults"].mapping(_DEFAULT_KEYS) if "defaults" in top else {}
    quantities: list[tuple[Quantity, _Node]] = []
    for qname, qnode in top["quantities"].mapping().items():
        if qname not in QUANTITIES:
            qnode.fail(f"unknown quantity (known: {', '.join(QUANTITIES)})")
        quantities.append((_quantity(qname, qnode, defaults), qnode))

    for q, node in quantities:
        if q.words > max_registers:
            node.fail(
                f"a {q.type} takes {q.words} registers, more than max_registers_per_request "
                f"({max_registers})"
            )
        if q.end > 0x10000:
            node.fail(f"0x{q.address:04X} + {q.words} registers runs past register 0xFFFF")
        if q.words > 1 and q.address % alignment:
            node.fail(
                f"misaligned: a {q.type} at 0x{q.address:04X} does not start on a multiple of "
                f"word_alignment ({alignment}) registers"
            )
    _check_overlaps(quantities)

    by_name = {q.name: node for q, node in quantities}
    for required in ("amps_l1", "volts_l1", "kwh_import"):
        if required not in by_name:
            top["quantities"].fail(
                f"{required} is missing (every map needs amps_l1, volts_l1, "
                "kwh_import, and watts or watts_l1)"
            )
    if "watts" not in by_name and "watts_l1" not in by_name:
        top["quantities"].fail("needs watts (total) or watts_l1")
    for n in (2, 3):
        for kind in ("amps", "volts", "watts"):
            key = f"{kind}_l{n}"
            if phases == 1 and key in by_name:
                by_name[key].fail(f"a single-phase map (phases: 1) has no {key}")
        if phases == 3 and f"amps_l{n}" not in by_name:
            top["quantities"].fail(f"amps_l{n} is missing (phases: 3 needs amps_l1..amps_l3)")

    return MeterMap(
        model=top["model"].text(),
        description=top["description"].text() if "description" in top else "",
        source=top["source"].text(),
        phases=phases,
        max_registers=max_registers,
        max_gap=max_gap,
        quantities=tuple(q for q, _ in quantities),
        plausible_max_a=plausible,
        path=name,
    )


def _quantity(name: str, node: _Node, defaults: Mapping[str, _Node]) -> Quantity:
    if isinstance(node.node, yaml.ScalarNode):  # short form: just the address
        fields: dict[str, _Node] = {"address": node}
    else:
        fields = node.mapping(_QUANTITY_KEYS)
    if "address" not in fields:
        node.fail("address is missing")

    def pick(key: str) -> _Node | None:
        return fields.get(key, defaults.get(key))

    address = fields["address"].integer(0, 0xFFFF)
    function_node, type_node = pick("function"), pick("type")
    if function_node is None:
        node.fail("function is missing (input or holding; here or under defaults)")
    if type_node is None:
        node.fail(f"type is missing ({', '.join(TYPES)}; here or under defaults)")
    order_node, scale_node, invalid_node = pick("word_order"), pick("scale"), pick("invalid")
    scale = 1.0 if scale_node is None else scale_node.number()
    if scale == 0.0:
        assert scale_node is not None
        scale_node.fail("0 is not allowed (a value is register x scale)")
    qtype = type_node.choice(tuple(TYPES))
    invalid: tuple[int, ...] = ()
    if invalid_node is not None:
        bits = 16 * TYPES[qtype]
        invalid = tuple(
            _as_type(qtype, bits, item.integer(-(2 ** (bits - 1)), 2**bits - 1))
            for item in invalid_node.items()
        )
    return Quantity(
        name=name,
        address=address,
        function=function_node.choice(tuple(FUNCTIONS)),
        type=qtype,
        word_order="big" if order_node is None else order_node.choice(WORD_ORDERS),
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


def _check_overlaps(quantities: Sequence[tuple[Quantity, _Node]]) -> None:
    ordered = sorted(quantities, key=lambda item: (item[0].function, item[0].address))
    for (a, _), (b, b_node) in itertools.pairwise(ordered):
        if a.function == b.function and b.address < a.end:
            b_node.fail(
                f"overlaps {a.name}: {b.name} is {b.type} at 0x{b.address:04X}..0x{b.end - 1:04X}, "
                f"{a.name} is {a.type} at 0x{a.address:04X}..0x{a.end - 1:04X} ({a.function} "
                "registers)"
            )
