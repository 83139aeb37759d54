"""The site key and the signed envelope (firmware.link.auth): what verifies, what is refused and
why, key files and their rotation, and `ampshare keygen`."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.link.auth import (
    KEY_BYTES,
    AuthError,
    KeyFileError,
    Keyring,
    generate_key_file,
    load_keyring,
    open_envelope,
    parse_keys,
)
from tools.cli import main as ampshare

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
BODY = b'{"v":1,"site":"hq","station":"st1","seq":0,"ts":1.0,"valid_s":30,"ports":{"st1.1":16.0}}'


def test_a_sealed_body_opens_to_the_exact_bytes() -> None:
    ring = Keyring((KEY_A,))
    sealed = ring.seal(BODY)
    assert json.loads(sealed)["kid"] == ring.kid
    assert ring.open(sealed) == BODY


@given(st.binary(max_size=600).map(lambda b: b.hex().encode()))
def test_any_body_round_trips(body: bytes) -> None:
    ring = Keyring((KEY_A,))
    assert ring.open(ring.seal(body)) == body


def test_refusals_say_why() -> None:
    ring = Keyring((KEY_A,))
    other = Keyring((KEY_B,))
    sealed = json.loads(ring.seal(BODY))
    tampered = dict(sealed, body=sealed["body"].replace("16.0", "32.0"))
    wrong_sig = dict(sealed, sig="0" * 64)
    cases = {
        BODY: "unsigned",  # a bare message where a key is configured
        other.seal(BODY): "signature",  # another site's key: unknown kid
        json.dumps(tampered).encode(): "signature",
        json.dumps(wrong_sig).encode(): "signature",
        json.dumps(dict(sealed, sig="xyz")).encode(): "signature",
        json.dumps(dict(sealed, extra=1)).encode(): "signature",
        json.dumps(dict(sealed, body=5)).encode(): "signature",
        b'{"kid": broken': "signature",
    }
    for payload, reason in cases.items():
        with pytest.raises(AuthError) as info:
            ring.open(payload)
        assert info.value.reason == reason, (payload, info.value)


@given(st.binary(max_size=400))
def test_garbage_never_raises_anything_but_auth_error(payload: bytes) -> None:
    ring = Keyring((KEY_A,))
    with contextlib.suppress(AuthError):
        ring.open(payload)
    with contextlib.suppress(AuthError):
        open_envelope(b'{"kid":' + payload, None)


def test_without_a_key_an_envelope_is_unwrapped_and_a_bare_message_passes() -> None:
    ring = Keyring((KEY_A,))
    assert open_envelope(ring.seal(BODY), None) == BODY
    assert open_envelope(BODY, None) == BODY


def test_rotation_the_first_key_signs_every_key_verifies() -> None:
    old, new = Keyring((KEY_A,)), Keyring((KEY_B, KEY_A))
    assert new.kid == Keyring((KEY_B,)).kid
    assert new.open(old.seal(BODY)) == BODY  # stations with both keys take the old signer
    with pytest.raises(AuthError):
        old.open(new.seal(BODY))  # a station not yet given the new key refuses it


def test_key_files(tmp_path: Path) -> None:
    path = tmp_path / "site.key"
    ring = generate_key_file(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_keyring(path).keys == ring.keys and len(ring.keys[0]) == KEY_BYTES
    with pytest.raises(FileExistsError):
        generate_key_file(path)  # never overwritten
    assert parse_keys(f"# comment\n{KEY_A.hex()}  # kid\n\n{KEY_B.hex()}\n").keys == (KEY_A, KEY_B)
    for text, message in (
        ("", "no key"),
        ("zz" * 32, "hex"),
        ("ab" * 16, "too short"),
    ):
        with pytest.raises(KeyFileError, match=message):
            parse_keys(text, "k")
    path.chmod(0o666)
    with pytest.raises(KeyFileError, match="others may write"):
        load_keyring(path)
    with pytest.raises(KeyFileError, match="No such file"):
        load_keyring(tmp_path / "missing.key")


def test_keygen_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "old.key"
    new = tmp_path / "new.key"
    assert ampshare(["keygen", str(old)]) == 0
    assert ampshare(["keygen", str(old)]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert ampshare(["keygen", str(new), "--keep", str(old)]) == 0
    out = capsys.readouterr().out
    assert load_keyring(new).keys[1:] == load_keyring(old).keys
    assert f"also verifies {load_keyring(old).kid}" in out
