"""The pilot board's wire protocol: message types, the frame codec and a resynchronising parser.

This module's one job is bytes <-> messages, as specified in ``docs/serial-protocol.md``. The
frame and every payload are declared once with construct and that one declaration is used both
to build and to parse. A frame is::

    0x7E | length | seq | type | payload ... | CRC-16 (big endian)
           `------------ length bytes -----´
           `------------ covered by the CRC ----------´

The CRC is CRC-16/CCITT-FALSE (also catalogued as CRC-16/IBM-3740): polynomial 0x1021, initial
value 0xFFFF, no reflection, no final XOR; check value 0x29B1 for the ASCII bytes "123456789".
It is Python's ``binascii.crc_hqx`` (the stdlib's C implementation) started at 0xFFFF, plugged
into construct's ``Checksum``. No byte stuffing: the start byte may appear inside a frame, so
resynchronisation relies on the length byte and the CRC (``FrameParser``).

Quantities travel as integers in fixed units (duty in 0.1 %, volts in 0.01 V, amps in 0.01 A,
temperature in 0.1 °C); converting to floats is the caller's business, so that a build-then-parse
round trip is the identity. The units, sequence widths and the timing both ends keep are
declared here once (``CV_PER_V``, ``PERMILLE_PER_PCT``, ``GAP_S``...) and both ends convert with
them; the duty's unit is ``hal.pilot``'s duty step.

It is over 500 lines because it really is one thing: the wire format. The message
classes, the construct declaration, the one-frame codec and the stream parser all rest on the
same private declaration (``_FRAME``, ``_BODY``), which splitting them would have to expose.
"""

from __future__ import annotations

import binascii
import enum
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from construct import (
    BitStruct,
    Checksum,
    Const,
    ConstructError,
    Error,
    ExplicitError,
    Flag,
    GreedyBytes,
    Int8ub,
    Int16sb,
    Int16ub,
    Int32ub,
    Padding,
    Prefixed,
    PrefixedArray,
    RawCopy,
    Struct,
    Switch,
    Terminated,
    this,
)

from hal.pilot import DUTY_STEPS_PER_PCT, MAX_DUTY_PCT

__all__ = [
    "CA_PER_A",
    "CURRENT_NONE",
    "CV_PER_V",
    "GAP_S",
    "LOW_NONE",
    "MAX_BODY",
    "MAX_DUTY_PERMILLE",
    "MAX_FRAME",
    "MAX_PORTS",
    "MIN_WATCHDOG_S",
    "PERMILLE_PER_PCT",
    "SEQ_MASK",
    "START",
    "TRIPS_MASK",
    "Ack",
    "AckCode",
    "Event",
    "FrameParser",
    "Heartbeat",
    "Message",
    "MsgType",
    "Output",
    "ParserStats",
    "PortStatus",
    "ProtocolError",
    "PwmOff",
    "ReadStatus",
    "ResetGfci",
    "SetContactor",
    "SetPwm",
    "StateF",
    "Status",
    "crc16",
    "decode_frame",
    "encode",
]

START = 0x7E
MAX_PORTS = 8  # the most ports one board serves; bounds the longest frame
LOW_NONE = -32768  # pilot_low_cv when PWM is off: a steady pilot has no negative plateau
CURRENT_NONE = 0xFFFF  # current_ca of a board (or port) without a current transformer

# Wire units (docs/serial-protocol.md, "Messages"): both ends convert with these, never with
# numbers of their own.
CV_PER_V = 100  # pilot plateaus travel in 0.01 V
CA_PER_A = 100  # port currents travel in 0.01 A
# Duties travel in 0.1 % (per mille of the period): one step of the pilot generator's grid
# (hal.pilot.DUTY_RESOLUTION_PCT), so every duty IEC 61851-1 Table A.7 asks for
# (hal.pilot.amps_to_duty) travels exactly.
PERMILLE_PER_PCT = DUTY_STEPS_PER_PCT
MAX_DUTY_PERMILLE = round(MAX_DUTY_PCT * PERMILLE_PER_PCT)  # 1000 = 100.0 %; more: BAD_VALUE
SEQ_MASK = 0xFF  # seq is one byte (_BODY) and wraps (docs: "Sequence numbers")
TRIPS_MASK = 0xFFFF  # watchdog_trips is a u16 (_STATUS) and wraps

