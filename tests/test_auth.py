"""Who may charge (firmware/auth.py, firmware/config/auth.py): every path of the authorizer,
the auth: block's refusals, and a station that keeps PWM off until a tag is accepted."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from firmware.auth import AuthEvent, AuthMode, Authorizer, AuthSettings
from firmware.config import ConfigError, load_station

PORTS = ("1", "2")
ALICE, BOB, EVE = "0A00B1C2D3", "0A00FFEE01", "0BADBADBAD"


def tags(**kw: object) -> Authorizer:
    settings = AuthSettings(mode=AuthMode.TAGS, tags=frozenset({ALICE, BOB}), **kw)  # type: ignore[arg-type]
    return Authorizer(settings, PORTS)


def kinds(events: list[AuthEvent]) -> list[tuple[str, str | None, str | None]]:
    return [(e.kind, e.tag, e.port) for e in events]


def test_free_mode_authorizes_every_plugged_in_port_without_a_tag() -> None:
    auth = Authorizer(AuthSettings(), PORTS)
    assert auth.step(0.0, {"1": True, "2": False}) == []
    assert auth.allowed("1") and not auth.allowed("2")
    assert auth.tags() == {"1": None}
    auth.step(1.0, {"1": False, "2": False})
    assert not auth.allowed("1")


def test_a_plugged_in_port_waits_for_an_allowed_tag() -> None:
    auth = tags()
    auth.step(0.0, {"1": True})
    assert not auth.allowed("1")
    assert kinds(auth.step(5.0, {"1": True}, [ALICE.lower()])) == [("accepted", ALICE, "1")]
    assert auth.allowed("1") and auth.tags() == {"1": ALICE}


def test_an_unknown_tag_is_refused_and_named() -> None:
    auth = tags()
    auth.step(0.0, {"1": True})
    assert kinds(auth.step(1.0, {"1": True}, [EVE])) == [("refused", EVE, None)]
    assert not auth.allowed("1")


def test_the_port_waiting_longest_gets_the_tag() -> None:
    auth = tags()
    auth.step(0.0, {"2": True})
    auth.step(3.0, {"1": True, "2": True})
    assert kinds(auth.step(4.0, {"1": True, "2": True}, [ALICE])) == [("accepted", ALICE, "2")]
    assert kinds(auth.step(5.0, {"1": True, "2": True}, [BOB])) == [("accepted", BOB, "1")]


def test_the_same_tag_again_stops_its_session_until_unplugged() -> None:
    auth = tags()
    auth.step(0.0, {"1": True}, [ALICE])
    assert auth.allowed("1")
    assert kinds(auth.step(60.0, {"1": True}, [ALICE])) == [("stop", ALICE, "1")]
    assert not auth.allowed("1")
    # Still plugged in: nothing restarts it, not even the same tag (it is held instead).
    auth.step(61.0, {"1": True}, [ALICE])
    assert not auth.allowed("1")
    auth.step(62.0, {"1": False})
    auth.step(63.0, {"1": True})  # the held tag authorizes the new plug-in
    assert auth.allowed("1") and auth.tags() == {"1": ALICE}


def test_a_tag_before_plug_in_holds_for_the_next_plug_in_on_any_port() -> None:
    auth = tags()
    assert kinds(auth.step(0.0, {}, [BOB])) == [("accepted", BOB, None)]
    assert kinds(auth.step(10.0, {"2": True})) == [("accepted", BOB, "2")]
    assert auth.tags() == {"2": BOB}


def test_a_held_tag_expires_after_the_timeout() -> None:
    auth = tags(timeout_s=30.0)
    auth.step(0.0, {}, [BOB])
    assert auth.next_deadline() == 30.0
    assert kinds(auth.step(30.0, {})) == [("timeout", BOB, None)]
    auth.step(31.0, {"1": True})
    assert not auth.allowed("1")


def test_without_tag_before_plug_in_a_tag_with_no_port_waiting_is_refused() -> None:
    auth = tags(tag_before_plugin=False)
    assert kinds(auth.step(0.0, {}, [BOB])) == [("refused", BOB, None)]


def test_a_vehicle_that_waits_too_long_stops_waiting_until_replugged() -> None:
    auth = tags(timeout_s=60.0)
    auth.step(0.0, {"1": True})
    assert auth.next_deadline() == 60.0
    assert kinds(auth.step(60.0, {"1": True})) == [("timeout", None, "1")]
    # A tag now is held for the next plug-in, not given to the port that timed out.
    assert kinds(auth.step(70.0, {"1": True}, [ALICE])) == [("accepted", ALICE, None)]
    assert not auth.allowed("1")
    auth.step(71.0, {"1": False})
    auth.step(72.0, {"1": True})
    assert auth.allowed("1")


def test_a_reloaded_list_refuses_a_removed_tag_but_keeps_running_sessions() -> None:
    auth = tags()
    auth.step(0.0, {"1": True}, [ALICE])
    auth.reload([BOB])
    assert auth.allowed("1")
    auth.step(1.0, {"1": True, "2": True})
    assert kinds(auth.step(2.0, {"1": True, "2": True}, ["0a00b1c2d3"])) == [("stop", ALICE, "1")]


STATION = """\
station: st
model: ct4000
jumper: true
groups: [{id: feed, breaker_a: 40}]
ports: [{id: "1", group: feed}, {id: "2", group: feed}]
"""


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ('auth: {mode: tags, reader: "sim://"}', "mode: tags needs tags: or tags_file:"),
        ("auth: {mode: tags, tags: [0A00B1C2D3]}", "mode: tags needs reader:"),
        ("auth: {mode: badge}", "'badge' is not a mode"),
        ('auth: {mode: tags, tags: [XYZ], reader: "sim://"}', "auth.tags[0]: not a tag"),
        ("auth: {tags: [0A00B1C2D3]}", "tags are for mode: tags"),
        (
            'auth: {mode: tags, tags: [0A00B1C2D3], timeout: 0s, reader: "sim://"}',
            "must be between 1s and 1h",
        ),
        ('auth: {mode: tags, tags_file: nope.txt, reader: "sim://"}', "no such readable file"),
        ("auth: {mode: tags, tags: [0A00B1C2D3], timout: 5s}", "did you mean 'timeout'"),
    ],
)
def test_bad_auth_blocks_are_refused_with_file_line(
    tmp_path: Path, block: str, message: str
) -> None:
    path = tmp_path / "st.yaml"
    path.write_text(STATION + block + "\n")
    with pytest.raises(ConfigError) as caught:
        load_station(path)
    assert f"{path}:6" in str(caught.value) and message in str(caught.value), str(caught.value)


def test_a_tags_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "tags.txt").write_text(f"# staff\n{ALICE.lower()}\n\n{BOB}  # the van\n")
    path = tmp_path / "st.yaml"
    path.write_text(
        STATION + "auth: {mode: tags, tags_file: tags.txt, timeout: 2m, reader: 'sim://'}\n"
    )
    config = load_station(path)
    assert config.auth.settings.tags == {ALICE, BOB}
    assert config.auth.settings.timeout_s == 120.0
    (tmp_path / "tags.txt").write_text("0A00B1C2D3\nnot-a-tag\n")
    with pytest.raises(ConfigError, match=r"tags\.txt:2: 'not-a-tag' is not a tag"):
        load_station(path)


TAGS_STATION = (
    STATION
    + f"""auth: {{mode: tags, tags: [{ALICE}], timeout: 2m, reader: "sim://"}}
