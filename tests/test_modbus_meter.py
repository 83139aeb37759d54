"""The Modbus meter backend against real peers: pymodbus's own server over TCP on loopback and
over RTU through a pseudo-terminal pair with pyserial; and its faults (server gone, garbage,
slow and exception responses, absurd values), each logged once per episode, never a crash."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from hal import registry
from hal.interfaces import Meter, MeterReading, Service
from hal.modbus.maps import load_map
from hal.modbus.meter import (
    POOL,
    Line,
    LinePool,
    ModbusMeter,
    open_meter,
    parse_url,
    read_once,
)
from hal.modbus.ptypair import PtyPair
from hal.modbus.server import MeterServer, SerialPort
from hal.modbus.simfeed import SimMeterFeed
from hal.modbus.values import AbsurdReading, to_reading
from hal.registry import BackendError

SHIPPED = ["abb-b23", "em340", "sdm120", "sdm630", "sdm72"]
LOGGER = "hal.modbus.meter"


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Until ``predicate()`` or ``timeout`` wall seconds (then fail)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the time limit")
        await asyncio.sleep(0.01)


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())  # type: ignore[arg-type]


def served_figures(phases: int) -> dict[str, object]:
    """Values every shipped map can hold exactly (or to its stated resolution)."""
    amps = [16.5, 10.25, 0.0][:phases] if phases == 3 else [16.5]
    return {"amps": amps, "volts": 231.5, "kwh_import": 1234.5, "kwh_export": 2.5, "hz": 49.9}


def assert_equal_to_resolution(
    model: str, read: dict[str, float | None], served: dict[str, float | None]
) -> None:
    m = load_map(model)
    assert set(read) == {q.name for q in m.quantities}
    for q in m.quantities:
        want, got = served[q.name], read[q.name]
        assert want is not None and got is not None, q.name
        # integers: one step of the register; float32: its 24-bit mantissa
        tolerance = abs(q.scale) / 2 if q.type.startswith(("int", "uint")) else abs(want) * 1e-7
        assert abs(got - want) <= tolerance + 1e-12, (q.name, got, want)


# ---- URLs and the registry -------------------------------------------------------------------


def test_urls_parse() -> None:
    u = parse_url("modbus-tcp://10.0.0.5:5020?unit=3&model=sdm630&timeout=250ms&interval=0.2")
    assert (u.transport, u.host, u.port, u.unit, u.model) == ("tcp", "10.0.0.5", 5020, 3, "sdm630")
    assert (u.timeout_s, u.interval_s) == (0.25, 0.2)
    assert parse_url("modbus-tcp://meter.local?model=sdm120").port == 502
    r = parse_url("modbus-rtu:///dev/ttyUSB0?baud=19200&parity=E&unit=7&model=em340")
    assert (r.transport, r.host, r.baud, r.parity, r.unit) == ("rtu", "/dev/ttyUSB0", 19200, "E", 7)
    assert r.line_key == parse_url("modbus-rtu:///dev/ttyUSB0?unit=2&model=sdm120").line_key


@pytest.mark.parametrize(
    ("url", "expect"),
    [
        ("modbus-tcp://h:502?unit=1", "model= is missing"),
        ("modbus-tcp://h:502?unit=1&model=sdm630&colour=red", "unknown option 'colour'"),
        ("modbus-tcp://h:502?unit=300&model=sdm630", "out of range"),
        ("modbus-tcp://h:99999?model=sdm630", "out of range"),
        ("modbus-tcp://?model=sdm630", "no host"),
        ("modbus-rtu:///dev/ttyUSB0?unit=0&model=sdm630", "unit=0: out of range (allowed: 1..247)"),
        ("modbus-rtu:///dev/ttyUSB0?parity=X&model=sdm630", "expected N, E or O"),
        ("modbus-rtu://dev/ttyUSB0?model=sdm630", "three slashes"),
        ("modbus-tcp://h?model=sdm630&timeout=-1", "negative"),
        ("modbus-tcp://h?model=sdm630&timeout=0", "expected a duration > 0"),
        ("modbus-tcp://h?model=sdm999", "unknown meter model 'sdm999'"),
    ],
)
def test_bad_urls_are_refused(url: str, expect: str) -> None:
    with pytest.raises(BackendError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        registry.open_meter(url)


def test_registry_opens_a_meter_that_is_a_service_without_connecting() -> None:
    meter = registry.open_meter("modbus-tcp://127.0.0.1:9?unit=1&model=sdm630")
    assert isinstance(meter, Meter) and isinstance(meter, Service)
    assert meter.latest() is None


def test_rtu_meters_on_one_device_must_agree_on_serial_settings() -> None:
    keep = open_meter("modbus-rtu:///dev/ttyAMPSHARE?baud=9600&unit=1&model=sdm120")
    open_meter("modbus-rtu:///dev/ttyAMPSHARE?baud=9600&unit=2&model=sdm120")
    with pytest.raises(BackendError, match="same serial settings"):
        open_meter("modbus-rtu:///dev/ttyAMPSHARE?baud=19200&unit=3&model=sdm120")
    del keep


# ---- every shipped map against pymodbus's own server --------------------------------------


@pytest.mark.parametrize("model", SHIPPED)
def test_each_shipped_map_reads_what_the_server_serves_over_tcp(model: str) -> None:
    async def main() -> None:
        server = MeterServer(model, units=(1, 2))
        await server.start()
        try:
            served = server.set(2, **served_figures(server.map.phases))  # type: ignore[arg-type]
            meter_map, values = await read_once(f"{server.url_base}?unit=2&model={model}")
            assert meter_map.model == model
            assert_equal_to_resolution(model, values, served)
            # and a polling meter publishes them as a reading
            meter = open_meter(f"{server.url_base}?unit=2&model={model}&interval=0.05")
            await meter.start()
            await wait_for(lambda: meter.latest() is not None)
            reading = meter.latest()
            assert reading is not None
            assert reading.amps[0] == pytest.approx(16.5, abs=1e-3)
            assert reading.energy_wh == pytest.approx(1234.5e3, abs=1.0)
            await meter.stop()
        finally:
            await server.stop()

    run(main)


def test_sdm630_over_rtu_on_a_pty_pair_two_units_share_one_line() -> None:
    async def main() -> None:
        with PtyPair() as pty:
            server = MeterServer("sdm630", units=(1, 2), serial=SerialPort(pty.a, baud=9600))
            await server.start()
            try:
                s1 = server.set(
                    1, amps=[31.5, 30.25, 29.0], volts=[230.5, 231.0, 229.5], kwh_import=7.5
                )
                s2 = server.set(2, amps=[6.0, 0.0, 0.0], kwh_import=42.25)
                url = f"modbus-rtu://{pty.b}?baud=9600&parity=N&model=sdm630&interval=0.05"
                _, values = await read_once(url + "&unit=1")
                assert_equal_to_resolution("sdm630", values, s1)
                pool = LinePool()
                meters = [open_meter(f"{url}&unit={u}", pool=pool) for u in (1, 2)]
                for m in meters:
                    await m.start()
                assert len(pool) == 1  # one client for the RS485 line, meters polled in turn
                await wait_for(lambda: all(m.polls >= 3 for m in meters))
                assert_equal_to_resolution("sdm630", meters[0].values, s1)
                assert_equal_to_resolution("sdm630", meters[1].values, s2)
                for m in meters:
                    await m.stop()
                assert len(pool) == 0
            finally:
                await server.stop()

    run(main)


def test_two_meters_on_one_tcp_server_share_one_client() -> None:
    async def main() -> None:
        server = MeterServer("sdm630", units=(1, 2))
        await server.start()
        pool = LinePool()
        try:
            server.set(1, amps=10.0)
            server.set(2, amps=20.0)
            meters = [
                open_meter(f"{server.url_base}?unit={u}&model=sdm630&interval=0.05", pool=pool)
                for u in (1, 2)
            ]
            for m in meters:
                await m.start()
            await wait_for(lambda: all(m.latest() is not None for m in meters))
            assert len(pool) == 1
            assert [m.latest().amps for m in meters] == [(10.0,) * 3, (20.0,) * 3]  # type: ignore[union-attr]
            await meters[0].stop()
            assert len(pool) == 1  # still used by the second meter
            await meters[1].stop()
            assert len(pool) == 0
        finally:
            await server.stop()

    run(main)


# ---- faults --------------------------------------------------------------------------------


def _warnings_and_infos(caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    records = [r for r in caplog.records if r.name == LOGGER]
    return (
        [r.getMessage() for r in records if r.levelno == logging.WARNING],
        [r.getMessage() for r in records if r.levelno == logging.INFO],
    )


def test_server_stopped_meter_goes_stale_then_recovers_on_the_same_port(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def main() -> None:
        server = MeterServer("sdm120")
        await server.start()
        server.set(1, amps=12.0)
        meter = open_meter(f"{server.url_base}?unit=1&model=sdm120&interval=0.05&stale=0.3")
        await meter.start()
        try:
            await wait_for(lambda: meter.latest() is not None)
            await server.stop()
            await wait_for(lambda: meter.is_stale())
            stale_reading = meter.latest()
            assert stale_reading is not None  # the last good reading stays, and ages
            await asyncio.sleep(0.3)
            assert meter.latest() is stale_reading and not meter.healthy
            server.set(1, amps=5.0)
            await server.start()  # the same port again
            await wait_for(lambda: not meter.is_stale() and meter.latest().amps == (5.0,))  # type: ignore[union-attr]
        finally:
            await meter.stop()
            await server.stop()

    run(main)
    warnings, infos = _warnings_and_infos(caplog)
    assert len(warnings) == 1 and len(infos) == 1, (warnings, infos)
    assert "answering again" in infos[0]


def test_twenty_failing_polls_log_one_warning_and_recovery_one_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    async def main() -> None:
        server = MeterServer("sdm630")
        await server.start()
        server.exception[1] = 6  # server device busy
        meter = open_meter(f"{server.url_base}?unit=1&model=sdm630&interval=0.01")
        await meter.start()
        try:
            await wait_for(lambda: meter.failures >= 20)
            assert meter.latest() is None
            assert meter.last_error is not None and "exception response 6" in meter.last_error
            del server.exception[1]
            await wait_for(lambda: meter.latest() is not None)
        finally:
            await meter.stop()
            await server.stop()

    run(main)
    warnings, infos = _warnings_and_infos(caplog)
    assert len(warnings) == 1 and "server device busy" in warnings[0]
    # what decides staleness for the station is its own setting, not the URL's stale=
    assert "port_machine meter_stale_s" in warnings[0] and "stale after" not in warnings[0]
    assert len(infos) == 1 and "after" in infos[0]


def test_exception_responses_unknown_unit_and_illegal_address() -> None:
    async def main() -> None:
        server = MeterServer("sdm630", units=(1,))
        await server.start()
        try:
            meter = open_meter(f"{server.url_base}?unit=9&model=sdm630&interval=0.02")
            # an ABB map against an Eastron: its holding registers do not exist there
            wrong = open_meter(f"{server.url_base}?unit=1&model=abb-b23&interval=0.02")
            for m in (meter, wrong):
                await m.start()
            await wait_for(lambda: meter.failures >= 3 and wrong.failures >= 3)
            assert meter.latest() is None and wrong.latest() is None
            assert "exception response 4" in (meter.last_error or "")
            assert "exception response 2 (illegal data address)" in (wrong.last_error or "")
            for m in (meter, wrong):
                await m.stop()
        finally:
            await server.stop()

    run(main)


def test_slow_answers_time_out_and_the_meter_recovers_when_they_are_fast_again() -> None:
    async def main() -> None:
        server = MeterServer("sdm120")
        await server.start()
        server.delay_s = 0.5
        meter = open_meter(f"{server.url_base}?unit=1&model=sdm120&timeout=0.1&interval=0.02")
        try:
            await meter.start()
            await wait_for(lambda: meter.failures >= 2)
            assert meter.latest() is None
            assert "no answer within 0.1 s" in (meter.last_error or "")
            server.delay_s = 0.0
            await wait_for(lambda: meter.latest() is not None)
        finally:
            await meter.stop()
            await server.stop()

    run(main)


class _GarbageServer:
    """A TCP peer that answers every request with junk (not pymodbus: nothing well-formed)."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.requests = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(260):
                del data
                writer.write(self.answers[self.requests % len(self.answers)])
                self.requests += 1
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"\xde\xad\xbe\xef" * 8, "no answer within 0.1 s"),  # noise: no frame in it
        # a header promising 48 bytes, then silence
        (b"\x00\x01\x00\x00\x00\x30\x01\x04\x98\x43", "no answer within 0.1 s"),
        # a well-formed answer with 1 register of the 76 asked
        (b"\x00\x01\x00\x00\x00\x05\x01\x04\x02\x00\x00", "short answer: 1 registers"),
        # a well-formed answer to another function
        (b"\x00\x01\x00\x00\x00\x05\x01\x03\x02\x00\x00", "answer with function 3"),
    ],
)
def test_garbage_and_short_frames_are_failed_polls_not_crashes(
    caplog: pytest.LogCaptureFixture, answer: bytes, why: str
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def main() -> None:
        peer = _GarbageServer([answer])
        await peer.start()
        meter = open_meter(
            f"modbus-tcp://127.0.0.1:{peer.port}?unit=1&model=sdm630&timeout=0.1&interval=0.01"
        )
        try:
            await meter.start()
            await wait_for(lambda: peer.requests >= 3 and meter.failures >= 3)
            assert meter.latest() is None
            assert why in (meter.last_error or ""), meter.last_error
        finally:
            await meter.stop()
            await peer.stop()

    run(main)
    warnings, _ = _warnings_and_infos(caplog)
    assert len(warnings) == 1


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ({"amps_l1": math.nan}, "amps_l1 is nan"),
        ({"amps_l1": 10_000.0}, "above 100 A"),
        ({"amps_l2": -5.0}, "negative beyond"),
        ({"volts_l1": 4000.0}, "volts_l1 is 4000 V"),
        ({"kwh_import": -1.0}, "never goes negative"),
        ({"watts": math.inf}, "watts is inf"),
    ],
)
def test_absurd_values_are_refused_and_not_published(values: dict[str, float], why: str) -> None:
    async def main() -> None:
        server = MeterServer("sdm630")
        await server.start()
        server.set(1, amps=10.0)
        meter = open_meter(f"{server.url_base}?unit=1&model=sdm630&interval=0.02")
        try:
            await meter.start()
            await wait_for(lambda: meter.latest() is not None)
            good = meter.latest()
            server.set_values(1, values)
            await wait_for(lambda: meter.failures >= 2)
            assert meter.latest() is good  # nothing absurd was published
            assert why in (meter.last_error or ""), meter.last_error
        finally:
            await meter.stop()
            await server.stop()

    run(main)