# Timing both ends keep (docs/serial-protocol.md).
# "Physical layer": a partial frame followed by this much silence is truncated, at both ends
# (the host's default ``gap``; the simulated board's fixed one).
GAP_S = 0.05
# "What a board must do", 1: a heartbeat's timeout is clamped to at least 100 ms, so a host
# never asks for less (below it a busy host would trip the board by its own scheduling
# jitter: a design margin, no standard).
MIN_WATCHDOG_S = 0.1
_CRC_INIT = 0xFFFF  # CRC-16/CCITT-FALSE: init 0xFFFF (poly 0x1021 is crc_hqx's own)


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (poly 0x1021, init 0xFFFF, unreflected, xorout 0)."""
    return binascii.crc_hqx(data, _CRC_INIT)


class MsgType(enum.IntEnum):
    """The ``type`` byte. Host -> board below 0x80, board -> host from 0x80."""

    SET_PWM = 0x01
    PWM_OFF = 0x02
    STATE_F = 0x03
    CONTACTOR = 0x04
    HEARTBEAT = 0x05
    READ_STATUS = 0x06
    RESET_GFCI = 0x07
    ACK = 0x81
    STATUS = 0x82
    EVENT = 0x83


class Output(enum.IntEnum):
    """What a port's pilot generator does (``PortStatus.output``)."""

    STEADY = 0  # +12 V, PWM off
    PWM = 1  # +-12 V, 1 kHz, at duty_permille
    F = 2  # -12 V, EVSE not available


class AckCode(enum.IntEnum):
    """``Ack.code``: 0 accepted, anything else refused (the board changed nothing)."""

    OK = 0
    BAD_PORT = 1  # no such port on this board
    BAD_VALUE = 2  # duty above 100.0 %, heartbeat timeout 0
    DISARMED = 3  # energising command while the heartbeat watchdog is not armed


# --- payloads, declared once (construct) ---------------------------------------------------

_PORT = Struct("port" / Int8ub)
_PORT_STATUS = Struct(
    "pilot_high_cv" / Int16sb,  # positive plateau, 0.01 V
    "pilot_low_cv" / Int16sb,  # negative plateau, 0.01 V; LOW_NONE with PWM off
    "output" / Int8ub,  # Output
    "duty_permille" / Int16ub,  # the duty being generated, 0.1 % (0 unless PWM)
    "flags"
    / BitStruct(  # the first field is the most significant bit
        Padding(4),
        "ground_ok" / Flag,  # bit 3
        "gfci" / Flag,  # bit 2: trip latched
        "contactor_fb" / Flag,  # bit 1: sensed closed (auxiliary contact / voltage sense)
        "contactor_cmd" / Flag,  # bit 0: coil driven
    ),
    "current_ca" / Int16ub,  # 0.01 A from the port's CT; CURRENT_NONE without one
)
_STATUS = Struct(
    "uptime_ms" / Int32ub,
    "flags" / BitStruct(Padding(6), "safe" / Flag, "jumper" / Flag),  # bit 1 safe, bit 0 jumper
    "temperature_dc" / Int16sb,  # board temperature, 0.1 °C
    "watchdog_ms" / Int16ub,  # the heartbeat timeout in force
    "watchdog_trips" / Int16ub,  # times the watchdog made the board safe (wraps)
    "ports" / PrefixedArray(Int8ub, _PORT_STATUS),
)
_PAYLOADS = {
    MsgType.SET_PWM: Struct("port" / Int8ub, "duty_permille" / Int16ub),
    MsgType.PWM_OFF: _PORT,
    MsgType.STATE_F: _PORT,
    MsgType.CONTACTOR: Struct("port" / Int8ub, "closed" / Flag),
    MsgType.HEARTBEAT: Struct("timeout_ms" / Int16ub),
    MsgType.READ_STATUS: Struct(),
    MsgType.RESET_GFCI: _PORT,
    MsgType.ACK: Struct("code" / Int8ub),
    MsgType.STATUS: _STATUS,
    MsgType.EVENT: _STATUS,
}
# The body: what the length byte counts. Terminated: a payload shorter or longer than its type
# is an error, never silently accepted.
_BODY = Struct(
    "seq" / Int8ub,
    "type" / Int8ub,
    "payload" / Switch(this.type, {int(k): v for k, v in _PAYLOADS.items()}, default=Error),
    Terminated,
)
# The frame: start byte, length-prefixed body, CRC over the length byte and the body.
_FRAME = Struct(
    "start" / Const(bytes([START])),
    "body" / RawCopy(Prefixed(Int8ub, GreedyBytes)),
    "crc" / Checksum(Int16ub, crc16, this.body.data),
)