sim:
  evs: [{{port: 1, arrive: 10s, max_a: 32}}, {{port: 2, arrive: 20s, max_a: 32}}]
"""
)


def test_a_station_offers_nothing_until_an_allowed_tag_and_stops_on_the_same_tag(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the real station loop on the simulated bus, with the simulated reader."""
    from firmware.app import build_station
    from firmware.runner import VirtualRunner
    from hal.rfid.sim import SimTagReader

    caplog.set_level(logging.INFO, logger="ampshare.auth")
    path = tmp_path / "st.yaml"
    path.write_text(TAGS_STATION)
    station = build_station(load_station(path))
    reader = station.tag_reader
    assert isinstance(reader, SimTagReader)
    runner = VirtualRunner(station)

    def port(pid: str) -> tuple[str, float]:
        snap = station.last
        assert snap is not None
        view = next(v for v in snap.ports if v.id == pid)
        return view.mode.value, view.offer_a

    runner.run(60.0)
    # Both cars plugged in a while ago: PWM off (B1), no offer, contactors open.
    assert port("1") == ("B1", 0.0) and port("2") == ("B1", 0.0)
    runner.at(61.0, lambda: reader.present(EVE))
    runner.at(62.0, lambda: reader.present(ALICE))  # port 1 has waited longest
    runner.run(120.0)
    assert port("1") == ("C2", 30.0) and port("2") == ("B1", 0.0)
    assert "tag 0BADBADBAD refused: not on the allow-list" in caplog.text
    assert "tag 0A00B1C2D3 accepted: port 1" in caplog.text
    runner.at(150.0, lambda: reader.present(ALICE))  # the same tag again: a Local stop
    runner.run(200.0)
    assert port("1") == ("B1", 0.0)
    assert "tag 0A00B1C2D3 presented again: port 1 stops (Local)" in caplog.text
    # Port 2 (plugged in at 20 s) waited 2 minutes without a tag: it stopped waiting, and said so.
    assert "port 2: no tag within the authorization timeout" in caplog.text
    assert port("2") == ("B1", 0.0)


