"""What every tag reader is to the station: the ``TagReader`` protocol, a ``TagRead``, and the
debounce rule a reader that repeats itself applies.

One job: the reader-independent part of ``hal.rfid``. A backend (``hal.rfid.rdm6300``,
``hal.rfid.sim``) reads tags in the background (or is told of them) and keeps them until the
station's control tick takes them, so the tick never waits on a reader.

What a read means is not decided here: the station's authorization (``firmware/auth``) decides
which port a tag applies to, or whether it stops a session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "HOLD_OFF_S",
    "MAX_TAG_CHARS",
    "Debouncer",
    "TagRead",
    "TagReader",
    "check_tag",
]

# A tag read again is a new presentation only after it has been out of the field (no frame of
# it) for this long. Readers such as the RDM6300 repeat a held card's frame several times a
# second, and the same tag presented again stops its session (firmware/auth): a card left lying
# on the reader must read once, not toggle a session on and off. Long enough to cover a few
# repeats lost to noise (a frame refused for its checksum), short enough that lifting the card
# and presenting it again is a deliberate second presentation.
HOLD_OFF_S = 1.0
# The longest tag id accepted, in hex digits: a 10-byte ISO 14443 UID, and OCPP 1.6's idToken
# limit (20 characters); firmware/config/auth.py keeps the same limit for its allow-list.
MAX_TAG_CHARS = 20
_HEX_DIGITS = frozenset("0123456789ABCDEF")


def check_tag(tag: str) -> str:
    """``tag`` as the station compares tags: upper-case hex digits, 1 to ``MAX_TAG_CHARS`` of
    them. ``ValueError`` for anything else (so a typo in a scenario is refused, not a tag that
    no allow-list can ever hold)."""
    upper = tag.upper()
    if not 1 <= len(upper) <= MAX_TAG_CHARS or not set(upper) <= _HEX_DIGITS:
        raise ValueError(f"{tag!r} is not a tag id (1 to {MAX_TAG_CHARS} hex digits)")
    return upper


@dataclass(frozen=True, slots=True)
class TagRead:
    """One presentation of a tag: its id (upper-case hex; an RDM6300's 10 characters as read,
    e.g. ``"0A00B1C2D3"``) and when it was read (``at``, on the station's clock, seconds)."""

    tag: str
    at: float


@runtime_checkable
class TagReader(Protocol):
    """A tag reader as the control tick sees it. A real reader is also a
    ``hal.interfaces.Service``: its own task reads the device; a simulated one is told."""

    def take(self) -> list[TagRead]:
        """The tags presented since the last call, oldest first; never waits."""
        ...


class Debouncer:
    """Turns a reader's repeated reads of a held card into one read per presentation.

    ``seen(tag, now)`` is True when ``tag`` is a new presentation: it has not been seen within
    ``hold_off_s`` before ``now``. Every read of a tag, reported or not, restarts its hold-off,
    so a card held on the reader for an hour reads once; the same card reads again only after
    ``hold_off_s`` without any read of it. Tags are independent of each other. Pure: the time
    is an argument; it remembers only tags seen within the hold-off.
    """

    def __init__(self, hold_off_s: float = HOLD_OFF_S) -> None:
        if not hold_off_s >= 0.0:
            raise ValueError("hold_off_s must be >= 0")
        self.hold_off_s = hold_off_s
        self._last: dict[str, float] = {}

    def seen(self, tag: str, now: float) -> bool:
        """A read of ``tag`` at ``now``; True if it is a new presentation."""
        # Forget tags gone for the hold-off: the dict stays as small as the cards in the field.
        for gone in [t for t, at in self._last.items() if now - at >= self.hold_off_s]:
            del self._last[gone]
        new = tag not in self._last
        self._last[tag] = now if new else max(now, self._last[tag])
        return new
