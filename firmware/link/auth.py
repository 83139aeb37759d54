"""Authenticated link messages: the site key, and the signed envelope every message travels in.

One job: prove that a limits or telemetry payload was written by a holder of the site key, and
unwrap it, before anything decodes it (docs/mqtt.md, "Threat model"). HMAC-SHA256 from the
standard library (RFC 2104; FIPS 198-1) over the exact bytes of the message, so no
canonical form of JSON is needed: the envelope carries the message as a string, and the
signature is checked over those bytes before they are parsed::

    {"kid": "3f9a0c1e", "sig": "<64 hex digits>", "body": "{\\"v\\":1,\\"site\\":...}"}

``kid`` names the key (the first 8 hex digits of the key's SHA-256: nothing about the key
itself is revealed, and no second setting can disagree with the key it names). A key file
holds one or more keys, one per line, as hex (at least 32 bytes: RFC 2104 section 3 asks for at
least the hash's output length); ``#`` starts a comment. The first key signs; every key
verifies, which is how a key is rotated without a flag day (docs/mqtt.md, "Keys").

Replay is not this module's business: a signed message stays valid for ever, so the receiver's
freshness rules (``firmware.link.station_link``) still apply to what comes out of here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from firmware.link.messages import MAX_PAYLOAD_BYTES

__all__ = [
    "ENVELOPE_MAX_BYTES",
    "KEY_BYTES",
    "AuthError",
    "KeyFileError",
    "Keyring",
    "generate_key_file",
    "load_keyring",
    "open_envelope",
]

_log = logging.getLogger("ampshare.link")

# RFC 2104 section 3: a key shorter than the hash output (32 bytes for SHA-256) weakens it.
KEY_BYTES = 32
_KID_HEX = 8
_SIG_HEX = 64
# The envelope adds its keys, a signature and the escaping of the body's quotes (JSON escapes
# a quote as two bytes); a body may be up to the codec's own bound before escaping.
ENVELOPE_MAX_BYTES = 2 * MAX_PAYLOAD_BYTES + 256
_ENVELOPE_KEYS = frozenset({"kid", "sig", "body"})


class AuthError(ValueError):
    """A payload that is not an envelope signed by a key we hold; ``reason`` is a counter key:
    "unsigned" (no envelope where one is required) or "signature" (malformed, unknown key id,
    or a signature that does not match)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file and what is wrong."""


def _kid(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:_KID_HEX]


@dataclass(frozen=True, slots=True)
class Keyring:
    """The site keys a party holds: the first signs, all verify."""

    keys: tuple[bytes, ...]
    path: str = ""
    _by_kid: dict[str, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyFileError("a keyring needs at least one key")
        for key in self.keys:
            if len(key) < KEY_BYTES:
                raise KeyFileError(f"a key of {len(key)} bytes is too short (at least {KEY_BYTES})")
        object.__setattr__(self, "_by_kid", {_kid(k): k for k in reversed(self.keys)})

    @property
    def kid(self) -> str:
        """The id of the signing key."""
        return _kid(self.keys[0])

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(_kid(k) for k in self.keys)

    def seal(self, body: bytes) -> bytes:
        """``body`` (UTF-8 JSON) in a signed envelope."""
        sig = hmac.new(self.keys[0], body, hashlib.sha256).hexdigest()
        doc = {"kid": self.kid, "sig": sig, "body": body.decode("utf-8")}
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def open(self, payload: bytes) -> bytes:
        """The body of a signed envelope; AuthError unless one of our keys signed it."""
        doc = _envelope(payload)
        if doc is None:
            raise AuthError("unsigned", "not a signed envelope (a key is configured)")
        kid, sig, body = doc
        key = self._by_kid.get(kid)
        if key is None:
            raise AuthError("signature", f"unknown key id {kid!r} (ours: {', '.join(self.kids)})")
        want = hmac.new(key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sig):
            raise AuthError("signature", f"signature does not match (key id {kid})")
        return body


def open_envelope(payload: bytes, keyring: Keyring | None) -> bytes:
    """The message inside ``payload``: verified with ``keyring``; with none (an insecure lab
    link), an envelope is unwrapped unchecked and a bare message passes as it is."""
    if keyring is not None:
        return keyring.open(payload)
    doc = _envelope(payload)
    return payload if doc is None else doc[2]


def _envelope(payload: bytes) -> tuple[str, str, bytes] | None:
    """(kid, sig, body) when ``payload`` is shaped as an envelope, None when it is not one at
    all; AuthError("signature") when it is a broken one."""
    # Cheap test first: a bare message starts {"v":..., an envelope {"kid":...
    if payload.lstrip()[:7] != b'{"kid":':
        return None
    if len(payload) > ENVELOPE_MAX_BYTES:
        raise AuthError("size", f"{len(payload)} bytes (at most {ENVELOPE_MAX_BYTES})")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise AuthError("signature", "a malformed envelope") from None
    if not isinstance(doc, dict) or set(doc) != _ENVELOPE_KEYS:
        raise AuthError("signature", "an envelope has exactly kid, sig and body")
    kid, sig, body = doc["kid"], doc["sig"], doc["body"]
    if not (isinstance(kid, str) and len(kid) == _KID_HEX and _is_hex(kid)):
        raise AuthError("signature", "kid must be 8 hex digits")
    if not (isinstance(sig, str) and len(sig) == _SIG_HEX and _is_hex(sig)):
        raise AuthError("signature", "sig must be 64 hex digits")
    if not isinstance(body, str):
        raise AuthError("signature", "body must be a string")
    return kid, sig.lower(), body.encode("utf-8")


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def parse_keys(text: str, path: str = "key file") -> Keyring:
    """A keyring from a key file's text (module docstring); KeyFileError says what is wrong."""
    keys: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            key = bytes.fromhex(line)
        except ValueError:
            raise KeyFileError(f"{path}:{number}: a key is hex digits") from None
        if len(key) < KEY_BYTES:
            raise KeyFileError(
                f"{path}:{number}: a key of {len(key)} bytes is too short (at least {KEY_BYTES}: "
                f"{2 * KEY_BYTES} hex digits; `ampshare keygen FILE` makes one)"
            )
        keys.append(key)
    if not keys:
        raise KeyFileError(f"{path}: no key in the file (`ampshare keygen FILE` makes one)")
    return Keyring(tuple(keys), path)