def test_sighup_reloads_the_tags_file_and_a_bad_file_keeps_the_list(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    tags_file = tmp_path / "tags.txt"
    tags_file.write_text(f"{ALICE}\n")
    path = tmp_path / "st.yaml"
    path.write_text(
        STATION + f'auth: {{mode: tags, tags: [{BOB}], tags_file: tags.txt, reader: "sim://"}}\n'
    )
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "run", "--config", str(path)],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    try:
        lines: list[str] = []

        def wait_for(text: str) -> None:
            while not any(text in line for line in lines):
                line = proc.stderr.readline()  # type: ignore[union-attr]
                assert line, "".join(lines)
                lines.append(line)

        wait_for("port 1: A")  # the loop runs
        tags_file.write_text(f"{ALICE}\n0A00000042\n")
        proc.send_signal(signal.SIGHUP)
        wait_for("tags reloaded: 3 on the allow-list")  # BOB inline + two in the file
        tags_file.write_text("not a tag\n")
        proc.send_signal(signal.SIGHUP)
        wait_for("tags not reloaded, the list in force stays")
        assert "tags.txt:1" in lines[-1]
        tags_file.write_text("# emptied by a half-finished copy\n")
        proc.send_signal(signal.SIGHUP)
        wait_for("no tag in it (a half-written file?)")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_the_tags_scenario_charges_only_authorized_cars_and_stops_on_the_same_tag() -> None:
    from tools.scenario import load_scenario
    from tools.simulate import simulate

    root = Path(__file__).resolve().parent.parent
    scenario = load_scenario(root / "configs" / "scenarios" / "tags.yaml")
    early = simulate(scenario, duration_s=5 * 60.0).summary
    # Car 2's own tag is unknown: nothing for it before the owner's tag at 6 min.
    assert early["energy_kwh"]["2"] == 0.0 and early["energy_kwh"]["1"] > 0.0
    at_1h = simulate(scenario, duration_s=3600.0).summary
    full = simulate(scenario).summary
    assert full["energy_kwh"]["2"] > 0.0
    # Port 1's session stopped at 1 h (the same tag again): at most the 5 s of its ramp down.
    assert full["energy_kwh"]["1"] - at_1h["energy_kwh"]["1"] < 0.05


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("id_tag: 0A00B1C2D3}", "id_tag: XYZ}"), "not a tag id"),
        (("tag: 0A00FFEE01}", "tag: nope}"), "not a tag id"),
        (("../tags-station.yaml", "../ct4000-jumper.yaml"), "auth mode: free"),
    ],
)
def test_scenario_tags_are_checked(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    from tools.scenario import load_scenario

    root = Path(__file__).resolve().parent.parent
    text = (root / "configs" / "scenarios" / "tags.yaml").read_text().replace(*edit)
    text = text.replace("../", f"{root}/configs/")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_scenario(path)


def test_the_run_summary_lists_its_sessions_with_tags_and_reasons() -> None:
    from tools.scenario import load_scenario
    from tools.simulate import simulate

    root = Path(__file__).resolve().parent.parent
    summary = simulate(load_scenario(root / "configs" / "scenarios" / "tags.yaml")).summary
    sessions = summary["sessions"]
    assert [(x["port"], x["id_tag"], x["stop_reason"]) for x in sessions] == [
        ("1", ALICE, "Local"),
        ("2", BOB, None),  # still charging when the run ends
    ]
    assert sessions[0]["start_s"] == 60.0 and sessions[0]["stop_s"] == pytest.approx(3600.0, abs=1)
    # The records' energy is the simulated meters': the run's per-port totals; an open
    # session's up to its last checkpoint, at most 60 s (0.11 kWh at 32 A) behind.
    closed, still = sessions
    assert closed["energy_kwh"] == pytest.approx(summary["energy_kwh"]["1"], abs=0.01)
    assert 0.0 <= summary["energy_kwh"]["2"] - still["energy_kwh"] <= 0.12


def test_sighup_never_ends_a_station_without_a_tags_file() -> None:
    """systemd's reload, or a stray SIGHUP: the station goes on (SIGHUP's default would end it
    without leaving the ports safe or closing the sessions)."""
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "run",
            "--config",
            str(root / "configs" / "demo-jumper.yaml"),
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    seen = ""
    while "port 1: A" not in seen:
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    proc.send_signal(signal.SIGHUP)
    while "nothing to reload" not in seen:
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert err.strip().endswith("every port left safe (PWM off, contactor open)")


def test_a_waiting_port_is_not_connected_for_the_coordinator_and_a_gfci_trip_keeps_the_tag(
    tmp_path: Path,
) -> None:
    from firmware.app import build_station
    from firmware.link.station_link import StationLink
    from firmware.runner import VirtualRunner
    from hal.rfid.sim import SimTagReader
    from hal.sim.bus import SimBus

    path = tmp_path / "st.yaml"
    path.write_text(TAGS_STATION)
    station = build_station(load_station(path))
    reader = station.tag_reader
    bus = station.hardware
    assert isinstance(reader, SimTagReader) and isinstance(bus, SimBus)
    runner = VirtualRunner(station)
    runner.at(30.0, lambda: reader.present(ALICE))
    runner.run(40.0)
    snap = station.last
    assert snap is not None
    views = {v.id: v for v in snap.ports}
    assert views["1"].authorized and not views["2"].authorized
    # What the site's coordinator hears: port 2 (plugged in, no tag) is not there.
    link = StationLink("hq", "st", ["st.1", "st.2"], local_ids={"st.1": "1", "st.2": "2"})
    telemetry = link._ports(40.0, snap)
    assert telemetry["st.1"].connected and not telemetry["st.2"].connected
    # A ground fault on port 1 and its re-arm: the same plug-in, the same tag, charging again.
    runner.at(60.0, lambda: bus.inject("1", "gfci"))
    runner.at(70.0, lambda: bus.inject("1", "gfci", active=False))
    runner.run(60.0 + 17 * 60.0)
    view = next(v for v in station.last.ports if v.id == "1")  # type: ignore[union-attr]
    assert view.mode.value == "C2" and view.offer_a > 0.0 and view.authorized


def test_a_remote_stop_ends_the_offer_and_the_session_until_unplugged(tmp_path: Path) -> None:
    """In free mode too: a central system's stop de-authorizes the port, its offer goes to 0,
    and the session record ends with OCPP's reason Remote; nothing restarts it while the car
    stays plugged in."""
    import asyncio

    from firmware.app import build_station
    from firmware.runner import VirtualRunner
    from firmware.sessions.live import StationSessions

    path = tmp_path / "st.yaml"
    path.write_text(STATION + "sim:\n  evs: [{port: 1, arrive: 1s, max_a: 32}]\n")
    station = build_station(load_station(path))
    sessions = StationSessions(station, "st", {"1": 208.0, "2": 208.0}, tmp_path)
    asyncio.run(sessions.start())
    runner = VirtualRunner(station)
    runner.run(120.0, sessions.ticked)
    runner.at(121.0, lambda: station.stop_session("1"))
    last = runner.run(600.0, sessions.ticked)
    view = next(v for v in last.ports if v.id == "1")
    assert view.offer_a == 0.0 and not view.authorized and not view.contactor
    asyncio.run(sessions.stop())
    (record,) = sessions.store.sessions()
    assert record.stop_reason is not None and record.stop_reason.value == "Remote"