def test_noise_below_zero_reads_as_zero() -> None:
    async def main() -> None:
        server = MeterServer("em340")
        await server.start()
        server.set(1, amps=[-0.25, 0.0, 3.0])
        try:
            meter = open_meter(f"{server.url_base}?unit=1&model=em340&interval=0.02")
            await meter.start()
            await wait_for(lambda: meter.latest() is not None)
            assert meter.latest().amps == (0.0, 0.0, 3.0)  # type: ignore[union-attr]
            await meter.stop()
        finally:
            await server.stop()

    run(main)


def test_start_never_waits_for_an_absent_meter() -> None:
    async def main() -> None:
        with socket.socket() as s:  # a port with nobody listening
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        meter = open_meter(f"modbus-tcp://127.0.0.1:{port}?unit=1&model=sdm630")
        assert isinstance(meter, ModbusMeter)
        await meter.start()
        # start only schedules the polling task: it has returned before the task's first
        # connect attempt even began (ordering, not a wall-clock bound)
        assert meter.failures == 0 and meter.last_error is None
        await wait_for(lambda: meter.failures >= 1)
        assert meter.latest() is None and "cannot connect" in (meter.last_error or "")
        await meter.stop()
        assert len(POOL) == 0

    run(main)


LATE_AMPS_MAP = """\
model: late-amps
source: a test map whose current is in its second request
phases: 1
max_registers_per_request: 80
defaults: {type: float32}
quantities:
  volts_l1: {address: 0x0000, function: holding}
  watts: {address: 0x0002, function: holding}
  kwh_import: {address: 0x0004, function: holding}
  amps_l1: {address: 0x0006, function: input}
"""


