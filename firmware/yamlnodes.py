"""Typed reading of YAML (and JSON) documents that keeps every value's line number.

The one job of this module: turn a file into ``Value`` objects over yaml's composed node tree,
with small typed accessors (``number()``, ``duration()``, ``mapping(allowed=...)``...) whose
every failure is a ``ConfigError`` naming file, line and field. Validation of what the values
*mean* (electrical rules) lives in ``firmware.config``; this module only knows shapes and types.

We read ``yaml.compose`` nodes rather than ``yaml.safe_load`` data because loaded Python objects
have forgotten where they came from, and an installer fixing a site file needs the line.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class ConfigError(Exception):
    """A configuration that cannot be accepted; ``str()`` is ``FILE:LINE: FIELD: message``."""

    def __init__(self, path: str, line: int | None, field: str, message: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


# A duration: a plain number of seconds, or a number with one unit suffix ("90m", "1.5h").
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or a string with an ms/s/m/h suffix ("30s", "1.5h").

    Raises ``ValueError`` with a message saying what is allowed. Durations are never negative
    and always finite.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (use seconds or a string like '30s', '2h')")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"{value!r} is not a duration (allowed: seconds, or a number with an "
                "ms, s, m or h suffix, e.g. '30s', '90m', '1.5h')"
            )
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration (use seconds or a string like '30s', '2h')")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration (must be finite and >= 0)")
    return seconds


def _type_name(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return {
        _STR: "a string",
        _INT: "an integer",
        _FLOAT: "a number",
        _BOOL: "a boolean",
        _NULL: "empty (null)",
        _TIMESTAMP: "a date/time",
    }.get(node.tag, f"a {node.tag.rsplit(':', 1)[-1]}")


def load_document(source: str | os.PathLike[str]) -> Value:
    """Compose a YAML or JSON file into a ``Value``; unreadable or malformed -> ConfigError."""
    path = os.fspath(source)
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(path, None, "", f"cannot read the file: {reason}") from None
    if path.endswith(".json"):
        # JSON is YAML but for tabs as indentation; valid JSON has tabs only as whitespace
        # (inside strings they must be escaped), so this keeps every line and column.
        text = text.replace("\t", " ")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        problem = exc.problem or exc.context or "malformed YAML"
        raise ConfigError(path, line, "", f"malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, "", f"malformed YAML: {exc}") from None
    if node is None:
        raise ConfigError(path, 1, "", "the file is empty (expected a mapping)")
    return Value(path, node, "")


@dataclass(frozen=True, slots=True)
class Value:
    """One node of a document, with where it came from and the field path that reached it.

    ``key_line``: the line of the key this value sits under, if any. A block mapping or list
    starts on the line after its key, but the installer looks for the key: errors about a
    whole collection point there.
    """

    path: str
    node: yaml.Node
    field: str
    key_line: int | None = None

    @property
    def line(self) -> int:
        if self.key_line is not None and isinstance(
            self.node, yaml.MappingNode | yaml.SequenceNode
        ):
            return self.key_line
        return int(self.node.start_mark.line) + 1

    def fail(self, message: str, field: str | None = None) -> NoReturn:
        raise ConfigError(self.path, self.line, self.field if field is None else field, message)

    def child(self, node: yaml.Node, name: str, key_line: int | None = None) -> Value:
        field = name if not self.field else f"{self.field}.{name}"
        return Value(self.path, node, field, key_line)

    def renamed(self, field: str) -> Value:
        return Value(self.path, self.node, field, self.key_line)

    # ---- structure -------------------------------------------------------------------------

    def is_null(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode) and self.node.tag == _NULL

    def mapping(self, allowed: Collection[str] | None, required: Collection[str] = ()) -> Fields:
        """This node as a mapping with only ``allowed`` keys (None: any) and all ``required``.

        Duplicate keys are refused (yaml would silently keep the last). Merge keys
        (``<<: *defaults``) are expanded; keys written explicitly override merged ones.
        """
        node = self.node
        if not isinstance(node, yaml.MappingNode):
            self.fail(f"expected a mapping, got {_type_name(node)}")
        first_line: dict[str, int] = {}
        for key_node, _value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in (_STR, _INT):
                Value(self.path, key_node, self.field).fail(
                    f"keys must be names, got {_type_name(key_node)}"
                )
            key = str(key_node.value)
            line = int(key_node.start_mark.line) + 1
            if key in first_line:
                self.child(key_node, key).fail(
                    f"duplicate key (first given on line {first_line[key]})"
                )
            first_line[key] = line
        pairs = node.value
        if any(key_node.tag == "tag:yaml.org,2002:merge" for key_node, _v in pairs):
            # Expands merge keys (merged pairs first) on a copy: flattening works in place and
            # this node may be read again (or be an anchor used elsewhere).
            flat = copy.deepcopy(node)
            try:
                SafeConstructor().flatten_mapping(flat)
            except ConstructorError as exc:
                self.fail(f"bad merge key: {exc.problem}")
            pairs = flat.value
        values: dict[str, Value] = {}
        for key_node, value_node in pairs:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in (_STR, _INT):
                Value(self.path, key_node, self.field).fail(
                    f"keys must be names, got {_type_name(key_node)}"
                )
            key = str(key_node.value)
            line = int(key_node.start_mark.line) + 1
            if allowed is not None and key not in allowed:
                self.child(key_node, key).fail(f"unknown key (allowed: {', '.join(allowed)})")
            values[key] = self.child(value_node, key, line)
        fields = Fields(self, values)
        missing = [key for key in required if key not in fields.values]
        if missing:
            self.fail(f"missing required key {missing[0]!r} (required: {', '.join(required)})")
        return fields

    def sequence(self, allow_empty: bool = True) -> list[Value]:
        node = self.node
        if not isinstance(node, yaml.SequenceNode):
            self.fail(f"expected a list, got {_type_name(node)}")
        if not node.value and not allow_empty:
            self.fail("must not be empty")
        return [Value(self.path, item, f"{self.field}[{i}]") for i, item in enumerate(node.value)]

    # ---- scalars ---------------------------------------------------------------------------

    def _scalar(self) -> object:
        node = self.node
        if not isinstance(node, yaml.ScalarNode):
            self.fail(f"expected a single value, got {_type_name(node)}")
        try:
            return SafeConstructor().construct_object(node, deep=True)
        except (ConstructorError, ValueError) as exc:
            self.fail(f"cannot read {node.value!r}: {exc}")

    def string(self) -> str:
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag != _STR:
            self.fail(f"expected a string, got {_type_name(self.node)}")
        return str(self.node.value)

    def ident(self) -> str:
        """An identifier: a string, or an integer written bare (``id: 1`` is port "1")."""
        if isinstance(self.node, yaml.ScalarNode) and self.node.tag in (_STR, _INT):
            text = str(self.node.value).strip()
            if not text:
                self.fail("must not be empty")
            return text
        if isinstance(self.node, yaml.ScalarNode) and self.node.tag == _FLOAT:
            # `id: 1.10` would silently become "1.1": make the installer quote it.
            self.fail(f'ids are strings: quote it, e.g. "{self.node.value}"')
        self.fail(f"expected an id (a string), got {_type_name(self.node)}")

    def number(self) -> float:
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag not in (_INT, _FLOAT):
            self.fail(f"expected a number, got {_type_name(self.node)}")
        value = self._scalar()
        assert isinstance(value, int | float)
        if not math.isfinite(value):
            self.fail(f"{self.node.value} is not allowed (must be a finite number)")
        return float(value)

    def integer(self) -> int:
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag != _INT:
            self.fail(f"expected an integer, got {_type_name(self.node)}")
        value = self._scalar()
        assert isinstance(value, int)
        return value

    def boolean(self) -> bool:
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag != _BOOL:
            self.fail(f"expected true or false, got {_type_name(self.node)}")
        value = self._scalar()
        assert isinstance(value, bool)
        return value

    def duration(self) -> float:
        """Seconds: a number, or a string like "30s", "90m", "1.5h"."""
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag not in (_INT, _FLOAT, _STR):
            self.fail(f"expected a duration (e.g. 30, '30s', '2h'), got {_type_name(self.node)}")
        raw = self._scalar() if self.node.tag != _STR else str(self.node.value)
        try:
            return parse_duration(raw)
        except ValueError as exc:
            self.fail(str(exc))

    def timestamp(self) -> datetime:
        """An ISO 8601 date and time (a YAML timestamp, or a string in JSON)."""
        node = self.node
        if isinstance(node, yaml.ScalarNode) and node.tag == _TIMESTAMP:
            value = self._scalar()
            if isinstance(value, datetime):
                return value
            self.fail(
                f"{node.value!r} is a date without a time (expected e.g. 2026-11-23T10:00:00)"
            )
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
            try:
                return datetime.fromisoformat(str(node.value))
            except ValueError:
                pass
        self.fail(f"expected an ISO date and time like 2026-11-23T10:00:00, got {_type_name(node)}")

    def url(self) -> str:
        """A backend URL like ``sim://`` or ``modbus-tcp://host:502?unit=1`` (scheme required)."""
        text = self.string()
        scheme, sep, _rest = text.partition("://")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
            self.fail(f"{text!r} is not a backend URL (expected scheme://..., e.g. sim://)")
        return text


@dataclass(frozen=True, slots=True)
class Fields:
    """A mapping whose keys were checked against the allowed set."""

    owner: Value
    values: dict[str, Value]

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def get(self, key: str) -> Value | None:
        """The value under ``key``, or None when absent or written as null."""
        value = self.values.get(key)
        if value is None or value.is_null():
            return None
        return value

    def require(self, key: str) -> Value:
        value = self.values.get(key)
        if value is None:
            self.owner.fail(f"missing required key {key!r}")
        if value.is_null():
            value.fail("must not be empty")
        return value
