"""Mutation fuzzing of config files: seeded mutants of the shipped files, loaded and classified.

One job: from every shipped station, site and scenario file under ``configs/``, make
reproducible mutants (node-level edits of the composed YAML, text-level damage), load each
in-process through the same dispatch ``ampshare config check`` uses (scenarios: the scenario
loader of ``ampshare sim``) under a time limit, and classify the outcome: accepted, refused
cleanly (a one-line ``ConfigError`` reading ``FILE:LINE: ...``), a crash (any other
exception, i.e. a traceback for the installer) or a hang. A case is named by ``(seed,
case)``: the same pair always makes the same bytes, so any failure is reproduced with
``scripts/fuzz-config --seed S --case N``.

Used by tests/test_config_fuzz.py (a few hundred cases in CI) and scripts/fuzz-config
(thousands); run as ``python tests/configfuzz.py --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Literal

import yaml

from controller.limits import TreeError
from firmware.config import ConfigError
from tools.config_cmd import check_config
from tools.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"

# Generous: every case loads in milliseconds; only a loader that loops or explodes gets near.
DEFAULT_TIME_LIMIT_S = 5.0
# Address space a case may add. A loader that expands a billion laughs fills memory from C
# code that no time limit interrupts; capped, it ends in a MemoryError (a crash, reported)
# instead of the machine's OOM killer ending the whole run. Loading a config takes a few MB.
MEMORY_HEADROOM_BYTES = 1 << 30

Kind = Literal["station", "site", "scenario"]

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"


# ---- the shipped files ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """A shipped config: what it is, where it lives under configs/, and its text."""

    kind: Kind
    rel: str  # relative to configs/, e.g. "sites/office-tou.yaml"
    text: str


def shipped_sources(configs: Path = CONFIGS) -> tuple[Source, ...]:
    """Every station, site and scenario file shipped (the config fuzz mutates these; meter maps
    have their own refusal tests in tests/test_modbus_maps.py)."""
    patterns: tuple[tuple[Kind, str], ...] = (
        ("station", "*.yaml"),
        ("station", "site-demo/*.yaml"),
        ("site", "sites/*.yaml"),
        ("scenario", "scenarios/*.yaml"),
    )
    found = []
    for kind, pattern in patterns:
        for path in sorted(configs.glob(pattern)):
            rel = path.relative_to(configs).as_posix()
            found.append(Source(kind, rel, path.read_text(encoding="utf-8")))
    return tuple(found)


# ---- value pools ----------------------------------------------------------------------------

_DURATION_KEYS = frozenset(
    {
        "arrive",
        "leave",
        "duration",
        "at",
        "telemetry_period",
        "latency",
        "jitter",
        "latency_margin",
        "telemetry",
        "rise_delay",
    }
)
_ID_KEYS = frozenset({"id", "group", "parent", "port", "station", "site"})
_PATH_KEYS = frozenset({"station", "site", "password_file", "key_file", "ca", "cert", "key"})
_URL_KEYS = frozenset({"hardware", "meter", "url", "broker"})

# Every key some shipped or documented file uses: renames and additions pick from here so a
# mutant reaches code behind keys the file itself does not have.
_KNOWN_KEYS = [
    "station",
    "site",
    "model",
    "jumper",
    "voltage_v",
    "policy",
    "min_a",
    "hardware",
    "loop_period_s",
    "groups",
    "ports",
    "port_machine",
    "control",
    "sim",
    "link",
    "id",
    "parent",
    "breaker_a",
    "phases",
    "limit_kw",
    "schedule",
    "meter",
    "group",
    "max_a",
    "power_select_a",
    "fallback_a",
    "rated_kw",
    "evs",
    "meter_server",
    "host",
    "port",
    "arrive",
    "leave",
    "battery_kwh",
    "soc",
    "target_soc",
    "response_s",
    "wakes",
    "overdraw_a",
    "days",
    "from",
    "to",
    "kw",
    "a",
    "url",
    "topic",
    "max_kw",
    "stale_s",
    "conservative_kw",
    "broker",
    "username",
    "password",
    "password_file",
    "tls",
    "telemetry_period",
    "key_file",
    "insecure",
    "ca",
    "cert",
    "key",
    "name",
    "description",
    "duration",
    "events",
    "seed",
    "coordinator",
    "start",
    "at",
    "link",
    "fault",
    "kind",
    "clear",
    "site_load_kw",
    "valid_s",
    "period_s",
    "latency",
    "jitter",
    "latency_margin",
    "silent_s",
    "telemetry",
    "rise_delay",
    "gfci_retry_delay_s",
    "gfci_max_retries",
    "overdraw_ratio",
    "weld_detect_s",
]

_HUGE_INT = "9" * 400  # a float overflows, an int does not
_HUGE_HEX = "0x" + "f" * 5000  # power-of-two bases escape Python's int-digits limit
_NUMBERS = (
    "0",
    "-1",
    "-40",
    "1",
    "5.99",
    "6",
    "7.9",
    "8",
    "80.000001",
    "100000",
    "1.0e+308",
    "-1.0e+308",
    "4.9e-324",
    _HUGE_INT,
    "-" + _HUGE_INT,
    _HUGE_HEX,
    ".nan",
    ".inf",
    "-.inf",
    "1_0",
    "0b101",
    "017",
    "1:30",
    "0.0",
    "-0.0",
)
_DURATIONS = (
    "-5m",
    "1e999s",
    "",
    "5",
    "0",
    "0s",
    "0ms",
    "1e-999s",
    "99999999999h",
    "1e308h",
    "5x",
    "m",
    "5 m",
    "1h30m",
    "nan",
    "inf",
    "-0",
    "1.",
    ".5s",
    "30 s",
    " 2h ",
    "1e3m",
    "0.0001ms",
)
_STRINGS = (
    "fuzz",
    "",
    " ",
    "ünïcödé ⚡ 充電",
    "\u202e\u2028\u0085",
    "\U0001f50c",
    "a" * 300,
    "40",
    "true",
    "null",
    "-",
    "#",
    "x: y",
    "*",
    "&",
    "\t",
    "\n\n",
    "\0",
    "%s%n{0}",
)
_IDS = (
    "a/b",
    "st#1",
    "x+y",
    "a:b",
    "panel:L1",
    "",
    " ",
    "port",
    "demand",
    "paused",
    "fallback",
    "sequencing",
    "x" * 200,
    "ställ",
    "\0",
    "-",
    "..",
    "nowhere",
    "1",
    "2",
    "3",
)
_PATHS = (
    "../ct4000-jumper.yaml",
    "../sites/office-tou.yaml",
    "../scenarios/weld-fault.yaml",
    "../site-demo/st1.yaml",
    "../sites/two-stations-60a.yaml",
    "/dev/null",
    "/dev/zero",
    "/",
    ".",
    "",
    "missing.yaml",
    "a\0b",
    "st1.pw",
    "demo.key",
    "coordinator.pw",
    "../meters/sdm630.yaml",
    "/bin/sh",  # a binary file
    "sdm120",
    "sdm630.yaml",
    "x" * 5000,
)
_URLS = (
    "sim://",
    "modbus-tcp://",
    "modbus-tcp://h:99999?unit=x",
    "serial://",
    "mqtt://",
    "mqtt://:0",
    "mqtt://[::1",
    "mqtts://h:65536",
    "mqtt://u:p@h",
    "mqtt://h:1883/x?y#z",
    "http://x",
    "sim:/",
    "SIM://",
    "mqtt://127.0.0.1:1883",
    "mqtts://127.0.0.1",
)
_TIMESTAMPS = (
    "2026-11-23T00:00:00",
    "2026-11-23",
    "9999-12-31T23:59:59",
    "2026-02-30",
    "2001-12-14t21:59:43.10-05:00",
    "0001-01-01 00:00:00",
)
# YAML that the emitter would never write for a node but a person can: explicit tags on values
# that do not match them, custom tags, self-referencing anchors, odd keys, unknown aliases.
_RAW = (
    "!!int abc",
    "!!int ''",
    "!!int -",
    "!!int 0x",
    "!!float ''",
    "!!float abc",
    "!!float 40",
    "!!bool maybe",
    "!!bool ''",
    "!!timestamp nonsense",
    "!!timestamp ''",
    "!!timestamp 2026-13-45",
    "!!null x",
    "!!str 40",
    "!custom 1",
    "!!binary AAAA",
    "!!python/object:os.system x",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!map [1, 2]",
    "!!seq {a: 1}",
    "&r [*r]",
    "&m {<<: *m}",
    "&m {<<: [*m]}",
    "&m {id: x, <<: {<<: *m}}",
    "{<<: 5}",
    "{<<: [5]}",
    "{<<: {}}",
    "{<<: [{}, {a: 1}], a: 2}",
    "{? [a] : 1}",
    "{[a]: 1}",
    "{null: 1}",
    "{1.5: x}",
    "{true: 1}",
    "{~: 1}",
    "*undefined",
    "{a: 1, a: 2}",
)


# Documented blocks no shipped file happens to have (a site meter, TLS, time-of-use in A, a
# coordinator with every setting, faults...), valid where they go: grafted in, and then
# usually damaged, they take a mutant past the type checks into the rules behind them.
Target = Literal["top", "group", "port", "ev"]
_SNIPPETS: tuple[tuple[str, Target, str, str], ...] = (
    # (the kinds of file it belongs in, where, then "key: value, key: value..." from there on)
    (
        "site",
        "group",
        "limit_kw",
        "40, meter: {url: 'sim://', conservative_kw: 10, max_kw: 30, stale_s: 30s}",
    ),
    ("site", "group", "limit_kw", "40, meter: {topic: true, conservative_kw: 5}"),
    ("site station", "group", "limit_kw", "40"),
    ("site station", "group", "phases", "3"),
    (
        "site",
        "group",
        "schedule",
        "[{days: [mon, tue], from: '06:00', to: '12:00', a: 20}, {days: sat-sun, a: 30}]",
    ),
    (
        "site",
        "group",
        "limit_kw",
        "20, schedule: [{days: mon-fri, from: '22:00', to: '06:00', kw: 10}, "
        "{days: [sat], from: '00:00', to: '24:00', kw: 5}]",
    ),
    ("site station", "port", "power_select_a", "24"),
    ("site station", "port", "min_a", "10"),
    ("site station", "port", "fallback_a", "8"),
    ("site station", "port", "rated_kw", "7"),
    ("site station", "port", "voltage_v", "240"),
    ("site station", "port", "phases", "L1-N"),
    ("site", "port", "station", "st9"),
    ("station", "port", "meter", "'modbus-tcp://127.0.0.1:15020?unit=1&model=sdm120'"),
    (
        "station",
        "top",
        "port_machine",
        "{gfci_retry_delay_s: 15m, gfci_max_retries: 3, overdraw_ratio: 1.1, "
        "close_within_s: 3, meter_stale_s: 10s}",
    ),
    (
        "station",
        "top",
        "control",
        "{rotation: {period_s: 15m, resume_margin_a: 1}, demand: {low_fraction: 0.15}}",
    ),
    (
        "station",
        "top",
        "link",
        "{broker: 'mqtts://127.0.0.1:8883', site: demo, username: u, password: pw, "
        "tls: {ca: demo.key, cert: st1.pw, key: st2.pw}, insecure: true, telemetry_period: 5s}",
    ),
    ("station", "top", "link", "{broker: 'mqtt://127.0.0.1', site: demo, key_file: demo.key}"),
    (
        "station",
        "top",
        "link",
        "{broker: 'mqtt://127.0.0.1:1883', site: demo, username: st1, password_file: st1.pw, "
        "insecure: true}",
    ),
    ("station", "top", "loop_period_s", "50ms"),
    ("station", "top", "jumper", "true"),
    ("station site", "top", "policy", "fcfs"),
    (
        "station",
        "top",
        "sim",
        "{meter_server: {model: sdm120, host: 127.0.0.1, port: 15020}, evs: []}",
    ),
    (
        "scenario",
        "top",
        "coordinator",
        "{valid_s: 30, period_s: 5, latency: 200ms, jitter: 50ms, latency_margin: 1s, "
        "silent_s: 15s, telemetry: 5s, rise_delay: 20s}",
    ),
    ("scenario", "top", "start", "2026-11-23T06:00:00"),
    (
        "scenario",
        "top",
        "events",
        "[{at: 10m, fault: {port: '1', kind: gfci, clear: true}}, {at: 20m, site_load_kw: 12},"
        " {at: 30m, link: down, station: st1}, {at: 40m, coordinator: restart}]",
    ),
    ("scenario", "top", "control", "{rotation: {period_s: 900}, demand: {low_fraction: 0.1}}"),
    ("scenario", "top", "seed", "7"),
    ("scenario station", "ev", "leave", "1h"),
    ("scenario station", "ev", "phases", "3"),
    ("scenario station", "ev", "wakes", "false"),
    ("scenario station", "ev", "overdraw_a", "2"),
    ("scenario station", "ev", "response_s", "60"),
)


def _deep_raw(rng: random.Random) -> str:
    """Nesting a recursive composer cannot follow (and a reasonable one refuses early)."""
    depth = rng.choice((40, 150, 400, 3000))
    if rng.random() < 0.5:
        return "[" * depth + "]" * depth
    return "{a: " * depth + "1" + "}" * depth


# ---- the YAML tree --------------------------------------------------------------------------


@dataclass(slots=True)
class _Slot:
    """A place that holds a node: a mapping's key or value, or a list item."""

    parent: yaml.Node
    index: int
    role: Literal["key", "value", "item"]
    key: str | None  # the key a value sits under (a key slot: the key itself)
    node: yaml.Node

    def put(self, node: yaml.Node) -> None:
        if self.role == "item":
            self.parent.value[self.index] = node
        else:
            key_node, value_node = self.parent.value[self.index]
            pair = (node, value_node) if self.role == "key" else (key_node, node)
            self.parent.value[self.index] = pair
        self.node = node


