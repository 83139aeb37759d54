"""Typed reading of YAML (and JSON) documents that keeps every value's line number.

The one job of this module: turn a file into ``Value`` objects over yaml's composed node tree,
with small typed accessors (``number()``, ``duration()``, ``mapping(allowed=...)``...) whose
every failure is a ``ConfigError`` naming file, line and field, within bounds on what a file
may be (size, nesting depth, merge keys, explicit tags). It is the one YAML reader of the
project: station, site, state and scenario files (``firmware.config``, ``tools.scenario``), a
backend's own config section (``hal.sim.config``) and meter register maps
(``hal.modbus.maps``). What the values *mean* (electrical rules, register layouts) is for
those readers; this module only knows shapes and types.

We read ``yaml.compose`` nodes rather than ``yaml.safe_load`` data because loaded Python objects
have forgotten where they came from, and an installer fixing a site file needs the line.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.reader import ReaderError
from yaml.resolver import Resolver

from hal.durations import parse_duration

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"

# Bounds on what a file may be (a config or a meter map). Real files are a few kB and a few
# levels deep; the bounds are far above any real one and far below what would exhaust memory
# or the stack.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024  # a path that names /dev/zero must not read forever
MAX_DEPTH = 64  # yaml's composer recurses once per level: 10,000 "[" would end in RecursionError
MAX_INTEGER = 2**63 - 1  # counts, ports, seeds; larger ones cannot even be printed in errors

# The values yaml's resolver reads as each type. A value tagged by hand (``!!int abc``) is
# not checked by yaml against its tag, and its constructors then fail in ways they do not all
# report as YAML errors (IndexError, KeyError, AttributeError): it must look like one first.
_IMPLICIT: dict[str, list[re.Pattern[str]]] = {}
for _resolvers in Resolver.yaml_implicit_resolvers.values():
    for _tag, _regexp in _resolvers:
        if _regexp not in _IMPLICIT.setdefault(_tag, []):
            _IMPLICIT[_tag].append(_regexp)
_LOOKS_LIKE = {
    _INT: (_INT,),
    _FLOAT: (_FLOAT, _INT),  # float("40") is a float
    _BOOL: (_BOOL,),
    _TIMESTAMP: (_TIMESTAMP,),
}


def _one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped: they come from the
    file (a key, an id, a path) and a refusal is one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _shown(text: str, limit: int = 40) -> str:
    """A value as an error message quotes it: a 400-digit number is cut, not printed whole."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def fmt(number: float) -> str:
    """A number as a refusal shows it: 40, 0.5, 1e+06 (``:g``)."""
    return f"{number:g}"


