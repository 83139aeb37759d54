"""Why a listener cannot have its address: the one message every listening command gives.

One job: turn a failed listen (a Modbus meter server, a status page) into ``ListenError``, an
``OSError`` whose text names the address and the reason in words ("127.0.0.1:15020 is taken:
another program listens there"), for the command to print before it exits 2. Libraries hide
the reason (pymodbus raises a bare ``RuntimeError``), so ``cannot_listen`` asks the operating
system itself, by binding a throw-away socket to the same address.
"""

from __future__ import annotations

import errno
import socket

__all__ = ["ListenError", "cannot_listen"]


class ListenError(OSError):
    """A listener could not have its address; the text says which and why."""


def _reason(host: str, port: int) -> tuple[int | None, str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return None, f"no such address ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As a server binds: SO_REUSEADDR lets a port in TIME_WAIT be reused, not a taken one.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return exc.errno, "taken: another program listens there (address already in use)"
            if exc.errno == errno.EACCES:
                return exc.errno, "not allowed (ports below 1024 need privileges)"
            if exc.errno == errno.EADDRNOTAVAIL:
                return exc.errno, "not an address of this machine"
            return exc.errno, exc.strerror or str(exc)
    return None, "refused by the server library, although the address is free now"


def cannot_listen(host: str, port: int, what: str) -> ListenError:
    """The error for ``what`` (e.g. "Modbus meter server") failing to listen on host:port."""
    code, reason = _reason(host, port)
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    error = ListenError(f"{what}: {shown} is {reason}" if code else f"{what}: {shown}: {reason}")
    error.errno = code
    return error