@pytest.mark.parametrize(("model", "requests", "stamp"), [("em340", 4, 0.0), ("late", 2, 1.0)])
def test_a_reading_is_stamped_just_before_its_currents_are_read(
    tmp_path: Path, model: str, requests: int, stamp: float
) -> None:
    """The meter's clock here counts the requests the server has answered, so the stamp says
    which request it was taken before: the EM340's first of four (its currents), the test
    map's second of two (not after the whole poll)."""

    async def main() -> None:
        if model == "late":
            path = tmp_path / "late.yaml"
            path.write_text(LATE_AMPS_MAP)
            name = str(path)
        else:
            name = model
        server = MeterServer(name)
        await server.start()
        server.set(1, amps=12.5)
        meter = open_meter(
            f"{server.url_base}?unit=1&model={name}&interval=60",  # one poll in this test
            clock=lambda: float(server.requests),
            pool=LinePool(),
        )
        try:
            assert len(meter.map.blocks) == requests
            await meter.start()
            await wait_for(lambda: meter.latest() is not None)
            reading = meter.latest()
            assert reading is not None and reading.amps[0] == pytest.approx(12.5)
            assert server.requests == requests and reading.timestamp == stamp
        finally:
            await meter.stop()
            await server.stop()

    run(main)


def test_an_invalid_marker_on_a_phase_current_publishes_nothing() -> None:
    # a three-phase map: the L2 / L3 currents are unknown, not 0 A
    em340 = load_map("em340")
    good = {"amps_l1": 10.0, "amps_l2": 9.0, "amps_l3": 8.0, "volts_l1": 230.0}
    good |= {"kwh_import": 1.0, "watts": 6000.0}
    assert to_reading(em340, good, 0.0).amps == (10.0, 9.0, 8.0)
    for phase in ("amps_l1", "amps_l2", "amps_l3"):
        with pytest.raises(AbsurdReading, match=f"{phase} is not available"):
            to_reading(em340, {**good, phase: None}, 0.0)

    async def main() -> None:  # over the wire: the ABB's 0xFFFFFFFF marker on L2
        server = MeterServer("abb-b23")
        await server.start()
        server.set(1, amps=[10.0, 9.0, 8.0])
        meter = open_meter(f"{server.url_base}?unit=1&model=abb-b23&interval=0.02", pool=LinePool())
        try:
            await meter.start()
            await wait_for(lambda: meter.latest() is not None)
            good_reading = meter.latest()
            server.set_values(1, {"amps_l2": None})  # served as the map's invalid marker
            await wait_for(lambda: meter.failures >= 2)
            assert meter.latest() is good_reading
            assert "amps_l2 is not available" in (meter.last_error or "")
        finally:
            await meter.stop()
            await server.stop()

    run(main)