def _slots(root: yaml.Node) -> list[_Slot]:
    """Every slot of the tree, each node visited once (mutants may share or loop nodes)."""
    out: list[_Slot] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for i, (k, v) in enumerate(node.value):
                name = str(k.value) if isinstance(k, yaml.ScalarNode) else None
                out.append(_Slot(node, i, "key", name, k))
                out.append(_Slot(node, i, "value", name, v))
                stack.append(v)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                out.append(_Slot(node, i, "item", None, item))
                stack.append(item)
    return out


def _mappings(root: yaml.Node) -> list[yaml.MappingNode]:
    found = [s.node for s in _slots(root) if isinstance(s.node, yaml.MappingNode)]
    if isinstance(root, yaml.MappingNode):
        found.append(root)
    return found


def _scalar(tag: str, value: str) -> yaml.ScalarNode:
    return yaml.ScalarNode(tag, value)


def _get(mapping: yaml.MappingNode, key: str) -> yaml.Node | None:
    for k, v in mapping.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v  # type: ignore[no-any-return]
    return None


def _set(mapping: yaml.MappingNode, key: str, value: yaml.Node) -> None:
    for i, (k, _v) in enumerate(mapping.value):
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            mapping.value[i] = (k, value)
            return
    mapping.value.append((_scalar(_STR, key), value))


