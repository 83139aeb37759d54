"""The conventions of a Unix tool that a station's installer relies on, as a user meets them
(a subprocess): one log format with -v/-q/--log-level, journald's own format under systemd, a
closed pipe that ends a command quietly, a taken address that is named (exit 2), and
``run --broker`` on another broker than the config's."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR) +[\w.-]+: ")


def _ampshare(
    *args: str, env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "tools.cli", *args],
        capture_output="stdout" not in kwargs and "stderr" not in kwargs,
        text=True,
        check=False,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


RUN = ("run", "--config", str(CONFIGS / "demo-jumper.yaml"), "--for", "30s", "--speed", "30")


def test_every_record_has_the_one_format_and_info_is_the_default() -> None:
    proc = _ampshare(*RUN)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(RECORD.match(line) for line in lines), proc.stderr
    assert any(" INFO    ampshare.station: " in line for line in lines)


def test_quiet_keeps_warnings_only_and_verbose_adds_debug() -> None:
    quiet = _ampshare(*RUN, "-q")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    error_only = _ampshare(*RUN, "--log-level", "ERROR")
    assert error_only.returncode == 0 and error_only.stderr == ""
    verbose = _ampshare(*RUN, "-v")
    assert verbose.returncode == 0
    assert " DEBUG   " in verbose.stderr, verbose.stderr[-2000:]
    bad = _ampshare(*RUN, "--log-level", "chatty")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_under_journald_records_carry_a_syslog_priority_and_no_time_stamp(tmp_path: Path) -> None:
    """systemd.exec(5): $JOURNAL_STREAM names the journal's stream by device and inode; here a
    file stands in for it, identified the same way."""
    log = tmp_path / "journal"
    with log.open("w") as stream:
        st = os.fstat(stream.fileno())
        proc = _ampshare(
            *RUN,
            env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
            stdout=subprocess.PIPE,
            stderr=stream,
        )
    assert proc.returncode == 0
    lines = log.read_text().splitlines()
    assert lines and all(re.match(r"^<[2-7]>[\w.-]+: ", line) for line in lines), lines[:5]
    assert any(line.startswith("<6>ampshare.station: ") and "port 1: C2" in line for line in lines)
    # Another stream under the same variable (a redirect by hand) keeps the human format.
    other = _ampshare(*RUN, env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert all(RECORD.match(line) for line in other.stderr.splitlines())


def test_a_closed_stdout_ends_the_command_quietly(tmp_path: Path) -> None:
    """``ampshare allocate ... | head -c 10``: the reader goes away; no traceback."""
    site = CONFIGS / "sites" / "panel-400a-208v.yaml"
    state = tmp_path / "state.yaml"
    state.write_text("ports:\n  st1.1: {since: 1}\n  st2.1: {since: 2}\n")
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before the command writes
    with os.fdopen(writer, "w") as out:
        proc = _ampshare("allocate", str(site), str(state), stdout=out, stderr=subprocess.PIPE)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 141, proc.stderr  # 128 + SIGPIPE, as a shell reports it


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_meter_serve_on_a_taken_port_names_it_and_exits_2(taken_port: int) -> None:
    proc = _ampshare("meter", "serve", "--model", "sdm630", "--port", str(taken_port))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"127.0.0.1:{taken_port} is taken" in proc.stderr, proc.stderr


def test_run_whose_meter_server_port_is_taken_names_it_and_exits_2(
    taken_port: int, tmp_path: Path
) -> None:
    text = (CONFIGS / "ct4000-jumper-modbus.yaml").read_text().replace("15020", str(taken_port))
    config = tmp_path / "modbus.yaml"
    config.write_text(text)
    proc = _ampshare("run", "--config", str(config), "--for", "5s")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"127.0.0.1:{taken_port} is taken" in proc.stderr, proc.stderr


def test_run_broker_overrides_the_configs_broker(taken_port: int) -> None:
    """The shipped config keeps its broker; ``--broker`` points this run elsewhere (here at a
    port where no broker answers: the station says where it connects, then falls back)."""
    st1 = CONFIGS / "site-demo" / "st1.yaml"
    assert "broker: mqtt://127.0.0.1:1883" in st1.read_text()
    url = f"mqtt://127.0.0.1:{taken_port}"
    proc = _ampshare("run", "--config", str(st1), "--broker", url, "--for", "3s", "--speed", "10")
    assert proc.returncode == 0, proc.stderr
    assert f"connecting to {url} as st1" in proc.stderr, proc.stderr
    assert "127.0.0.1:1883" not in proc.stderr


@pytest.mark.parametrize(
    ("config", "broker", "message"),
    [
        ("demo-jumper.yaml", "mqtt://127.0.0.1:1883", "has no link: block"),
        ("site-demo/st1.yaml", "http://127.0.0.1:1883", "not a broker URL"),
    ],
)
def test_run_broker_refusals_exit_2(config: str, broker: str, message: str) -> None:
    proc = _ampshare("run", "--config", str(CONFIGS / config), "--broker", broker, "--for", "1s")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
