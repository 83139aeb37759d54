"""Who may charge: the station's authorization, free or by tag (pure: no clock, no I/O).

One job: from what the ports see (plugged in or not) and the tags a reader has read
(``hal.rfid``), decide which ports may be offered current and with which tag, and say what
happened (``AuthEvent``) for the log and the session records. The station asks it every tick
(``firmware.station``); a port that is not authorized is reported to the allocation core as not
there at all, so it is never counted, and its port machine gets no offer: PWM off, state B1,
contactor open.

Modes (``auth:`` in the station file, ``firmware.config.auth``):

* ``free`` (the default): plug and charge; every plugged-in port is authorized, with no tag.
* ``tags``: a port is authorized by a tag on the allow-list. One reader serves the station:
  a tag applies to the port that has waited longest for one; if none waits, it is held for the
  next plug-in on any port (``tag_before_plugin``, default true) for ``timeout_s``. A port
  that waits ``timeout_s`` after plug-in without a tag stops waiting (logged): the driver
  unplugs and plugs in again, as OCPP 1.6's ConnectionTimeOut has it. An unknown tag is
  refused and logged with the tag. The tag of a running session presented again stops it
  (OCPP's stop reason ``Local``): the port is de-authorized until the vehicle is unplugged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from hal.rfid import check_tag

__all__ = [
    "DEFAULT_AUTH_TIMEOUT_S",
    "AuthEvent",
    "AuthMode",
    "AuthSettings",
    "Authorizer",
]

# How long a tag presented before plug-in holds, and how long a plugged-in vehicle waits for
# one: OCPP 1.6's ConnectionTimeOut, whose usual setting is a minute or two.
DEFAULT_AUTH_TIMEOUT_S = 60.0


class AuthMode(Enum):
    FREE = "free"
    TAGS = "tags"


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """A station's ``auth:``: the mode, the allow-list and the timing."""

    mode: AuthMode = AuthMode.FREE
    tags: frozenset[str] = frozenset()
    tags_file: str | None = None  # reloaded on SIGHUP (tools/run_cmd.py)
    timeout_s: float = DEFAULT_AUTH_TIMEOUT_S
    tag_before_plugin: bool = True


@dataclass(frozen=True, slots=True)
class AuthEvent:
    """What authorization did: ``kind`` is one of "accepted" (a port authorized, or a tag held
    for the next plug-in when ``port`` is None), "refused" (an unknown tag), "stop" (the same
    tag again: stop the session, reason Local), "remote" (stopped from outside, reason Remote:
    ``Authorizer.stop``), "timeout" (a port stopped waiting, or a held tag expired when
    ``port`` is None)."""

    kind: str
    tag: str | None
    port: str | None
    at: float


@dataclass(slots=True)
class _Port:
    plugged_at: float | None = None  # when the present vehicle plugged in
    tag: str | None = None  # the tag that authorized it (None in free mode)
    authorized: bool = False
    done: bool = False  # stopped by its tag, or timed out: nothing more until unplugged


@dataclass(slots=True)
class Authorizer:
    """The authorization state of one station's ports."""

    settings: AuthSettings
    port_ids: tuple[str, ...]
    _ports: dict[str, _Port] = field(init=False)
    _held: tuple[str, float] | None = field(init=False, default=None)  # (tag, presented at)

    def __post_init__(self) -> None:
        self._ports = {pid: _Port() for pid in self.port_ids}

    def reload(self, tags: Iterable[str]) -> None:
        """A new allow-list (SIGHUP); sessions already authorized go on."""
        from dataclasses import replace

        self.settings = replace(self.settings, tags=frozenset(_norm(t) for t in tags))

    def allowed(self, port_id: str) -> bool:
        """Whether the port may be offered current now."""
        return self._ports[port_id].authorized

    def tags(self) -> dict[str, str | None]:
        """Each authorized port's tag (None in free mode); ports not authorized are absent."""
        return {pid: p.tag for pid, p in self._ports.items() if p.authorized}

    def stop(self, port_id: str, now: float) -> AuthEvent | None:
        """End the port's session from outside (a central system's remote stop): the port is
        de-authorized until its vehicle is unplugged, in free mode too. None when the port has
        no session to stop."""
        port = self._ports[port_id]
        if not port.authorized:
            return None
        port.authorized, port.done = False, True
        return AuthEvent("remote", port.tag, port_id, now)

    def step(
        self, now: float, plugged: Mapping[str, bool], presented: Iterable[str] = ()
    ) -> list[AuthEvent]:
        """One tick: plug-ins and unplugs, then the tags read since the last tick, in order."""
        events: list[AuthEvent] = []
        for pid, port in self._ports.items():
            if not plugged.get(pid, False):
                if port.plugged_at is not None:
                    self._ports[pid] = _Port()  # unplugged: everything of the session ends
                continue
            if port.plugged_at is None:
                port.plugged_at = now
                if self.settings.mode is AuthMode.FREE:
                    port.authorized = not port.done
                elif self._held is not None:
                    port.tag, port.authorized = self._held[0], True
                    self._held = None
                    events.append(AuthEvent("accepted", port.tag, pid, now))
        if self.settings.mode is AuthMode.FREE:
            return events
        for tag in presented:
            events.append(self._present(_norm(tag), now))
        events += self._expire(now)
        return events

    def _present(self, tag: str, now: float) -> AuthEvent:
        for pid, port in self._ports.items():
            if port.authorized and port.tag == tag:
                port.authorized, port.done = False, True
                return AuthEvent("stop", tag, pid, now)
        if tag not in self.settings.tags:
            return AuthEvent("refused", tag, None, now)
        waiting = [
            (port.plugged_at, pid)
            for pid, port in self._ports.items()
            if port.plugged_at is not None and not port.authorized and not port.done
        ]
        if waiting:
            _, pid = min(waiting)
            port = self._ports[pid]
            port.tag, port.authorized = tag, True
            return AuthEvent("accepted", tag, pid, now)
        if not self.settings.tag_before_plugin:
            return AuthEvent("refused", tag, None, now)
        self._held = (tag, now)
        return AuthEvent("accepted", tag, None, now)

    def _expire(self, now: float) -> list[AuthEvent]:
        events = []
        timeout = self.settings.timeout_s
        if self._held is not None and now - self._held[1] >= timeout:
            events.append(AuthEvent("timeout", self._held[0], None, now))
            self._held = None
        for pid, port in self._ports.items():
            waiting = port.plugged_at is not None and not port.authorized and not port.done
            if waiting and port.plugged_at is not None and now - port.plugged_at >= timeout:
                port.done = True
                events.append(AuthEvent("timeout", None, pid, now))
        return events

    def next_deadline(self) -> float | None:
        """When a timeout falls due with nothing else happening (for virtual time)."""
        if self.settings.mode is AuthMode.FREE:
            return None
        times = [] if self._held is None else [self._held[1] + self.settings.timeout_s]
        times += [
            p.plugged_at + self.settings.timeout_s
            for p in self._ports.values()
            if p.plugged_at is not None and not p.authorized and not p.done
        ]
        return min(times) if times else None


def _norm(tag: str) -> str:
    """Tags compare as ``hal.rfid.check_tag`` writes them (upper-case hex); a string that is
    no tag stays as it is and matches nothing on a list of tags."""
    try:
        return check_tag(tag.strip())
    except ValueError:
        return tag
