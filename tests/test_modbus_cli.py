"""`ampshare meter serve` and `ampshare meter probe` end to end: a served meter is probed as
JSON; bad input exits 2, a meter that does not answer (or answers nonsense) exits 1."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.cli import main

ROOT = Path(__file__).resolve().parents[1]


class Served:
    """`ampshare meter serve` in a subprocess on a free port (``url`` to probe)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "meter", "serve", "--port", "0", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        match = re.search(r"on (modbus-tcp://127\.0\.0\.1:\d+)", first)
        assert match, (first, self.proc.stderr.read() if self.proc.stderr else "")
        self.base = match.group(1)
        self.served = self.proc.stdout.readline()

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=10)
        return self.proc.returncode, out


@pytest.fixture
def sdm630() -> Iterator[Served]:
    served = Served("--model", "sdm630", "--unit", "1", "--unit", "2", "--amps", "12.5")
    yield served
    if served.proc.poll() is None:
        served.stop()


def test_probe_json_reads_what_serve_serves(
    sdm630: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "amps_l1=12.500" in sdm630.served
    assert main(["meter", "probe", f"{sdm630.base}?unit=2&model=sdm630", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["amps"] == [12.5, 12.5, 12.5]
    assert result["volts"] == [230.0, 230.0, 230.0]
    assert result["kw"] == pytest.approx(3 * 12.5 * 230.0 / 1000.0)
    assert result["kwh_import"] >= 0.0 and result["hz"] == pytest.approx(50.0)
    assert set(result["quantities"]) >= {"amps_l1", "watts", "kwh_import", "kwh_export"}
    assert main(["meter", "probe", f"{sdm630.base}?unit=1&model=sdm630"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"amps_l3\s+12\.500 A", text)
    code, out = sdm630.stop()
    assert code == 0 and "stopped" in out


def test_probe_exit_codes(sdm630: Served, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    cases = [
        (f"{sdm630.base}?unit=1&model=sdm999", 2, "unknown meter model 'sdm999'"),
        ("http://example.com", 2, "expected modbus-tcp://"),
        (f"{sdm630.base}?unit=1", 2, "model= is missing"),
        (f"modbus-tcp://127.0.0.1:{closed}?unit=1&model=sdm630", 1, "cannot connect"),
        (f"{sdm630.base}?unit=7&model=sdm630", 1, "exception response 4"),
        (f"{sdm630.base}?unit=1&model=abb-b23", 1, "exception response 2 (illegal data address)"),
    ]
    for url, code, message in cases:
        assert main(["meter", "probe", url, "--timeout", "0.5"]) == code, url
        assert message in capsys.readouterr().err, url


def test_probe_refuses_absurd_values(capsys: pytest.CaptureFixture[str]) -> None:
    served = Served("--model", "sdm120", "--amps", "10000")  # 10 kA on a 45 A meter
    try:
        assert main(["meter", "probe", f"{served.base}?unit=1&model=sdm120"]) == 1
        assert "absurd values refused: amps_l1 is 10000 A" in capsys.readouterr().err
    finally:
        served.stop()


def test_serve_bad_input_exits_2() -> None:
    for args in (
        ["--model", "nope", "--port", "0"],
        ["--model", "sdm630", "--port", "70000"],
        ["--model", "sdm630", "--port", "0", "--unit", "0"],
        ["--model", "sdm630", "--port", "0", "--amps", "nan"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "tools.cli", "meter", "serve", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("ampshare meter serve: "), result.stderr