def test_probe_waits_as_long_as_asked_not_as_the_url_says() -> None:
    """read_once(timeout_s=3) against a meter answering after 1.3 s, with the URL's 50 ms
    timeout: pymodbus's own backstop must follow the requested timeout, not the URL's."""

    async def main() -> None:
        server = MeterServer("sdm120")
        await server.start()
        server.set(1, amps=7.0)
        server.delay_s = 1.3
        try:
            _, values = await read_once(f"{server.url_base}?unit=1&model=sdm120&timeout=0.05", 3.0)
            assert values["amps_l1"] == pytest.approx(7.0)
        finally:
            await server.stop()

    run(main)


def test_a_connect_cancelled_by_stop_closes_its_client() -> None:
    """stop() cancels the line's task; if that lands during a connect, the half-made client
    is closed (pymodbus marks a closed client ``is_closing``)."""
    clients: list[AsyncModbusTcpClient | AsyncModbusSerialClient] = []

    class RecordingLine(Line):
        def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
            client = super()._make_client()
            clients.append(client)
            return client

    async def main() -> None:
        server = MeterServer("sdm120")
        await server.start()
        try:
            line = RecordingLine(parse_url(f"{server.url_base}?unit=1&model=sdm120"))
            task = asyncio.create_task(line._connected(5.0))
            await asyncio.sleep(0)  # the task runs into the connect and waits there
            assert clients and not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert clients[0].ctx.is_closing and not clients[0].connected
        finally:
            await server.stop()

    run(main)


