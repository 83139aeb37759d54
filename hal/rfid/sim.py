"""The simulated tag reader (``sim://``): tags presented by the simulator and by tests.

One job: stand in for a station's reader where there is no card and no UART. A scenario's EV
with an ``id_tag:``, or a scenario event that presents a tag, calls ``present``; the station's
tick takes the reads as from a real reader. Each ``present`` is one presentation: there is no
held card repeating itself, so there is nothing to debounce.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from hal.clock import Clock
from hal.registry import BackendError
from hal.rfid.reader import TagRead, check_tag

__all__ = ["SimTagReader", "open_reader"]


class SimTagReader:
    """A ``TagReader`` that reads what it is told. Not a ``Service``: nothing runs in the
    background, so it works the same in virtual and in real time."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._reads: list[TagRead] = []

    def present(self, tag: str, at: float | None = None) -> TagRead:
        """A card presented at station time ``at`` (default: now, on the clock). ``tag`` is
        hex digits in either case (``ValueError`` otherwise); the read has it upper-cased."""
        read = TagRead(check_tag(tag), self._clock() if at is None else at)
        self._reads.append(read)
        return read

    def take(self) -> list[TagRead]:
        reads, self._reads = self._reads, []
        return reads


def open_reader(url: str, *, clock: Clock | None = None) -> SimTagReader:
    """The registry's entry point: ``sim://`` (no parameters); ``clock`` stamps a ``present``
    without a time (default ``time.monotonic``)."""
    parts = urlsplit(url)
    if parts.scheme != "sim" or parts.netloc or parts.path.strip("/") or parts.query:
        raise BackendError(f"{url!r}: the simulated tag reader is plain sim://")
    return SimTagReader(time.monotonic if clock is None else clock)