def _items_with_id(root: yaml.Node, list_key: str) -> list[yaml.MappingNode]:
    """The mappings of a top-level list (groups, ports, evs) that have an id."""
    if not isinstance(root, yaml.MappingNode):
        return []
    seq = _get(root, list_key)
    if not isinstance(seq, yaml.SequenceNode):
        return []
    return [m for m in seq.value if isinstance(m, yaml.MappingNode)]


def _ids(root: yaml.Node) -> list[str]:
    """Every id-like scalar in the file: reusing them makes near-valid, cross-wired mutants."""
    found = []
    for slot in _slots(root):
        if slot.role == "value" and slot.key in _ID_KEYS and isinstance(slot.node, yaml.ScalarNode):
            found.append(str(slot.node.value))
    return found or ["feed"]


# ---- mutations ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Mutation:
    """The work in progress of one case: the tree, raw fragments to splice in, what was done."""

    rng: random.Random
    kind: Kind
    root: yaml.Node
    donor: Callable[[], yaml.Node]  # another shipped file's tree, for grafts (made on demand)
    raw: dict[str, str] = field(default_factory=dict)
    ops: list[str] = field(default_factory=list)

    def raw_node(self, text: str) -> yaml.ScalarNode:
        """A placeholder the emitter writes plainly, replaced by ``text`` after emitting."""
        marker = f"FUZZRAW{len(self.raw)}X"
        self.raw[marker] = text
        return _scalar(_STR, marker)


