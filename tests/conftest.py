"""Shared fixtures: a real Mosquitto broker per test (tests/mosquitto.py), never skipped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mosquitto import Mosquitto, MosquittoMissing

# The users of the password-protected broker (test_mqtt_* auth tests).
BROKER_USERS = {"station": "station-secret", "coordinator": "coordinator-secret"}


TLS_DIR = Path(__file__).parent / "fixtures" / "link" / "tls"
# The broker's TLS material (tests/fixtures/link/tls/README.md): CA, certificate, key.
BROKER_TLS = (TLS_DIR / "ca.pem", TLS_DIR / "broker.pem", TLS_DIR / "broker.key")


@pytest.fixture(autouse=True)
def _state_directory(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test (and every `ampshare run` it starts) keeps its lockouts and GFCI counts in
    a fresh state directory (systemd's $STATE_DIRECTORY), never in the user's own."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path_factory.mktemp("state")))


def _broker(
    workdir: Path,
    users: dict[str, str] | None = None,
    tls: tuple[Path, Path, Path] | None = None,
    shipped: Path | None = None,
) -> Iterator[Mosquitto]:
    try:
        broker = Mosquitto(workdir, users, tls, shipped=shipped)
        broker.start()
    except MosquittoMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """An anonymous broker on a free loopback port; ``.restart()`` keeps the port."""
    yield from _broker(tmp_path / "mosquitto")


@pytest.fixture
def mosquitto_auth(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker that only lets in BROKER_USERS (password file made by mosquitto_passwd)."""
    yield from _broker(tmp_path / "mosquitto-auth", BROKER_USERS)


@pytest.fixture
def mosquitto_tls(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker that speaks TLS only, with a certificate for 127.0.0.1 signed by BROKER_TLS[0]."""
    yield from _broker(tmp_path / "mosquitto-tls", tls=BROKER_TLS)


@pytest.fixture
def mosquitto_shipped(tmp_path: Path) -> Iterator[Mosquitto]:
    """Mosquitto with the shipped demo configuration (deploy/mosquitto/demo.conf): its
    password file and ACL, no anonymous clients, on a free loopback port."""
    root = Path(__file__).resolve().parent.parent
    yield from _broker(tmp_path / "shipped", shipped=root / "deploy" / "mosquitto" / "demo.conf")