def load_keyring(path: str | os.PathLike[str]) -> Keyring:
    """Read a key file; KeyFileError if it is missing, unreadable, empty or malformed, or if
    anyone but its owner may write it. One that every local user may read is used, with a
    warning: any of them could sign limits."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyFileError(f"{p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{p}: not a text file of hex keys") from None
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise KeyFileError(f"{p}: others may write it (and so choose the key); chmod 600 it")
    ring = parse_keys(text, str(p))
    if mode & stat.S_IROTH:
        # Refusing would refuse a fresh checkout's demo key (git keeps no read bits); a real
        # site's key is made by `ampshare keygen`, mode 600.
        _log.warning("%s: the site key is readable by every local user; chmod 600 it", p)
    return ring


def generate_key_file(path: str | os.PathLike[str], *, keys: Sequence[bytes] = ()) -> Keyring:
    """Write a new key file (mode 600, refusing to overwrite) with a fresh random key first,
    then ``keys`` (the ones still to verify during a rotation)."""
    fresh = secrets.token_bytes(KEY_BYTES)
    ring = Keyring((fresh, *keys), str(path))
    lines = ["# ampshare site key(s): the first signs, every one verifies. Keep it secret."]
    lines += [f"{k.hex()}  # kid {_kid(k)}" for k in ring.keys]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write("\n".join(lines) + "\n")
    return ring
