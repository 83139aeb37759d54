"""The MQTT shells' plumbing against a real Mosquitto: sessions, last will, reconnect, auth,
broker URLs and site-meter payloads (firmware/link/mqtt.py)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from conftest import BROKER_USERS
from mosquitto import Mosquitto
from tcpproxy import TcpProxy

from firmware.config import ConfigError, load_station
from firmware.link.mqtt import (
    OFFLINE,
    Backoff,
    BrokerSettings,
    MeterPayloadError,
    MqttService,
    parse_meter_payload,
)

TIMEOUT_S = 10.0


async def until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    """Poll ``predicate`` every 10 ms until true, or fail after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Watcher:
    """A plain client recording the last payload of every topic under a filter."""

    def __init__(self, settings: BrokerSettings, topic_filter: str) -> None:
        self.client = settings.client("watcher", None)
        self.filter = topic_filter
        self.last: dict[str, bytes] = {}
        self.count: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        await self.client.__aenter__()
        await self.client.subscribe(self.filter, qos=1)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async for message in self.client.messages:
            payload = message.payload
            assert isinstance(payload, bytes)
            topic = message.topic.value
            self.last[topic] = payload
            self.count[topic] = self.count.get(topic, 0) + 1

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await self.client.__aexit__(None, None, None)


class Hello(MqttService):
    """The smallest session: publish "up" retained, then idle until stopped or cut."""

    name = "hello"

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.publish(self.status_topic, "up", qos=1, retain=True)
        idle: asyncio.Task[None] = asyncio.create_task(_idle(client))
        try:
            while not await self._wait(idle, 0.05):
                pass
        finally:
            idle.cancel()


async def _idle(client: aiomqtt.Client) -> None:
    async for _ in client.messages:
        pass


def run(coro: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro(), 30))


FAST = Backoff(0.05, 0.2)


def test_status_retained_and_clean_stop_leaves_offline(mosquitto: Mosquitto) -> None:
    settings = BrokerSettings(mosquitto.host, mosquitto.port)

    async def main() -> None:
        service = Hello(settings, "hello-1", "t/hello/status", backoff=FAST)
        await service.start()
        await service.wait_connected(TIMEOUT_S)
        async with Watcher(settings, "t/#") as w:  # joins late: sees the retained status
            await until(lambda: w.last.get("t/hello/status") == b"up", "retained up")
            await service.stop()
            await until(lambda: w.last.get("t/hello/status") == OFFLINE.encode(), "offline")
        assert service.outages == 0

    run(main)