_HEADER_BYTES = 2  # seq, type
_STATUS_FIXED_BYTES = 12  # uptime 4, flags 1, temperature 2, watchdog 2, trips 2, count 1
_PORT_STATUS_BYTES = 10
MAX_BODY = _HEADER_BYTES + _STATUS_FIXED_BYTES + MAX_PORTS * _PORT_STATUS_BYTES  # 94
MAX_FRAME = 1 + 1 + MAX_BODY + 2  # start, length, body, CRC: 98 bytes
_MIN_BODY = _HEADER_BYTES


# --- messages --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetPwm:
    """Start (or change) the port's pilot PWM at ``duty_permille`` (0.1 % steps, 0..1000)."""

    TYPE: ClassVar[MsgType] = MsgType.SET_PWM
    port: int
    duty_permille: int


@dataclass(frozen=True, slots=True)
class PwmOff:
    """PWM off: steady +12 V (SAE J1772 Table 3: EVSE present, no current offered)."""

    TYPE: ClassVar[MsgType] = MsgType.PWM_OFF
    port: int


@dataclass(frozen=True, slots=True)
class StateF:
    """Steady -12 V (SAE J1772 Table 3, state F: EVSE not available)."""

    TYPE: ClassVar[MsgType] = MsgType.STATE_F
    port: int