def _laughs(m: _Mutation) -> yaml.Node:
    """A bounded billion laughs: levels of lists (or merge keys) that each repeat the level
    below k times through aliases. Tiny as text; k**depth nodes if anything expands it."""
    k, depth = m.rng.choice(((9, 8), (6, 9), (4, 12), (3, 14)))
    if m.rng.random() < 0.5:
        level: yaml.Node = yaml.SequenceNode(_SEQ, [_scalar(_STR, "lol")] * k)
        for _ in range(depth):
            level = yaml.SequenceNode(_SEQ, [level] * k)
        return level
    base = yaml.MappingNode(_MAP, [(_scalar(_STR, "id"), _scalar(_STR, "lol"))])
    level = base
    for n in range(depth):
        merge = (_scalar(_MERGE, "<<"), yaml.SequenceNode(_SEQ, [level] * k))
        level = yaml.MappingNode(_MAP, [merge, (_scalar(_STR, f"k{n}"), _scalar(_INT, "1"))])
    return level


def _new_value(m: _Mutation, key: str | None) -> tuple[str, yaml.Node]:
    """A replacement value: its category (for the case's description) and the node."""
    rng = m.rng
    pools: list[str] = [
        "null",
        "string",
        "huge",
        "negative",
        "nan",
        "inf",
        "number",
        "list",
        "mapping",
        "empty",
        "unicode",
        "deep",
        "bool",
        "timestamp",
        "duration",
        "id",
        "path",
        "url",
        "raw",
        "laughs",
        "self",
        "sibling",
    ]
    # Bias towards what the key takes, so the value gets past the type check to the rules.
    if key is not None:
        if key in _DURATION_KEYS or key.endswith("_s"):
            pools += ["duration"] * 6
        if key in _ID_KEYS:
            pools += ["id"] * 6
        if key in _PATH_KEYS:
            pools += ["path"] * 6
        if key in _URL_KEYS:
            pools += ["url"] * 6
        if key in ("start", "time"):
            pools += ["timestamp"] * 4
    kind = rng.choice(pools)
    node: yaml.Node
    if kind == "null":
        node = _scalar(_NULL, rng.choice(("null", "~", "")))
    elif kind == "string":
        node = _scalar(_STR, rng.choice(_STRINGS))
    elif kind == "huge":
        text = rng.choice((_HUGE_INT, _HUGE_HEX, "1.0e+308", "1.7976931348623157e+308"))
        node = _scalar(_INT if not text.startswith("1.") else _FLOAT, text)
    elif kind == "negative":
        node = _scalar(_INT, rng.choice(("-1", "-40", "-" + _HUGE_INT)))
    elif kind == "nan":
        node = _scalar(_FLOAT, rng.choice((".nan", ".NaN", ".NAN")))
    elif kind == "inf":
        node = _scalar(_FLOAT, rng.choice((".inf", "-.inf", "+.inf", "1.0e+999")))
    elif kind == "number":
        text = rng.choice(_NUMBERS)
        tag = _FLOAT if "." in text and not text.startswith("0x") else _INT
        node = _scalar(tag, text)
    elif kind == "list":
        items = [_scalar(_INT, "1"), _scalar(_STR, "x"), yaml.MappingNode(_MAP, [])]
        node = yaml.SequenceNode(_SEQ, rng.sample(items, rng.randint(0, 3)))
        if rng.random() < 0.2:
            node = yaml.SequenceNode(_SEQ, [_scalar(_INT, str(i)) for i in range(2000)])
    elif kind == "mapping":
        pairs = [(_scalar(_STR, rng.choice(_KNOWN_KEYS)), _scalar(_INT, "1"))]
        node = yaml.MappingNode(_MAP, pairs if rng.random() < 0.7 else [])
    elif kind == "empty":
        node = rng.choice(
            (_scalar(_STR, ""), yaml.SequenceNode(_SEQ, []), yaml.MappingNode(_MAP, []))
        )
    elif kind == "unicode":
        node = _scalar(_STR, rng.choice(("ünïcödé ⚡ 充電", "\U0001f50c", "Ω", "\u202e1")))
    elif kind == "deep":
        node = m.raw_node(_deep_raw(rng))
    elif kind == "bool":
        node = _scalar(_BOOL, rng.choice(("true", "false", "yes", "off")))
    elif kind == "timestamp":
        node = _scalar(_TIMESTAMP, rng.choice(_TIMESTAMPS))
    elif kind == "duration":
        text = rng.choice(_DURATIONS)
        node = _scalar(_STR, text)
    elif kind == "id":
        node = _scalar(_STR, rng.choice((*_IDS, *_ids(m.root))))
    elif kind == "path":
        node = _scalar(_STR, rng.choice(_PATHS))
    elif kind == "url":
        node = _scalar(_STR, rng.choice(_URLS))
    elif kind == "raw":
        node = m.raw_node(rng.choice(_RAW))
    elif kind == "laughs":
        node = _laughs(m)
    elif kind == "self":  # the value contains itself (an anchor used inside its own node)
        loop: yaml.Node
        if rng.random() < 0.5:
            loop = yaml.SequenceNode(_SEQ, [])
            loop.value.append(loop)
        else:
            loop = yaml.MappingNode(_MAP, [(_scalar(_STR, "id"), _scalar(_STR, "x"))])
            loop.value.append((_scalar(_MERGE, "<<"), loop))
        node = loop
    else:  # "sibling": a node from elsewhere in the same file (often the wrong shape)
        slots = _slots(m.root)
        node = rng.choice(slots).node if slots else _scalar(_NULL, "null")
    return kind, node


def _typo(rng: random.Random, key: str) -> str:
    choice = rng.randrange(7)
    if not key:
        return "x"
    i = rng.randrange(len(key))
    if choice == 0:
        return key[:i] + key[i + 1 :] or "x"
    if choice == 1 and len(key) > 1:
        i = min(i, len(key) - 2)
        return key[:i] + key[i + 1] + key[i] + key[i + 2 :]
    if choice == 2:
        return key.upper()
    if choice == 3:
        return key + rng.choice(("_", "s", " ", "\u00a0"))
    if choice == 4:
        return key.replace("_", "-") if "_" in key else key + "_a"
    if choice == 5:
        return rng.choice(_KNOWN_KEYS)
    return key[:i] + rng.choice("xyzé0") + key[i:]


