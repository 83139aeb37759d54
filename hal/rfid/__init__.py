"""Tag readers behind the HAL: who presented which card, read without blocking the tick.

``reader`` says what a reader is to the station (``TagReader``, ``TagRead``) and how repeated
reads of a held card become one presentation (``Debouncer``); the backends, opened by URL
through ``hal.registry.open_tag_reader``, are ``rdm6300`` (an RDM6300 module on a UART:
``rdm6300:///dev/ttyS0?baud=9600``) and ``sim`` (``sim://``, the simulator's). What a read does
(which port it authorizes, or which session it stops) is the station's authorization,
``firmware/auth``.
"""

from __future__ import annotations

from hal.rfid.reader import HOLD_OFF_S, MAX_TAG_CHARS, Debouncer, TagRead, TagReader, check_tag

__all__ = ["HOLD_OFF_S", "MAX_TAG_CHARS", "Debouncer", "TagRead", "TagReader", "check_tag"]
