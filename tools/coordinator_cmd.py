"""``ampshare coordinator SITE.yaml --broker mqtt://HOST:PORT``: site power sharing over MQTT.

One job: run the coordinator (``firmware.link.coordinator.CoordinatorCore`` behind
``firmware.link.mqtt.CoordinatorService``) for a site file until Ctrl-C or ``--for``, and show
what it does: one log record (``tools.logs``) per station whose limits change, per station
status change and per dynamic limit change (time of use, site meter); on a terminal, a live
table instead of the first kind. Site meters:
a group's ``meter: {url: ...}`` is opened through the meter backends (hal/registry.py) and
polled; ``meter: {topic: true}`` is read from ``ampshare/v1/<site>/meter/<group>``
(docs/mqtt.md). Exit codes: 0 done, 2 bad input (site file as ``FILE:LINE: FIELD: message``,
broker URL, options, a meter URL no backend opens).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from hal.durations import format_duration
from tools.args import duration

log = logging.getLogger("ampshare.coordinator")

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def register(sub: Any) -> None:
    """Add this command's parser to the ampshare subparsers (sets run)."""
    parser = sub.add_parser(
        "coordinator",
        help="share a site's limits among its stations over MQTT",
        description=(
            "Run the site coordinator: read every station's telemetry from the broker, "
            "allocate the site's circuit / panel / site limits (time of use, site meters) and "
            "publish per-port limits (docs/mqtt.md)."
        ),
    )
    parser.add_argument("site", help="site file (YAML): groups, ports, schedules, meters")
    parser.add_argument(
        "--broker", required=True, help="mqtt://HOST:PORT or mqtts://HOST:PORT (TLS)"
    )
    parser.add_argument("--username", help="broker user name")
    parser.add_argument("--password-file", help="file holding the broker password")
    parser.add_argument("--tls-ca", help="CA bundle to verify the broker (mqtts://)")
    parser.add_argument("--tls-cert", help="client certificate (mqtts://)")
    parser.add_argument("--tls-key", help="client certificate's key (mqtts://)")
    parser.add_argument(
        "--key-file",
        help="the site key that signs limits and verifies telemetry (`ampshare keygen FILE`)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="run without a site key (a lab: anyone on the broker can forge limits)",
    )
    parser.add_argument(
        "--valid",
        type=duration,
        default=30.0,
        help="how long a station may apply limits after receiving them (default 30s)",
    )
    parser.add_argument(
        "--period",
        type=duration,
        default=5.0,
        help="republish every station's limits this often (default 5s, at most 5s)",
    )
    parser.add_argument(
        "--for", dest="duration", type=duration, help="stop by itself after this (30s, 5m, 2h)"
    )
    parser.add_argument("--no-live", action="store_true", help="plain log lines, no live table")
    parser.set_defaults(run=run)