def test_a_line_whose_task_died_is_not_reused() -> None:
    async def main() -> None:
        server = MeterServer("sdm120", units=(1, 2))
        await server.start()
        pool = LinePool()
        url = f"{server.url_base}?model=sdm120&interval=0.02"
        first = open_meter(f"{url}&unit=1", pool=pool)
        second = open_meter(f"{url}&unit=2", pool=pool)
        assert isinstance(first, ModbusMeter) and isinstance(second, ModbusMeter)
        try:
            await first.start()
            dead = first._line
            assert dead is not None and dead._task is not None
            dead._task.cancel()  # as a loop's end cancels it, or anything from outside
            await wait_for(lambda: dead._task is not None and dead._task.done())
            await second.start()
            assert second._line is not dead
            await wait_for(lambda: second.latest() is not None)
        finally:
            await second.stop()
            await first.stop()
            await server.stop()
        assert len(pool) == 0

    run(main)


def test_a_line_left_by_an_ended_loop_is_forgotten() -> None:
    """A meter never stopped before its loop ended leaves its line in the pool; the next loop
    gets a new line for the same bus (and the old entry goes)."""
    pool = LinePool()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"modbus-tcp://127.0.0.1:{port}?unit=1&model=sdm120&interval=0.02"

    async def once(stop: bool) -> None:
        server = MeterServer("sdm120", port=port)
        await server.start()
        meter = open_meter(url, pool=pool)
        try:
            await meter.start()
            await wait_for(lambda: meter.latest() is not None)
            assert len(pool) == 1
            if stop:
                await meter.stop()
        finally:
            await server.stop()

    asyncio.run(once(stop=False))
    assert len(pool) == 1  # left behind
    asyncio.run(once(stop=True))
    assert len(pool) == 0