def test_cut_connection_fires_the_will_and_the_service_comes_back(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        proxy = TcpProxy(mosquitto.host, mosquitto.port)
        await proxy.start()
        via_proxy = BrokerSettings("127.0.0.1", proxy.port)
        service = Hello(via_proxy, "hello-2", "t/hello/status", backoff=FAST)
        await service.start()
        await service.wait_connected(TIMEOUT_S)
        direct = BrokerSettings(mosquitto.host, mosquitto.port)
        async with Watcher(direct, "t/#") as w:
            await until(lambda: w.last.get("t/hello/status") == b"up", "up")
            await proxy.block()
            proxy.cut()  # no DISCONNECT reaches the broker: it publishes the will
            await until(lambda: w.last.get("t/hello/status") == OFFLINE.encode(), "the will")
            await until(lambda: service.outages == 1 and not service.connected, "outage seen")
            await asyncio.sleep(0.5)  # several failed attempts: still one outage, one log line
            assert service.outages == 1
            await proxy.unblock()
            await until(lambda: service.connected, "reconnected")
            await until(lambda: w.last.get("t/hello/status") == b"up", "up again")
        await service.stop()
        await proxy.close()

    with caplog.at_level(logging.INFO, logger="firmware.link.mqtt"):
        run(main)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert any("again after" in r.getMessage() for r in caplog.records)


def test_broker_restart_is_survived(mosquitto: Mosquitto) -> None:
    settings = BrokerSettings(mosquitto.host, mosquitto.port)

    async def main() -> None:
        service = Hello(settings, "hello-3", "t/hello/status", backoff=FAST)
        await service.start()
        await service.wait_connected(TIMEOUT_S)
        await asyncio.to_thread(mosquitto.stop)
        await until(lambda: not service.connected, "disconnect seen")
        await asyncio.to_thread(mosquitto.start)
        await until(lambda: service.connected, "reconnected")
        assert service.sessions == 2
        await service.stop()

    run(main)


def test_wrong_password_is_refused_and_reported(mosquitto_auth: Mosquitto) -> None:
    async def main() -> None:
        wrong = BrokerSettings(
            mosquitto_auth.host, mosquitto_auth.port, username="station", password="nope"
        )
        service = Hello(wrong, "hello-4", "t/hello/status", backoff=FAST)
        await service.start()
        await until(lambda: service.last_error is not None, "refusal")
        assert not service.connected
        assert "authori" in (service.last_error or "").lower()
        await service.stop()

        right = BrokerSettings(
            mosquitto_auth.host,
            mosquitto_auth.port,
            username="station",
            password=BROKER_USERS["station"],
        )
        service = Hello(right, "hello-5", "t/hello/status", backoff=FAST)
        await service.start()
        await service.wait_connected(TIMEOUT_S)
        await service.stop()

    run(main)


def test_broker_urls() -> None:
    assert BrokerSettings.from_url("mqtt://127.0.0.1:1884").port == 1884
    assert BrokerSettings.from_url("mqtt://broker").port == 1883
    tls = BrokerSettings.from_url("mqtts://broker.example")
    assert (tls.port, tls.tls) == (8883, True)
    for bad in ("http://x", "mqtt://", "mqtt://x:0", "mqtt://x:70000", "mqtt://u:p@x", "x:1883"):
        with pytest.raises(ValueError):
            BrokerSettings.from_url(bad)
    with pytest.raises(ValueError, match="mqtts"):
        BrokerSettings.from_url("mqtt://x", ca="/etc/ca.pem")


def test_site_meter_payloads() -> None:
    assert parse_meter_payload(b"12.5") == 12.5
    assert parse_meter_payload(b'{"v":1,"kw":7}') == 7.0
    assert parse_meter_payload(b"-3") == -3.0  # exporting: counted as no load by the caller
    for bad in (
        b"",
        b"abc",
        b"NaN",
        b"Infinity",
        b"true",
        b'"12"',
        b'{"v":2,"kw":1}',
        b'{"v":1,"kw":1,"x":0}',
        b'{"v":1,"kw":"1"}',
        b"1e9",
        b"[1]",
    ):
        with pytest.raises(MeterPayloadError):
            parse_meter_payload(bad)
    assert not math.isnan(parse_meter_payload(b"0"))


STATION = """\
station: st1
model: ct4000
jumper: true
groups:
  - {id: feed, breaker_a: 40}
ports:
  - {id: "1", group: feed}
  - {id: "2", group: feed}
link:
"""


@pytest.mark.parametrize(
    ("link", "line", "field", "message"),
    [
        ("  site: hq\n", 9, "link", "missing required key 'broker'"),
        ("  broker: http://x\n  site: hq\n", 10, "link.broker", "not a broker URL"),
        ("  broker: mqtt://x:0\n  site: hq\n", 10, "link.broker", "not a TCP port"),
        ("  broker: mqtt://x\n  site: a/b\n", 11, "link.site", "cannot be an MQTT topic level"),
        ("  broker: mqtt://x\n  site: hq\n  tls: {ca: pw}\n", 12, "link.tls", "mqtts://"),
        ("  broker: mqtts://x\n  site: hq\n  tls: {ca: nope}\n", 12, "link.tls.ca", "no such"),
        ("  broker: mqtts://x\n  site: hq\n  tls: {cert: pw}\n", 12, "link.tls", "both"),
        ("  broker: mqtt://x\n  site: hq\n  password: p\n", 12, "link.password", "username"),
        (
            "  broker: mqtt://x\n  site: hq\n  username: u\n  password: p\n  password_file: pw\n",
            14,
            "link.password_file",
            "not both",
        ),
        ("  broker: mqtt://x\n  site: hq\n  telemetry_period: 2m\n", 12, "link", "allowed: 0.1 s"),
        ("  broker: mqtt://x\n  site: hq\n  keepalive: 5\n", 12, "link.keepalive", "unknown key"),
        ("  broker: mqtt://x\n  site: hq\n", 9, "link.key_file", "insecure: true"),
        ("  broker: mqtt://x\n  site: hq\n  key_file: nope\n", 12, "link.key_file", "no such"),
        ("  broker: mqtt://x\n  site: hq\n  key_file: short\n", 12, "link.key_file", "too short"),
        ("  broker: mqtt://x\n  site: hq\n  key_file: pw\n", 12, "link.key_file", "hex"),
        (
            "  broker: mqtt://x\n  site: hq\n  key_file: good\n  insecure: true\n",
            13,
            "link.insecure",
            "contradict",
        ),
        ("  broker: mqtt://u:hunter2@x\n  site: hq\n", 10, "link.broker", "***@x"),
    ],
)
def test_link_config_refusals_name_file_line_field(
    tmp_path: Path, link: str, line: int, field: str, message: str
) -> None:
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "short").write_text("00ff\n")
    (tmp_path / "good").write_text("ab" * 32 + "\n")
    path = tmp_path / "station.yaml"
    path.write_text(STATION + link)
    with pytest.raises(ConfigError) as info:
        load_station(path)
    exc = info.value
    assert "hunter2" not in str(exc)  # a password in a URL is never repeated
    assert (exc.path, exc.line) == (str(path), line), str(exc)
    assert exc.field.startswith(field) and message in exc.message, str(exc)


def test_link_config_reads_the_password_file_and_tls_paths(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "ca.pem").write_text("not checked here\n")
    path = tmp_path / "station.yaml"
    path.write_text(
        STATION
        + "  broker: mqtts://broker.example\n  site: hq\n  username: st1\n"
        + "  password_file: pw\n  tls: {ca: ca.pem}\n  telemetry_period: 2s\n  insecure: true\n"
    )
    link = load_station(path).link
    assert link is not None
    assert (link.host, link.port, link.tls) == ("broker.example", 8883, True)
    assert (link.username, link.password) == ("st1", "secret")
    assert link.ca == str(tmp_path / "ca.pem") and link.telemetry_period_s == 2.0
    assert "secret" not in repr(link)