def _op_delete_key(m: _Mutation) -> str | None:
    maps = [mp for mp in _mappings(m.root) if mp.value]
    if not maps:
        return None
    mp = m.rng.choice(maps)
    i = m.rng.randrange(len(mp.value))
    key = getattr(mp.value[i][0], "value", "?")
    del mp.value[i]
    return f"delete key {key!r}"


def _op_duplicate_key(m: _Mutation) -> str | None:
    maps = [mp for mp in _mappings(m.root) if mp.value]
    if not maps:
        return None
    mp = m.rng.choice(maps)
    i = m.rng.randrange(len(mp.value))
    k, v = mp.value[i]
    if m.rng.random() < 0.5:
        _kind, v = _new_value(m, getattr(k, "value", None))
    mp.value.insert(m.rng.randrange(len(mp.value) + 1), (k, v))
    return f"duplicate key {getattr(k, 'value', '?')!r}"


def _op_replace_value(m: _Mutation) -> str | None:
    slots = [s for s in _slots(m.root) if s.role != "key"]
    if not slots:
        return None
    slot = m.rng.choice(slots)
    kind, node = _new_value(m, slot.key)
    slot.put(node)
    return f"replace {slot.key or 'item'} with {kind}"


def _op_replace_key(m: _Mutation) -> str | None:
    slots = [s for s in _slots(m.root) if s.role == "key"]
    if not slots:
        return None
    slot = m.rng.choice(slots)
    kind, node = _new_value(m, None)
    slot.put(node)
    return f"replace key {slot.key!r} with {kind}"


def _op_swap_values(m: _Mutation) -> str | None:
    slots = [s for s in _slots(m.root) if s.role != "key"]
    if len(slots) < 2:
        return None
    a, b = m.rng.sample(slots, 2)
    node_a, node_b = a.node, b.node
    a.put(node_b)
    # b's slot may sit inside a's old node, now moved; put() still edits that (moved) parent.
    b.put(node_a)
    return f"swap {a.key or 'item'} and {b.key or 'item'}"


def _op_rename_key(m: _Mutation) -> str | None:
    slots = [s for s in _slots(m.root) if s.role == "key" and s.key is not None]
    if not slots:
        return None
    slot = m.rng.choice(slots)
    new = _typo(m.rng, slot.key or "")
    slot.put(_scalar(_STR, new))
    return f"rename key {slot.key!r} to {new!r}"


def _op_add_key(m: _Mutation) -> str | None:
    maps = _mappings(m.root)
    if not maps:
        return None
    mp = m.rng.choice(maps)
    key = m.rng.choice(_KNOWN_KEYS)
    kind, node = _new_value(m, key)
    mp.value.append((_scalar(_STR, key), node))
    return f"add key {key!r} ({kind})"


def _op_graft(m: _Mutation) -> str | None:
    """Put a real block of another shipped file here (a schedule, a link, events, sim...):
    reaches the rules behind keys this file lacks with values that pass their type checks."""
    donor = m.donor()
    pairs = [
        (s.parent.value[s.index][0], s.node)
        for s in _slots(donor)
        if s.role == "value" and isinstance(s.node, yaml.MappingNode | yaml.SequenceNode)
    ]
    pairs += [(k, v) for k, v in getattr(donor, "value", [])]
    maps = _mappings(m.root)
    if not pairs or not maps:
        return None
    key, value = m.rng.choice(pairs)
    target = m.rng.choice(maps)
    _set(target, str(key.value), value)
    return f"graft {key.value!r}"


def _targets(root: yaml.Node, target: Target) -> list[yaml.MappingNode]:
    if not isinstance(root, yaml.MappingNode):
        return []
    if target == "top":
        return [root]
    if target == "group":
        return _items_with_id(root, "groups")
    if target == "port":
        return _items_with_id(root, "ports")
    sim = _get(root, "sim")
    evs = _items_with_id(root, "evs")
    return evs + (_items_with_id(sim, "evs") if isinstance(sim, yaml.MappingNode) else [])


def _op_snippet(m: _Mutation) -> str | None:
    """A documented block put where it belongs, then usually one edit inside it."""
    fitting = [
        (target, key, text)
        for kinds, target, key, text in _SNIPPETS
        if m.kind in kinds.split() and _targets(m.root, target)
    ]
    if not fitting:
        return None
    target, key, text = m.rng.choice(fitting)
    places = _targets(m.root, target)
    block = _compose(f"{{{key}: {text}}}")
    place = m.rng.choice(places)
    for k, v in block.value:
        _set(place, str(k.value), v)
    done = f"add {target} {key}: {text}"
    inner = _slots(block)
    if inner and m.rng.random() < 0.7:
        slot = m.rng.choice(inner)
        if slot.role == "key" and m.rng.random() < 0.5:
            new = _typo(m.rng, slot.key or "")
            slot.put(_scalar(_STR, new))
            return f"{done}, key {slot.key!r} -> {new!r}"
        kind, value = _new_value(m, slot.key)
        if slot.role != "key":
            slot.put(value)
            return f"{done}, its {slot.key or 'item'} -> {kind}"
    return done


def _op_list_edit(m: _Mutation) -> str | None:
    seqs = [s.node for s in _slots(m.root) if isinstance(s.node, yaml.SequenceNode)]
    if not seqs:
        return None
    seq = m.rng.choice(seqs)
    choice = m.rng.randrange(4)
    if choice == 0 and seq.value:
        del seq.value[m.rng.randrange(len(seq.value))]
        return "remove a list item"
    if choice == 1 and seq.value:
        seq.value.insert(m.rng.randrange(len(seq.value) + 1), m.rng.choice(seq.value))
        return "duplicate a list item"
    if choice == 2:
        seq.value.clear()
        return "empty a list"
    m.rng.shuffle(seq.value)
    return "shuffle a list"


