"""A real Mosquitto broker for tests and benchmarks: throwaway config, free loopback port.

One job: start ``mosquitto`` with a config written into a scratch directory (a loopback
listener on a free port, anonymous or with a password file made by ``mosquitto_passwd``, no
persistence), wait until it accepts TCP connections, and stop or restart it on the same port.
The MQTT tests never skip: without the binary this raises ``MosquittoMissing`` saying how to
install it (scripts/system-deps.sh does it for ``scripts/test``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

INSTALL_HINT = "install Mosquitto: sudo apt-get install mosquitto (scripts/system-deps.sh does it)"
START_TIMEOUT_S = 10.0


class MosquittoMissing(RuntimeError):
    """The broker (or its password tool) is not installed."""


def _binary(name: str, fallback: str) -> str:
    found = shutil.which(name) or (fallback if os.access(fallback, os.X_OK) else None)
    if found is None:
        raise MosquittoMissing(f"{name} not found: {INSTALL_HINT}")
    return found


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """One broker process. ``users`` (name -> password): a password file, no anonymous access.
    ``tls`` (CA, certificate, key files): the listener speaks TLS only (``mqtts://``)."""

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        users: Mapping[str, str] | None = None,
        tls: tuple[Path, Path, Path] | None = None,
        *,
        shipped: Path | None = None,
    ) -> None:
        self.binary = _binary("mosquitto", "/usr/sbin/mosquitto")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users = dict(users or {})
        self.tls = tls
        # A shipped config file (deploy/mosquitto/): used as it is, but for its listener (a free
        # loopback port here) and relative paths (taken from the repository root).
        self.shipped = shipped
        self.port = 0
        self.log_path = self.workdir / "mosquitto.log"
        self.conf_path = self.workdir / "mosquitto.conf"
        self._proc: subprocess.Popen[bytes] | None = None
        if self.users:
            self._password_file()

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _password_file(self) -> None:
        tool = _binary("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
        path = self.workdir / "passwords"
        for i, (user, password) in enumerate(self.users.items()):
            # -c creates the file (first user only), -b takes the password from the command line.
            args = [tool, *(["-c"] if i == 0 else []), "-b", str(path), user, password]
            subprocess.run(args, check=True, capture_output=True, timeout=10)
        path.chmod(0o600)

    def _write_config(self) -> None:
        if self.shipped is not None:
            self.conf_path.write_text(self._shipped_config(self.shipped))
            return
        lines = [
            f"listener {self.port} {self.host}",
            # Run as root, mosquitto would switch to user "mosquitto", which cannot read this
            # scratch directory; naming the current user keeps it as it is.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if self.tls is not None:
            ca, cert, key = self.tls  # per-listener: they follow the listener line
            lines[1:1] = [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        if self.users:
            lines += ["allow_anonymous false", f"password_file {self.workdir / 'passwords'}"]
        else:
            lines.append("allow_anonymous true")
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _shipped_config(self, path: Path) -> str:
        root = path.resolve().parent.parent.parent
        out = [
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type all",
        ]
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition(" ")
            if key == "listener":
                line = f"listener {self.port} {self.host}"
            elif key in ("password_file", "acl_file") and not value.startswith("/"):
                line = f"{key} {root / value}"
            out.append(line)
        return "\n".join(out) + "\n"

    def kill(self) -> None:
        """SIGKILL: the broker dies with no goodbye to anyone (a power cut of its host)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()

    def start(self) -> None:
        """Start on a free port (the first time) or on the same port again (after ``stop``)."""
        if self.running:
            return
        attempts = 3 if self.port == 0 else 1
        for attempt in range(attempts):
            if self.port == 0 or attempt > 0:
                self.port = free_port()
            self._write_config()
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if self._wait_accepting():
                return
        raise RuntimeError(f"mosquitto did not start on port {self.port}: {self._failure()}")

    def _wait_accepting(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False  # exited: the port was taken, or the config was refused
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.02)
        self.stop()
        return False

    def _failure(self) -> str:
        stderr = b""
        if self._proc is not None and self._proc.stderr is not None and not self.running:
            stderr = self._proc.stderr.read()
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return (stderr.decode(errors="replace") + log).strip()[-2000:] or "no output"

    def stop(self) -> None:
        """Terminate (SIGTERM) and wait; kill if it does not go within 5 s."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()

    def restart(self) -> None:
        """Stop and start again on the same port (clients must reconnect by themselves)."""
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