def _fail(message: str) -> int:
    print(f"ampshare coordinator: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run(args: argparse.Namespace) -> int:
    from firmware.config import ConfigError, load_site_config
    from firmware.link.coordinator import CoordinatorCore, CoordinatorSettings
    from firmware.link.mqtt import BrokerSettings, CoordinatorService
    from hal import registry
    from hal.clock import StationClock
    from hal.interfaces import Meter

    try:
        site = load_site_config(args.site)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_INPUT
    password = None
    if args.password_file is not None:
        try:
            with open(args.password_file, encoding="utf-8") as stream:
                password = stream.read().strip()
        except OSError as exc:
            return _fail(f"--password-file {args.password_file}: {exc.strerror or exc}")
        if not password:
            return _fail(f"--password-file {args.password_file} is empty")
        if args.username is None:
            return _fail("--password-file needs --username")
    if (args.tls_cert is None) != (args.tls_key is None):
        return _fail("a client certificate needs both --tls-cert and --tls-key")
    try:
        broker = BrokerSettings.from_url(
            args.broker,
            username=args.username,
            password=password,
            ca=args.tls_ca,
            cert=args.tls_cert,
            key=args.tls_key,
        )
    except ValueError as exc:
        return _fail(f"--broker: {exc}")
    from firmware.link.auth import KeyFileError, load_keyring

    keyring = None
    if args.key_file is not None:
        if args.insecure:
            return _fail("--key-file and --insecure contradict each other")
        try:
            keyring = load_keyring(args.key_file)
        except KeyFileError as exc:
            return _fail(f"--key-file: {exc}")
    elif not args.insecure:
        return _fail(
            "--key-file FILE is required (the site key that signs limits; `ampshare keygen "
            "FILE` makes one), or --insecure for a lab without one"
        )
    try:
        settings = CoordinatorSettings(valid_s=args.valid, publish_period_s=args.period)
    except ValueError as exc:
        return _fail(f"--valid / --period: {exc}")

    clock = StationClock()
    meters: dict[str, Meter] = {}
    meter_topics: list[str] = []
    for group, spec in site.meters.items():
        if spec.topic:
            meter_topics.append(group)
        elif spec.url is not None:
            try:
                meters[group] = registry.open_meter(spec.url, clock=clock)
            except (registry.BackendError, ValueError) as exc:
                return _fail(f"{args.site}: site meter of group {group}: {exc}")

    core = CoordinatorCore(site, settings, keyring=keyring)
    if keyring is None:
        log.warning(
            "INSECURE: no site key; limits go out unsigned and telemetry is not verified: "
            "anyone who can publish on the broker can forge limits (docs/mqtt.md, Threat model)"
        )
    report = _Report(site.spec.id, core, clock)
    service = CoordinatorService(
        broker,
        core,
        site.spec.id,
        clock=clock,
        wall=datetime.now,
        meter_topics=meter_topics,
        meters=meters,
        on_step=report.step,
    )
    log.info(
        "coordinator of site %s: %d stations, %d ports, broker %s, limits valid %s, "
        "republished every %s",
        site.spec.id,
        len(site.stations),
        len(site.spec.ports),
        broker.url,
        format_duration(args.valid),
        format_duration(args.period),
    )
    live = not args.no_live and sys.stdout.isatty()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        clock.start()
        await service.start()
        try:
            if live:
                await _live(report, stop, args.duration)
            else:
                await _wait(stop, args.duration)
        finally:
            await service.stop()

    asyncio.run(main())
    return EXIT_OK


async def _wait(stop: asyncio.Event, duration: float | None) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), duration)


async def _live(report: _Report, stop: asyncio.Event, duration: float | None) -> None:
    from rich.live import Live

    report.quiet = True
    loop = asyncio.get_running_loop()
    end = None if duration is None else loop.time() + duration
    with Live(report.table(), refresh_per_second=4) as view:
        while not stop.is_set() and (end is None or loop.time() < end):
            view.update(report.table())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)


class _Report:
    """What changed since the last step, as log lines (or the rows of the live table)."""

    def __init__(self, site: str, core: Any, clock: Any) -> None:
        self.site = site
        self.core = core
        self.clock = clock
        self.quiet = False
        self.limits: dict[str, Mapping[str, float]] = {}
        self._status: dict[str, str] = {}
        self._groups: dict[str, float] = {}

    def _print(self, line: str) -> None:
        log.info("%s", line)

    def step(self, now: float, messages: list[Any]) -> None:
        alarms = self.core.alarms()
        for station, status in self.core.station_status(now).items():
            if station in alarms:
                status = f"untrusted: {alarms[station]}"
            if self._status.get(station) != status:
                self._status[station] = status
                self._print(f"station {station}: {status}")
        for lid, value in sorted(self.core.limits().items()):
            if self._groups.get(lid) != value:
                was = self._groups.get(lid)
                self._groups[lid] = value
                change = f"{value:g}" if was is None else f"{was:g} -> {value:g}"
                self._print(f"limit {lid}: {change}")
        for m in messages:
            if dict(self.limits.get(m.station, {})) != dict(m.ports):
                self.limits[m.station] = dict(m.ports)
                ports = " ".join(f"{pid}={a:g}A" for pid, a in sorted(m.ports.items()))
                if not self.quiet:  # the live table shows them
                    self._print(f"limits {m.station}: {ports}")

    def table(self) -> Any:
        from rich.table import Table

        table = Table(title=f"ampshare coordinator {self.site}  t={self.clock():.0f}s")
        for name in ("station", "status", "port", "limit A"):
            table.add_column(name)
        for station in sorted(self._status):
            ports = self.limits.get(station, {})
            rows: list[tuple[str, float | None]] = [*sorted(ports.items())] or [("-", None)]
            for i, (pid, amps) in enumerate(rows):
                table.add_row(
                    station if i == 0 else "",
                    self._status[station] if i == 0 else "",
                    pid,
                    "-" if amps is None else f"{amps:g}",
                )
        return table