def _op_cycle(m: _Mutation) -> str | None:
    """Group parents that loop (two groups naming each other), a self-parent or an orphan."""
    groups = [g for g in _items_with_id(m.root, "groups") if _get(g, "id") is not None]
    if not groups:
        return None
    a = m.rng.choice(groups)
    b = m.rng.choice(groups)
    a_id = _get(a, "id")
    b_id = _get(b, "id")
    assert a_id is not None and b_id is not None
    choice = m.rng.randrange(3)
    if choice == 0:
        _set(a, "parent", _scalar(_STR, str(b_id.value)))
        _set(b, "parent", _scalar(_STR, str(a_id.value)))
        return f"cycle {a_id.value} <-> {b_id.value}"
    if choice == 1:
        _set(a, "parent", _scalar(_STR, str(a_id.value)))
        return f"self-parent {a_id.value}"
    _set(a, "parent", _scalar(_STR, "nowhere"))
    return f"orphan {a_id.value}"


def _op_port_group(m: _Mutation) -> str | None:
    """A port on an unknown group, or on another existing group (topology rules)."""
    ports = _items_with_id(m.root, "ports")
    if not ports:
        return None
    port = m.rng.choice(ports)
    gid = m.rng.choice(("nowhere", "", "port", *_ids(m.root)))
    _set(port, "group", _scalar(_STR, gid))
    return f"port group -> {gid!r}"


def _op_nudge_number(m: _Mutation) -> str | None:
    """A number moved to a boundary: near-valid files test the electrical rules themselves."""
    slots = [
        s
        for s in _slots(m.root)
        if s.role != "key" and isinstance(s.node, yaml.ScalarNode) and s.node.tag in (_INT, _FLOAT)
    ]
    if not slots:
        return None
    slot = m.rng.choice(slots)
    try:
        old = float(str(slot.node.value).replace("_", ""))
    except ValueError:
        old = 1.0
    new = m.rng.choice(
        (old * 2, old / 2, -old, old + 0.01, old - 0.01, 0.0, 6.0, 5.99, 8.0, 80.0, 80.01, 1e-9)
    )
    slot.put(_scalar(_FLOAT, repr(float(new))))
    return f"nudge {slot.key or 'item'} {old:g} -> {new:g}"


def _op_flip_kind(m: _Mutation) -> str | None:
    """Add or remove the top-level ``site:`` key that decides how ``config check`` reads it."""
    if not isinstance(m.root, yaml.MappingNode):
        return None
    for i, (k, _v) in enumerate(m.root.value):
        if isinstance(k, yaml.ScalarNode) and k.value == "site":
            del m.root.value[i]
            return "drop top-level site:"
    m.root.value.insert(0, (_scalar(_STR, "site"), _scalar(_STR, "fuzz")))
    return "add top-level site:"


_NODE_OPS: tuple[tuple[Callable[[_Mutation], str | None], int], ...] = (
    (_op_delete_key, 4),
    (_op_duplicate_key, 2),
    (_op_replace_value, 12),
    (_op_replace_key, 1),
    (_op_swap_values, 3),
    (_op_rename_key, 3),
    (_op_add_key, 3),
    (_op_graft, 4),
    (_op_snippet, 8),
    (_op_list_edit, 3),
    (_op_cycle, 2),
    (_op_port_group, 2),
    (_op_nudge_number, 5),
    (_op_flip_kind, 1),
)

_GARBAGE = (
    b"\xff\xfe",
    b"\x80",
    b"\xc3",
    b"\x00",
    b"\x07",
    b"\x1b[31m",
    b"\t",
    b"\r",
    b"\r\n",
    b"\xef\xbb\xbf",
    b"\xc2\x85",
    b"\xe2\x80\xa8",
    b":",
    b": ",
    b"{",
    b"}",
    b"[",
    b"]",
    b"&a ",
    b"*a",
    b"!",
    b"!!",
    b"%",
    b"@",
    b"`",
    b"|",
    b">",
    b"'",
    b'"',
    b"#",
    b"- ",
    b"? ",
    b",",
    b"<<: ",
    b"\n---\n",
    b"\n...\n",
    b"%YAML 1.1\n",
    b"%TAG ! tag:x,2000:\n",
    b"\\",
)


