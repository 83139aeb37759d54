"""A station's link over a real Mosquitto: hostile limit messages, broker authentication, and a
station running as its own ``ampshare run`` process beside in-process ones."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from conftest import BROKER_TLS, BROKER_USERS, TLS_DIR
from mosquitto import Mosquitto
from sitelink import SiteRig, ev

from firmware.config import load_site_config
from firmware.link import topics
from firmware.link.auth import open_envelope
from firmware.link.mqtt import BrokerSettings

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "link"
SITE = load_site_config(FIXTURES / "site-3x2.yaml")


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(main(), 60))


def limits(**fields: Any) -> bytes:
    doc: dict[str, Any] = {
        "v": 1,
        "site": "t3",
        "station": "st1",
        "seq": 0,
        "ts": 1000.0,
        "valid_s": 60,
        "ports": {"st1.1": 10.0, "st1.2": 10.0},
    }
    doc.update(fields)
    return json.dumps(doc).encode()


def test_bad_limit_messages_are_rejected_counted_and_never_applied(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    broker = BrokerSettings(mosquitto.host, mosquitto.port)
    topic = topics.station_limits("t3", "st1")

    async def main() -> None:
        rig = SiteRig(SITE, broker, tmp_path, keyed=False)  # no coordinator: the test speaks
        try:
            rs = await rig.add_station("st1", [ev(1, 1), ev(2, 1)])
            link = rs.link
            await rig.until(lambda: rs.mqtt.connected, "station connected")
            async with broker.client("rogue", None) as rogue:
                # Valid, but asks for 80 A on a 30 A port and 5 A (under the 8 A minimum):
                # applied as caps, clamped to what the station itself allows.
                await rogue.publish(topic, limits(ports={"st1.1": 80, "st1.2": 5}), qos=1)
                await rig.until(lambda: link.accepted == 1, "the valid message")
                await rig.until(
                    lambda: rs.offers() == {"st1.1": 30.0, "st1.2": 0.0}, "30 A and a pause"
                )
                bad = [
                    b"{not json",
                    b"\xff\xfe",
                    b"[]",
                    limits(v=2),
                    limits(v="1"),
                    limits(ports={"st1.1": 10, "st1.2": 10, "st9.1": 10}),
                    limits(ports={"st1.1": 10}),
                    limits(ports={"st1.1": -1, "st1.2": 10}),
                    limits(ports={"st1.1": 10, "st1.2": 10}).replace(b"10.0,", b"NaN,", 1),
                    limits(valid_s=0),
                    limits(ts=999.0),  # older than the applied one: a replay
                    limits(ts=1000.0),  # the same one again
                    limits(ts=1e12),  # far ahead of the coordinator's clock: forged
                    limits(valid_s=61, ts=1001.0),  # longer than a station accepts
                    limits(station="st2", ts=2000.0),
                    limits(site="elsewhere", ts=2000.0),
                    limits(extra=1, ts=2000.0),
                ]
                for payload in bad:
                    await rogue.publish(topic, payload, qos=1)
                await rig.until(lambda: rs.mqtt.received == 1 + len(bad), "every message seen")
                assert sum(link.rejected.values()) == len(bad), link.rejected
                reasons = (
                    "json",
                    "schema",
                    "version",
                    "port",
                    "value",
                    "replay",
                    "station",
                    "future",
                )
                for reason in reasons:
                    assert link.rejected[reason] >= 1, (reason, link.rejected)

                # A flood: 1000 messages as fast as the client sends them. The allowance is
                # counted in station seconds, which run SPEED times faster than the wall's: on
                # a loaded machine the default rate refills as fast as a slowed client sends.
                # A lower rate makes "faster than allowed" true at any machine speed.
                link.flood_rate = 0.5
                for i in range(1000):
                    await rogue.publish(topic, limits(ts=2000.0 + i, ports={"st1.1": 6.0}))
                total = 1 + len(bad) + 1000
                await rig.until(lambda: rs.mqtt.received == total, "the flood seen", 20.0)
                assert link.accepted == 1
                assert sum(link.rejected.values()) == total - 1, link.rejected
                assert link.rejected["flood"] > 0
                # Nothing of the flood applied (it asked 6 A): the first limits still hold, or,
                # on a machine slow enough that they outlived their validity meanwhile, the
                # station's fallback does.
                assert rs.offers() in ({"st1.1": 30.0, "st1.2": 0.0}, {"st1.1": 8.0, "st1.2": 8.0})

                # The link still works: a valid, newer message is applied.
                await rig.hold(5)  # the flood limiter refills (2.5 messages' worth)
                await rogue.publish(topic, limits(ts=1001.0, ports={"st1.1": 12, "st1.2": 12}))
                await rig.until(lambda: rs.offers() == {"st1.1": 12.0, "st1.2": 12.0}, "12 A")
        finally:
            await rig.close()
        assert not rig.violations, rig.violations[:5]

    run(main)


def test_broker_password_refused_and_accepted(mosquitto_auth: Mosquitto, tmp_path: Path) -> None:
    host, port = mosquitto_auth.host, mosquitto_auth.port
    station_pw = BROKER_USERS["station"]
    coordinator = BrokerSettings(
        host, port, username="coordinator", password=BROKER_USERS["coordinator"]
    )

    async def main() -> None:
        rig = SiteRig(SITE, coordinator, tmp_path)
        try:
            await rig.start_coordinator()
            wrong = await rig.add_station(
                "st1", [ev(1, 1), ev(2, 1)], username="station", password="wrong"
            )
            right = await rig.add_station(
                "st2", [ev(1, 1), ev(2, 1)], username="station", password=station_pw
            )
            await rig.until(lambda: right.status() == "sharing", "the right password shares")
            await rig.until(lambda: wrong.mqtt.last_error is not None, "the refusal")
            assert "not authori" in (wrong.mqtt.last_error or "").lower(), wrong.mqtt.last_error
            assert not wrong.mqtt.connected and wrong.mqtt.outages == 1
            await rig.hold(30)  # well past its rise delay: at its fallback, no higher
            assert wrong.status() == "fallback"
            assert wrong.offers() == {"st1.1": 8.0, "st1.2": 8.0}
            assert right.status() == "sharing"
        finally:
            await rig.close()
        assert not rig.violations, rig.violations[:5]

    run(main)


def test_a_station_process_shares_with_in_process_stations(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    broker = BrokerSettings(mosquitto.host, mosquitto.port)

    async def main() -> None:
        rig = SiteRig(SITE, broker, tmp_path)
        telemetry: dict[str, Any] = {}
        status: dict[str, bytes] = {}

        async def watch() -> None:
            async with broker.client("watcher", None) as client:
                await client.subscribe(topics.station_telemetry("t3", "st3"))
                await client.subscribe(topics.station_status("t3", "st3"), qos=1)
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    if message.topic.value.endswith("/telemetry"):
                        body = open_envelope(message.payload, rig.keyring)
                        telemetry.update(json.loads(body))
                        for pid, port in telemetry["ports"].items():
                            # Its offers count in the circuit check (as offered, not effective).
                            rig.effective[pid] = port["offered_a"]
                    else:
                        status["st3"] = message.payload

        watcher = asyncio.create_task(watch())
        path = rig.station_file("st3", [ev(1, 1)])
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        command = [
            sys.executable,
            "-m",
            "tools.cli",
            "run",
            "--config",
            str(path),
            "--speed",
            str(rig.speed),
            "--no-live",
        ]
        proc = await asyncio.create_subprocess_exec(
            *command,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            coordinator = await rig.start_coordinator()
            await rig.add_station("st1", [ev(1, 1), ev(2, 2)])
            await rig.add_station("st2", [ev(1, 3), ev(2, 4)])

            def process_sharing() -> bool:
                port = telemetry.get("ports", {}).get("st3.1", {})
                offers = [*rig.offers().values(), port.get("offered_a", 0.0)]
                return (
                    telemetry.get("status") == "sharing"
                    and all(rs.status() == "sharing" for rs in rig.stations.values())
                    and sum(offers) > 59.0
                    and 12.0 <= port.get("offered_a", 0.0) <= 13.0
                )

            await rig.until(process_sharing, "the process sharing the circuit", 20.0)

            # Killed outright: the broker publishes its last will, the coordinator reserves
            # its fallback levels and the others stay within the circuit. What a dead station
            # may do by itself (if only its link died): keep its last caps until they expire
            # (<= valid_s after the kill), then min(last cap, fallback), and rise to its
            # fallback rise_delay_s after expiry, i.e. at the earliest one publish period
            # earlier than valid_s + rise_delay_s after the kill. The check counts that.
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            await rig.until(lambda: status.get("st3") == b"offline", "the last will")
            await rig.until(
                lambda: coordinator.core.station_status(rig.clock())["st3"] == "offline",
                "st3 reserved",
            )
            st = rig.settings
            last = {pid: rig.effective[pid] for pid in ("st3.1", "st3.2")}
            await rig.hold(st.valid_s)
            rig.effective.update({pid: min(a, 8.0) for pid, a in last.items()})
            await rig.hold(st.rise_delay_s - 2 * st.publish_period_s)
            rig.effective.update({"st3.1": 8.0, "st3.2": 8.0})
            await rig.hold(10)

            # Restarted (systemd's Restart=on-failure): it boots in fallback from 0, and
            # shares again once the coordinator has heard it and its limits arrive.
            telemetry.clear()
            proc = await asyncio.create_subprocess_exec(
                *command,
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            await rig.until(process_sharing, "the restarted process sharing again", 30.0)
            assert coordinator.core.station_status(rig.clock())["st3"] == "sharing"
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            watcher.cancel()
            await rig.close()
        assert not rig.violations, rig.violations[:5]

    run(main)


def test_tls_broker_verified_with_the_configured_ca(
    mosquitto_tls: Mosquitto, tmp_path: Path
) -> None:
    ca, other_ca = BROKER_TLS[0], TLS_DIR / "other-ca.pem"
    coordinator = BrokerSettings(mosquitto_tls.host, mosquitto_tls.port, tls=True, ca=str(ca))

    async def main() -> None:
        rig = SiteRig(SITE, coordinator, tmp_path)
        try:
            await rig.start_coordinator()
            trusted = await rig.add_station("st1", [ev(1, 1)], tls_ca=str(ca))
            wrong = await rig.add_station("st2", [ev(1, 1)], tls_ca=str(other_ca))
            await rig.until(lambda: trusted.status() == "sharing", "sharing over TLS")
            await rig.until(lambda: wrong.mqtt.last_error is not None, "the refusal")
            assert "certificate verify failed" in (wrong.mqtt.last_error or ""), (
                wrong.mqtt.last_error
            )
            assert not wrong.mqtt.connected and wrong.status() == "fallback"
        finally:
            await rig.close()
        assert not rig.violations, rig.violations[:5]

    run(main)
