"""A linked pair of pseudo-terminals: a virtual serial cable for RTU tests and the bench.

One job: what ``socat pty,raw pty,raw`` does, without a process to manage. Two ptys are
opened (``a`` and ``b`` are their device paths) and a thread copies every byte written to one
to the other, so a pymodbus serial server on ``a`` and a client on ``b`` talk RTU through the
kernel's tty layer and pyserial, as over a USB-RS485 adapter. A pty does not pace bytes at the
baud rate: what goes through it costs only the software's time (the bench says so).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import tty

__all__ = ["PtyPair"]


class PtyPair:
    """Two linked pseudo-terminals; use as a context manager or call ``close()``."""

    def __init__(self) -> None:
        self._master_a, self._slave_a = os.openpty()
        self._master_b, self._slave_b = os.openpty()
        for fd in (self._slave_a, self._slave_b):
            # Raw: no echo, no line editing, no CR/LF translation of binary frames. Our own
            # slave descriptors stay open so a reopening client never sees a hung-up pty.
            tty.setraw(fd)
        self.a = os.ttyname(self._slave_a)
        self.b = os.ttyname(self._slave_b)
        for fd in (self._master_a, self._master_b):
            # Nobody reading one end must not stall the other direction: like a real wire,
            # bytes nobody can take are dropped.
            os.set_blocking(fd, False)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._relay, name="pty relay", daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        peer = {self._master_a: self._master_b, self._master_b: self._master_a}
        while True:
            ready, _, _ = select.select([self._master_a, self._master_b, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                    os.write(peer[fd], data)
                except OSError:  # EAGAIN (full or nothing to read) or EIO (no reader yet)
                    continue

    def close(self) -> None:
        if self._thread.is_alive():
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
        for fd in (
            self._master_a,
            self._master_b,
            self._slave_a,
            self._slave_b,
            self._wake_r,
            self._wake_w,
        ):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PtyPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