def _text_op(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """One text-level damage: what a bad editor, a cut download or a paste does."""
    choice = rng.randrange(9)
    lines = data.split(b"\n")
    if choice == 0:
        cut = rng.randrange(len(data) + 1)
        return f"truncate at byte {cut}", data[:cut]
    if choice == 1:
        at = rng.randrange(len(data) + 1)
        junk = b"".join(rng.choice(_GARBAGE) for _ in range(rng.randint(1, 4)))
        return f"insert {junk!r} at byte {at}", data[:at] + junk + data[at:]
    if choice == 2:
        at = rng.randrange(len(data) + 1)
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        return f"insert random bytes {junk!r} at byte {at}", data[:at] + junk + data[at:]
    if choice == 3 and lines:
        i = rng.randrange(len(lines))
        del lines[i]
        return f"delete line {i + 1}", b"\n".join(lines)
    if choice == 4 and lines:
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
        return f"duplicate line {i + 1}", b"\n".join(lines)
    if choice == 5 and len(lines) > 1:
        i, j = rng.sample(range(len(lines)), 2)
        lines[i], lines[j] = lines[j], lines[i]
        return f"swap lines {i + 1} and {j + 1}", b"\n".join(lines)
    if choice == 6 and lines:
        i = rng.randrange(len(lines))
        indent = rng.choice((b" ", b"  ", b"\t", b"    "))
        if rng.random() < 0.5:
            lines[i] = indent + lines[i]
        else:
            lines[i] = lines[i].lstrip(b" ")
        return f"re-indent line {i + 1}", b"\n".join(lines)
    if choice == 7:
        spots = [mt.span() for mt in re.finditer(rb"\b\d+(?:\.\d+)?[a-z]*\b", data)]
        if spots:
            a, b = rng.choice(spots)
            new = rng.choice((*_DURATIONS, *_NUMBERS)).encode()
            return f"replace token {data[a:b]!r} with {new!r}", data[:a] + new + data[b:]
    if choice == 8:
        return "CRLF line ends", data.replace(b"\n", b"\r\n")
    at = rng.randrange(len(data) + 1)
    return f"insert ':' at byte {at}", data[:at] + b":" + data[at:]


@dataclass(frozen=True, slots=True)
class Mutant:
    """One case: which shipped file it came from, what was done to it, and the bytes."""

    seed: int
    case: int
    source: Source
    ops: tuple[str, ...]
    data: bytes

    def describe(self) -> str:
        return f"seed {self.seed} case {self.case}: {self.source.rel}: {'; '.join(self.ops)}"


# The fuzzer's own reading and writing of YAML uses libyaml when present: it is most of a
# case's time otherwise. The loader under test always reads with its own (pure) loader.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _compose(text: str) -> yaml.Node:
    node = yaml.compose(text, Loader=_Loader)
    assert node is not None, "a shipped config is empty"
    return node


def _emit(root: yaml.Node, raw: dict[str, str]) -> str:
    text = yaml.serialize(root, Dumper=_Dumper, allow_unicode=True, width=4096)
    for marker, fragment in raw.items():
        text = text.replace(marker, fragment)
    return text


class Fuzzer:
    """Makes the mutants of one seed: ``mutant(case)`` is a pure function of (seed, case)."""

    def __init__(self, seed: int, sources: Sequence[Source] | None = None) -> None:
        self.seed = seed
        self.sources = tuple(sources) if sources is not None else shipped_sources()

    def mutant(self, case: int) -> Mutant:
        rng = random.Random(f"ampshare-config-fuzz:{self.seed}:{case}")
        source = rng.choice(self.sources)
        ops: list[str] = []
        data = source.text.encode("utf-8")
        # Most cases are one edit (each refusal names one culprit); some stack up to four.
        n_node = rng.choice((0, 1, 1, 1, 1, 2, 2, 3))
        n_text = 1 if n_node == 0 else rng.choice((0, 0, 0, 0, 0, 1))
        if n_node:
            root = _compose(source.text)
            donor = rng.choice(self.sources)
            work = _Mutation(rng, source.kind, root, lambda: _compose(donor.text))
            weights = [w for _op, w in _NODE_OPS]
            tries = 0
            while len(work.ops) < n_node and tries < 20:
                tries += 1
                op = rng.choices([op for op, _w in _NODE_OPS], weights)[0]
                done = op(work)
                if done is not None:
                    work.ops.append(done)
            ops += work.ops
            data = _emit(work.root, work.raw).encode("utf-8")
        for _ in range(n_text):
            what, data = _text_op(rng, data)
            ops.append(what)
        return Mutant(self.seed, case, source, tuple(ops), data)


# ---- running a case -------------------------------------------------------------------------


class Outcome(enum.Enum):
    OK = "ok"
    REFUSED = "refused"
    CRASH = "crash"  # any exception but a clean refusal: the installer sees a traceback
    UNLOCATED = "unlocated"  # a refusal that does not say FILE:LINE on one line
    HANG = "hang"


@dataclass(frozen=True, slots=True)
class Result:
    mutant: Mutant
    outcome: Outcome
    detail: str  # the refusal, or the traceback
    seconds: float

    @property
    def failed(self) -> bool:
        return self.outcome in (Outcome.CRASH, Outcome.UNLOCATED, Outcome.HANG)

    def report(self) -> str:
        """All it takes to reproduce the failure: seed, case, source, edits, bytes, traceback."""
        text = self.mutant.data.decode("utf-8", errors="backslashreplace")
        if len(text) > 20000:
            text = text[:20000] + f"\n... ({len(text) - 20000} more characters)"
        return (
            f"== {self.outcome.value.upper()} ({self.seconds:.2f} s) {self.mutant.describe()}\n"
            f"-- reproduce: scripts/fuzz-config --seed {self.mutant.seed} "
            f"--case {self.mutant.case}\n"
            f"-- mutated {self.mutant.source.kind} file:\n{text}\n"
            f"-- {self.detail.rstrip()}\n"
        )


class _Overtime(BaseException):
    """Raised into a case that runs past its limit; a BaseException so that no handler in the
    loader that catches ordinary errors can swallow it."""


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raise _Overtime into the body after ``seconds`` (SIGALRM: main thread only)."""
    armed = True

    def on_alarm(_signum: int, _frame: FrameType | None) -> None:
        if armed:  # not once the body is over and the timer is being cancelled
            raise _Overtime

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _memory_cap(headroom: int) -> Iterator[None]:
    """Lower the soft address-space limit to what the process uses now plus ``headroom``,
    for the duration (Linux; elsewhere no cap: the time limit alone must do)."""
    try:
        import resource

        with open("/proc/self/statm") as stream:
            used = int(stream.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, OSError, ValueError):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = used + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield  # already tighter
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class Workspace:
    """A private copy of configs/ to write mutants into, beside the files they refer to
    (``../ct4000-jumper.yaml``, ``st1.pw``, ``demo.key``), without touching the real ones."""

    def __init__(self, configs: Path = CONFIGS) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="ampshare-fuzz-")
        self.root = Path(self._tmp.name) / "configs"
        shutil.copytree(configs, self.root)
        for key in self.root.rglob("*.key"):
            # A checkout's key is world-readable and the loader warns about it on every load;
            # thousands of identical warnings would bury the report.
            key.chmod(0o600)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._tmp.cleanup()

    def write(self, mutant: Mutant) -> Path:
        rel = Path(mutant.source.rel)
        path = self.root / rel.parent / f"{rel.stem}.fuzz{rel.suffix}"
        path.write_bytes(mutant.data)
        return path


def load(kind: Kind, path: str) -> None:
    """What the product does with the file: `config check`'s own dispatch and summary for
    station and site files, the scenario loader of `ampshare sim` for scenarios."""
    if kind == "scenario":
        load_scenario(path)
    else:
        check_config(path)


def _classify(path: str, exc: BaseException) -> tuple[Outcome, str]:
    if isinstance(exc, ConfigError):
        text = str(exc)
        clean = (
            exc.line is not None
            and exc.path == path
            and text.startswith(f"{path}:{exc.line}: ")
            and "\n" not in text
            and "\r" not in text
        )
        return (Outcome.REFUSED if clean else Outcome.UNLOCATED), text
    if isinstance(exc, TreeError):  # config check prints it, but without a line
        return Outcome.UNLOCATED, f"TreeError: {exc}"
    return Outcome.CRASH, "".join(traceback.format_exception(exc))


def run_case(workspace: Workspace, mutant: Mutant, time_limit_s: float) -> Result:
    """Load one mutant in-process; a case still running after ``time_limit_s`` is a hang."""
    path = str(workspace.write(mutant))
    kind = mutant.source.kind
    outcome, detail = Outcome.OK, ""
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(
        signal, "setitimer"
    )
    start = time.perf_counter()
    if use_alarm:
        try:
            with _alarm(time_limit_s), _memory_cap(MEMORY_HEADROOM_BYTES):
                load(kind, path)
        except _Overtime:
            outcome, detail = Outcome.HANG, f"still running after {time_limit_s:g} s"
        except Exception as exc:  # the fuzzer's job is to see every exception, not handle it
            outcome, detail = _classify(path, exc)
    else:  # not the main thread: no signals; a worker we can at least stop waiting for
        box: list[BaseException | None] = []

        def work() -> None:
            try:
                load(kind, path)
                box.append(None)
            except Exception as exc:
                box.append(exc)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        worker.join(time_limit_s)
        if not box:
            outcome, detail = Outcome.HANG, f"still running after {time_limit_s:g} s"
        elif box[0] is not None:
            outcome, detail = _classify(path, box[0])
    seconds = time.perf_counter() - start
    if seconds > time_limit_s and outcome is not Outcome.HANG:
        # Finished, but only after the limit (stuck in C code the alarm could not interrupt).
        outcome, detail = Outcome.HANG, f"took {seconds:.1f} s (limit {time_limit_s:g} s)"
    return Result(mutant, outcome, detail, seconds)


@dataclass(slots=True)
class Tally:
    counts: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    failures: list[Result] = field(default_factory=list)

    def add(self, result: Result) -> None:
        self.counts[result.outcome] += 1
        if result.failed:
            self.failures.append(result)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def counted(self) -> str:
        c = self.counts
        line = (
            f"{c[Outcome.REFUSED]} refused, {c[Outcome.OK]} ok, "
            f"{c[Outcome.CRASH]} crashes, {c[Outcome.HANG]} hangs"
        )
        if c[Outcome.UNLOCATED]:
            line += f", {c[Outcome.UNLOCATED]} refusals without file:line"
        return line

    def summary(self) -> str:
        return f"fuzz: {self.total} cases: {self.counted()}"


def fuzz(
    count: int,
    seed: int,
    *,
    first: int = 0,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    sources: Sequence[Source] | None = None,
) -> Iterator[Result]:
    """Cases ``first .. first + count - 1`` of ``seed``, each made, loaded and classified."""
    fuzzer = Fuzzer(seed, sources)
    with Workspace() as workspace:
        for case in range(first, first + count):
            yield run_case(workspace, fuzzer.mutant(case), time_limit_s)


# ---- command line (scripts/fuzz-config) -----------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fuzz-config",
        description="Mutation fuzzing of the shipped station, site and scenario files through "
        "the config loaders: 0 crashes and 0 hangs expected.",
    )
    parser.add_argument("--count", type=int, default=5000, help="cases to run (default 5000)")
    parser.add_argument("--seed", type=int, default=1, help="seed (default 1)")
    parser.add_argument("--case", type=int, help="run only this case and print its mutant")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=DEFAULT_TIME_LIMIT_S,
        help=f"seconds before a case counts as a hang (default {DEFAULT_TIME_LIMIT_S:g})",
    )
    args = parser.parse_args(argv)
    if args.case is not None:
        (result,) = fuzz(1, args.seed, first=args.case, time_limit_s=args.time_limit)
        print(result.report())
        return 1 if result.failed else 0
    tally = Tally()
    start = time.perf_counter()
    step = max(1, args.count // 20)
    for result in fuzz(args.count, args.seed, time_limit_s=args.time_limit):
        tally.add(result)
        if result.failed:
            print(result.report(), file=sys.stderr, flush=True)
        if tally.total % step == 0 or tally.total == args.count:
            elapsed = time.perf_counter() - start
            print(
                f"fuzz: {tally.total}/{args.count} ({elapsed:.0f} s): {tally.counted()}",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.perf_counter() - start
    print(f"{tally.summary()} ({elapsed:.1f} s, seed {args.seed})")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
