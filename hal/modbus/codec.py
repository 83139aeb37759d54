"""Registers <-> quantities for one read request, declared once with construct.

One job: from a map's ``Block`` build a construct ``Struct`` (each quantity's value type, word
order and scale; ``Padding`` for the registers read and ignored between them) that parses a
response's registers into values and builds registers from values. The meter decodes with it
and the simulated meter server encodes with the very same declaration, so what a test serves
is what the backend reads, bit for bit.

Modbus registers are big-endian 16-bit words (MODBUS Application Protocol Specification
V1.1b3, 4.2 "Data Encoding": "a big-Endian representation ... the most significant byte is sent
first"); how a 32/64-bit value is split over registers is the vendor's choice, hence
``word_order``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import construct as cs

from hal.modbus.maps import Block, Quantity

__all__ = ["decode", "encode", "registers_from_bytes", "registers_to_bytes"]

_TYPES: dict[str, Any] = {
    "int16": cs.Int16sb,
    "uint16": cs.Int16ub,
    "int32": cs.Int32sb,
    "uint32": cs.Int32ub,
    "int64": cs.Int64sb,
    "uint64": cs.Int64ub,
    "float32": cs.Float32b,
    "float64": cs.Float64b,
}
_FLOATS = ("float32", "float64")


def _reverse_words(data: bytes) -> bytes:
    """Least-significant-register-first <-> most-significant-first (whole 16-bit words)."""
    return b"".join(data[i : i + 2] for i in range(len(data) - 2, -2, -2))


def _field(q: Quantity) -> Any:
    raw = _TYPES[q.type]
    if q.word_order == "little" and q.words > 1:
        raw = cs.Transformed(raw, _reverse_words, 2 * q.words, _reverse_words, 2 * q.words)
    invalid = frozenset(q.invalid)
    scale = q.scale
    is_float = q.type in _FLOATS

    def decode(obj: Any, ctx: Any) -> float | None:
        if obj in invalid:
            return None
        return float(obj) * scale

    def encode(obj: Any, ctx: Any) -> float | int:
        if obj is None:
            return min(invalid) if invalid else 0
        value = float(obj) / scale
        if is_float:
            return value
        if not math.isfinite(value):
            raise ValueError(f"{q.name}: {obj!r} cannot be encoded as {q.type}")
        return round(value)

    return cs.ExprAdapter(raw, decode, encode)


@lru_cache(maxsize=256)
def _struct(block: Block) -> Any:
    fields: list[Any] = []
    at = block.address
    for q in block.quantities:
        if q.address > at:
            fields.append(cs.Padding(2 * (q.address - at)))
        fields.append(q.name / _field(q))
        at = q.end
    return cs.Struct(*fields)


def registers_to_bytes(registers: Sequence[int]) -> bytes:
    return bytes(cs.Array(len(registers), cs.Int16ub).build(list(registers)))


def registers_from_bytes(data: bytes) -> list[int]:
    return list(cs.Array(len(data) // 2, cs.Int16ub).parse(data))


def decode(block: Block, registers: Sequence[int]) -> dict[str, float | None]:
    """The quantities of ``block`` from the registers a read returned (None: "not measured").

    Raises ``ValueError`` if there are not exactly ``block.count`` registers.
    """
    if len(registers) != block.count:
        raise ValueError(f"{len(registers)} registers for a read of {block.count}")
    parsed = _struct(block).parse(registers_to_bytes(registers))
    return {q.name: parsed[q.name] for q in block.quantities}


def encode(block: Block, values: Mapping[str, float | None]) -> list[int]:
    """The registers of ``block`` holding ``values`` (quantities not given: 0 or "invalid";
    registers between quantities: 0). Raises ``ValueError`` for a value the type cannot hold."""
    data = {q.name: values.get(q.name) for q in block.quantities}
    try:
        built = _struct(block).build(data)
    except cs.ConstructError as exc:
        raise ValueError(
            f"cannot encode {data} for registers at 0x{block.address:04X}: {exc}"
        ) from exc
    return registers_from_bytes(bytes(built))