class ConfigError(Exception):
    """A configuration that cannot be accepted; ``str()`` is ``FILE:LINE: FIELD: message``,
    on one line."""

    def __init__(self, path: str, line: int | None, field: str, message: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        path, field, message = _one_line(self.path), _one_line(self.field), _one_line(self.message)
        where = path if self.line is None else f"{path}:{self.line}"
        if field:
            return f"{where}: {field}: {message}"
        return f"{where}: {message}"


def did_you_mean(word: str, allowed: Collection[str]) -> str:
    """``"; did you mean 'breaker_a'?"`` when ``word`` is a likely typo of one of ``allowed``,
    else ``""``: the tail of an "unknown key" refusal. After the allowed list, which can be
    long, so that the refusal still starts as it always has."""
    by_lower = {name.lower(): name for name in allowed}
    # difflib's default cutoff (0.6): breakr_a -> breaker_a, jumpr -> jumper, maxa -> max_a,
    # while an unrelated word gets no suggestion rather than a misleading one.
    close = difflib.get_close_matches(word.lower(), by_lower, n=1)
    return f"; did you mean {by_lower[close[0]]!r}?" if close else ""


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


class _Loader(yaml.SafeLoader):
    """yaml's safe loader, refusing nesting deeper than MAX_DEPTH where it starts (yaml's
    composer recurses per level and would end in a RecursionError, not a YAML error)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _read_text(path: str) -> str:
    """The file's text; ConfigError (with the line of a bad byte) if it cannot be read."""
    if "\0" in path:  # open() raises ValueError for it, not OSError
        raise ConfigError(path, None, "", "cannot read the file: its name contains a NUL")
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(path, None, "", f"cannot read the file: {reason}") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ConfigError(
            path,
            None,
            "",
            f"cannot read the file: larger than {MAX_DOCUMENT_BYTES // 2**20} MiB (not a config)",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            path, line, "", f"cannot read the file: byte 0x{data[exc.start]:02x} is not UTF-8"
        ) from None


def load_document(source: str | os.PathLike[str]) -> Value:
    """Compose a YAML or JSON file into a ``Value``; unreadable or malformed -> ConfigError."""
    path = os.fspath(source)
    text = _read_text(path)
    if path.endswith(".json"):
        # JSON is YAML but for tabs as indentation; valid JSON has tabs only as whitespace
        # (inside strings they must be escaped), so this keeps every line and column.
        text = text.replace("\t", " ")
    try:
        node = yaml.compose(text, Loader=_Loader)
    except ReaderError as exc:  # a control character: yaml gives its offset, not a line
        at = text.count("\n", 0, exc.position) + 1
        code = exc.character  # for text, the code point of the character
        what = f"character U+{code:04X}" if isinstance(code, int) else repr(code)
        raise ConfigError(path, at, "", f"malformed YAML: {what} is not allowed") from None
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
        if not name.isprintable() or not name.strip():
            name = repr(name)  # a key of spaces or control characters: show it as what it is
        field = name if not self.field else f"{self.field}.{name}"
        return Value(self.path, node, field, key_line)

    def renamed(self, field: str) -> Value:
        return Value(self.path, self.node, field, self.key_line)

    # ---- structure -------------------------------------------------------------------------

    def is_null(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode) and self.node.tag == _NULL

    def mapping(self, allowed: Collection[str] | None, required: Collection[str] = ()) -> Fields:
        """This node as a mapping with only ``allowed`` keys (None: any) and all ``required``,
        none of them empty (a required key written as ``null`` is as good as missing).

        Duplicate keys are refused (yaml would silently keep the last). Merge keys
        (``<<: *defaults``) are expanded; keys written explicitly override merged ones.
        """
        node = self.node
        if not isinstance(node, yaml.MappingNode):
            self.fail(f"expected a mapping, got {_type_name(node)}")
        values: dict[str, Value] = {}
        for key, (key_node, value_node) in self._pairs(node, [], {}).items():
            if allowed is not None and key not in allowed:
                self.child(key_node, key).fail(
                    f"unknown key (allowed: {', '.join(allowed)}){did_you_mean(key, allowed)}"
                )
            values[key] = self.child(value_node, key, int(key_node.start_mark.line) + 1)
        fields = Fields(self, values)
        missing = [key for key in required if key not in fields.values]
        if missing:
            self.fail(f"missing required key {missing[0]!r} (required: {', '.join(required)})")
        for key in required:
            if values[key].is_null():
                values[key].fail("must not be empty (a required key)")
        return fields

    def _pairs(
        self,
        node: yaml.MappingNode,
        active: list[yaml.MappingNode],
        done: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]],
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """A mapping's keys with their key and value nodes, merge keys expanded.

        Not yaml's ``flatten_mapping``: it rewrites the nodes in place (this node may be read
        again, or be an anchor used elsewhere, so it needed a deep copy per read), and before
        PyYAML 6.0.4 it copied merged pairs once per alias, so levels that each merge the one
        below twice grew to 2**levels pairs (a billion laughs, yaml/pyyaml#897), within what
        pyproject.toml accepts. Here each mapping is expanded once (``done``), a merge loop is
        refused (``active``: the merges being expanded) and so is a chain deeper than a
        document may nest.
        """
        if id(node) in done:
            return done[id(node)]
        where = Value(self.path, node, self.field)
        if any(node is other for other in active):
            where.fail("a merge key (<<) includes the mapping it is part of")
        if len(active) > MAX_DEPTH:
            where.fail(f"merge keys (<<) nested more than {MAX_DEPTH} levels deep")
        active.append(node)
        explicit: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        merged: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        merge_line: int | None = None
        for key_node, value_node in node.value:
            line = int(key_node.start_mark.line) + 1
            if key_node.tag == _MERGE:
                if merge_line is not None:
                    self.child(key_node, "<<").fail(
                        f"duplicate key (first given on line {merge_line})"
                    )
                merge_line = line
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        Value(self.path, source, self.field).fail(
                            f"bad merge key: << takes a mapping or a list of mappings, "
                            f"got {_type_name(source)}"
                        )
                    # The first mapping merged wins (YAML merge key spec), explicit keys over all.
                    for key, pair in self._pairs(source, active, done).items():
                        merged.setdefault(key, pair)
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in (_STR, _INT):
                Value(self.path, key_node, self.field).fail(
                    f"keys must be names, got {_type_name(key_node)}"
                )
            key = str(key_node.value)
            if key in explicit:
                first = int(explicit[key][0].start_mark.line) + 1
                self.child(key_node, key).fail(f"duplicate key (first given on line {first})")
            explicit[key] = (key_node, value_node)
        active.pop()
        pairs = dict(merged)
        pairs.update(explicit)
        done[id(node)] = pairs
        return pairs

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
        kinds = _LOOKS_LIKE.get(node.tag, ())
        if kinds and not any(p.match(node.value) for kind in kinds for p in _IMPLICIT[kind]):
            self.fail(f"{_shown(repr(node.value))} is not {_type_name(node)} (tagged {node.tag})")
        try:
            return SafeConstructor().construct_object(node, deep=True)
        except (ConstructorError, ValueError) as exc:  # e.g. 2026-02-30: a date's shape only
            self.fail(f"cannot read {_shown(repr(node.value))}: {exc}")

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
            if not text.isprintable():
                # Ids name things in messages, tables, CSV columns and MQTT topics.
                self.fail(f"{text!r}: an id is printable text (no line breaks, tabs or controls)")
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
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            self.fail(f"{_shown(str(self.node.value))} is not allowed (must be a finite number)")
        if not math.isfinite(number):
            self.fail(f"{_shown(str(self.node.value))} is not allowed (must be a finite number)")
        return number

    def positive(self, what: str = "") -> float:
        """A number > 0; ``what`` follows the 0 in the refusal (a unit, and why)."""
        number = self.number()
        if number <= 0:
            self.fail(f"{fmt(number)} is not allowed (must be > 0{what})")
        return number

    def in_range(self, low: float, high: float) -> float:
        """A number within ``low..high``, both included."""
        number = self.number()
        if not low <= number <= high:
            self.fail(f"{fmt(number)} is out of range (allowed: {fmt(low)}..{fmt(high)})")
        return number

    def integer(self, low: int | None = None, high: int | None = None) -> int:
        """An integer: within ``low..high`` when they are given (a register map's 64-bit
        markers go up to 2**64 - 1), else |n| < 2**63."""
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag != _INT:
            self.fail(f"expected an integer, got {_type_name(self.node)}")
        value = self._scalar()
        assert isinstance(value, int)
        if low is None or high is None:
            if abs(value) > MAX_INTEGER:
                self.fail(f"{_shown(str(self.node.value))} is too large (allowed: |n| < 2**63)")
        elif not low <= value <= high:
            # Decimal as long as that is short; beyond, the text as written, cut.
            shown = str(value) if abs(value) <= 2**64 else _shown(str(self.node.value))
            self.fail(f"{shown} is out of range (allowed: {low}..{high})")
        return value

    def boolean(self) -> bool:
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag != _BOOL:
            self.fail(f"expected true or false, got {_type_name(self.node)}")
        value = self._scalar()
        assert isinstance(value, bool)
        return value

    def duration(self) -> float:
        """Seconds: a number, or a duration string (``hal.durations``: "30s", "1h30m")."""
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