@dataclass(frozen=True, slots=True)
class SetContactor:
    """Drive the port's contactor coil (True) or release it (False)."""

    TYPE: ClassVar[MsgType] = MsgType.CONTACTOR
    port: int
    closed: bool


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The host is alive; keep the board armed for ``timeout_ms`` more (the board clamps it)."""

    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class ReadStatus:
    """Ask for a ``Status`` (answered with the request's sequence number)."""

    TYPE: ClassVar[MsgType] = MsgType.READ_STATUS


@dataclass(frozen=True, slots=True)
class ResetGfci:
    """Clear a latched GFCI trip (self-test and re-arm) before an automatic retry."""

    TYPE: ClassVar[MsgType] = MsgType.RESET_GFCI
    port: int


@dataclass(frozen=True, slots=True)
class Ack:
    """The board's answer to a command, with the command's sequence number."""

    TYPE: ClassVar[MsgType] = MsgType.ACK
    code: int


@dataclass(frozen=True, slots=True)
class PortStatus:
    """One port as the board sees it (raw units, see the field comments of ``_PORT_STATUS``)."""

    pilot_high_cv: int
    pilot_low_cv: int
    output: int
    duty_permille: int
    contactor_cmd: bool
    contactor_fb: bool
    gfci: bool
    ground_ok: bool
    current_ca: int


@dataclass(frozen=True, slots=True)
class Status:
    """The whole board: the answer to ``ReadStatus``."""

    TYPE: ClassVar[MsgType] = MsgType.STATUS
    uptime_ms: int
    jumper: bool
    safe: bool  # the watchdog has made the board safe and no heartbeat has re-armed it yet
    temperature_dc: int
    watchdog_ms: int
    watchdog_trips: int
    ports: tuple[PortStatus, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Event(Status):
    """An unsolicited ``Status``, sent when a discrete input or output changes (its sequence
    number is the board's own event counter)."""

    TYPE: ClassVar[MsgType] = MsgType.EVENT


Message = (
    SetPwm
    | PwmOff
    | StateF
    | SetContactor
    | Heartbeat
    | ReadStatus
    | ResetGfci
    | Ack
    | Status
    | Event
)
_CLASSES: dict[int, type[Any]] = {
    int(c.TYPE): c
    for c in (SetPwm, PwmOff, StateF, SetContactor, Heartbeat, ReadStatus, ResetGfci, Ack)
}
_CLASSES[MsgType.STATUS] = Status
_CLASSES[MsgType.EVENT] = Event
_PORT_FLAGS = ("contactor_cmd", "contactor_fb", "gfci", "ground_ok")


class ProtocolError(ValueError):
    """Bytes that are not a valid frame. ``kind`` says why: ``crc``, ``length`` (length byte
    outside what any message can have), ``truncated``, ``start``, ``unknown_type`` or
    ``payload`` (a CRC-valid frame whose payload does not fit its type)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


# --- codec -----------------------------------------------------------------------------------


def _payload_of(msg: Message) -> dict[str, Any]:
    if isinstance(msg, Status):
        return {
            "uptime_ms": msg.uptime_ms,
            "flags": {"safe": msg.safe, "jumper": msg.jumper},
            "temperature_dc": msg.temperature_dc,
            "watchdog_ms": msg.watchdog_ms,
            "watchdog_trips": msg.watchdog_trips,
            "ports": [
                {
                    "pilot_high_cv": p.pilot_high_cv,
                    "pilot_low_cv": p.pilot_low_cv,
                    "output": p.output,
                    "duty_permille": p.duty_permille,
                    "flags": {name: getattr(p, name) for name in _PORT_FLAGS},
                    "current_ca": p.current_ca,
                }
                for p in msg.ports
            ],
        }
    return {f.name: getattr(msg, f.name) for f in fields(msg)}


def _message_of(kind: int, payload: Any) -> Message:
    cls = _CLASSES[kind]
    if cls is Status or cls is Event:
        ports = tuple(
            PortStatus(
                pilot_high_cv=p.pilot_high_cv,
                pilot_low_cv=p.pilot_low_cv,
                output=p.output,
                duty_permille=p.duty_permille,
                current_ca=p.current_ca,
                **{name: bool(p.flags[name]) for name in _PORT_FLAGS},
            )
            for p in payload.ports
        )
        result: Message = cls(
            uptime_ms=payload.uptime_ms,
            jumper=bool(payload.flags.jumper),
            safe=bool(payload.flags.safe),
            temperature_dc=payload.temperature_dc,
            watchdog_ms=payload.watchdog_ms,
            watchdog_trips=payload.watchdog_trips,
            ports=ports,
        )
        return result
    values = {f.name: payload[f.name] for f in fields(cls)}
    for f in fields(cls):
        if f.type in (bool, "bool"):
            values[f.name] = bool(values[f.name])
    message: Message = cls(**values)
    return message


def encode(msg: Message, seq: int) -> bytes:
    """The frame carrying ``msg`` with sequence number ``seq`` (0..255).

    Raises ``ValueError`` for a message that cannot be encoded (a field out of its range, more
    than ``MAX_PORTS`` ports).
    """
    if isinstance(msg, Status) and len(msg.ports) > MAX_PORTS:
        raise ValueError(f"a status carries at most {MAX_PORTS} ports, not {len(msg.ports)}")
    try:
        body = _BODY.build({"seq": seq, "type": int(msg.TYPE), "payload": _payload_of(msg)})
        frame: bytes = _FRAME.build({"body": {"value": body}})
    except ConstructError as exc:
        raise ValueError(f"cannot encode {msg!r} (seq {seq}): {exc}") from None
    return frame


def _decode_body(body: bytes) -> tuple[int, Message]:
    try:
        parsed = _BODY.parse(body)
    except ExplicitError:
        raise ProtocolError("unknown_type", f"message type 0x{body[1]:02x}") from None
    except ConstructError as exc:
        kind = body[1] if len(body) > 1 else -1
        raise ProtocolError(
            "payload", f"{len(body) - _HEADER_BYTES} payload bytes do not fit type 0x{kind:02x}"
        ) from exc
    return int(parsed.seq), _message_of(int(parsed.type), parsed.payload)


def decode_frame(frame: bytes) -> tuple[int, Message]:
    """``(seq, message)`` from exactly one frame; ``ProtocolError`` for anything else."""
    if not frame or frame[0] != START:
        raise ProtocolError("start", "a frame begins with 0x7E")
    if len(frame) < 2:
        raise ProtocolError("truncated", "no length byte")
    length = frame[1]
    if not _MIN_BODY <= length <= MAX_BODY:
        raise ProtocolError("length", f"length byte {length} outside {_MIN_BODY}..{MAX_BODY}")
    if len(frame) != length + 4:
        kind = "truncated" if len(frame) < length + 4 else "length"
        raise ProtocolError(kind, f"{len(frame)} bytes for a length byte of {length}")
    try:
        parsed = _FRAME.parse(frame)
    except ConstructError:
        raise ProtocolError("crc", "CRC mismatch") from None
    return _decode_body(bytes(parsed.body.value))


# --- the stream parser -----------------------------------------------------------------------


@dataclass(slots=True)
class ParserStats:
    """What a ``FrameParser`` has seen: frames delivered and errors by kind."""

    frames: int = 0
    crc: int = 0
    length: int = 0
    unknown_type: int = 0
    payload: int = 0
    truncated: int = 0
    skipped_bytes: int = 0  # bytes dropped while looking for a frame

    @property
    def errors(self) -> int:
        return self.crc + self.length + self.unknown_type + self.payload + self.truncated

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class FrameParser:
    """Bytes in, ``(seq, message)`` out, from a byte stream that may carry anything.

    Never raises: every problem is counted in ``stats``. Resynchronisation: look for the start
    byte; a length byte outside what any message can have, or a CRC mismatch, drops that start
    byte only and the scan resumes on the next byte, so a valid frame that follows (or hides
    inside) garbage is found. A CRC-valid frame with an unknown type or a payload that does not
    fit its type is skipped whole (a newer board may send types this host does not know).
    A frame that never completes is discarded by ``expire()``, which the reader calls when the
    line has been idle for longer than a frame takes.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.stats = ParserStats()

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, Message]]:
        self._buf += data
        return self._scan()

    def expire(self) -> list[tuple[int, Message]]:
        """The line went idle with a partial frame held back: it will never complete."""
        out: list[tuple[int, Message]] = []
        if self._buf:
            self.stats.truncated += 1
            while self._buf:
                self._drop(1)
                out += self._scan()
        return out

    def _drop(self, n: int) -> None:
        del self._buf[:n]
        self.stats.skipped_bytes += n

    def _scan(self) -> list[tuple[int, Message]]:
        out: list[tuple[int, Message]] = []
        buf = self._buf
        while buf:
            start = buf.find(START)
            if start < 0:
                self._drop(len(buf))
                break
            if start:
                self._drop(start)
            if len(buf) < 2:
                break
            length = buf[1]
            if not _MIN_BODY <= length <= MAX_BODY:
                self.stats.length += 1
                self._drop(1)
                continue
            total = length + 4
            if len(buf) < total:
                break  # wait for the rest (or expire())
            frame = bytes(buf[:total])
            try:
                parsed = _FRAME.parse(frame)
            except ConstructError:
                self.stats.crc += 1
                self._drop(1)
                continue
            del buf[:total]  # CRC-valid: the frame is consumed whole, whatever it says
            try:
                out.append(_decode_body(bytes(parsed.body.value)))
            except ProtocolError as exc:
                if exc.kind == "unknown_type":
                    self.stats.unknown_type += 1
                else:
                    self.stats.payload += 1
                continue
            self.stats.frames += 1
        return out