class FlakySimMeter:
    """A simulated port meter (the HAL Meter the feed copies from) that can be made to fail."""

    def __init__(self) -> None:
        self.amps = 10.0
        self.broken: Exception | None = None

    def latest(self) -> MeterReading | None:
        if self.broken is not None:
            raise self.broken
        return MeterReading((self.amps,), (230.0,), self.amps * 230.0, 0.0, 0.0)


def test_a_sim_feed_that_cannot_update_stops_answering_and_keeps_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hal.modbus.simfeed")

    async def main() -> None:
        sim = FlakySimMeter()
        feed = SimMeterFeed([sim], "sdm120", period_s=0.01)
        await feed.start()
        meter = open_meter(
            f"{feed.server.url_base}?unit=1&model=sdm120&interval=0.02", pool=LinePool()
        )
        try:
            await meter.start()
            await wait_for(lambda: meter.latest() is not None)
            good = meter.latest()
            sim.broken = RuntimeError("the simulated meter broke")
            await wait_for(lambda: feed.failures >= 5 and meter.failures >= 2)
            # frozen values are not served as fresh: the unit answers "server device failure"
            assert meter.latest() is good
            assert "exception response 4" in (meter.last_error or "")
            assert feed._task is not None and not feed._task.done()
            sim.broken, sim.amps = None, 12.0
            await wait_for(lambda: meter.latest() is not good)
            assert meter.latest().amps == (12.0,)  # type: ignore[union-attr]
        finally:
            await meter.stop()
            await feed.stop()

    run(main)
    records = [r for r in caplog.records if r.name == "hal.modbus.simfeed"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "the simulated meter broke" in warnings[0]
    assert sum("updated again" in r.getMessage() for r in records) == 1
