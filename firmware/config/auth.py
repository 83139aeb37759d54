"""A station's ``auth:`` block: who may charge (``firmware.auth``) and the tag reader.

One job: read the block into ``AuthSettings`` and the reader's URL, refusing with file:line.

```yaml
auth:
  mode: tags                 # free (default: plug and charge) | tags
  tags: [0A00B1C2D3, 0A00FFEE01]   # the allow-list, inline; and/or
  tags_file: tags.txt        # one tag per line, '#' comments; relative to this file; SIGHUP
                             # reloads it
  timeout: 60s               # a tag before plug-in holds this long; a vehicle waits this long
  tag_before_plugin: true    # a tag with no port waiting holds for the next plug-in
  reader: "rdm6300:///dev/ttyAMA1?baud=9600"   # or sim:// (the simulator's); none: no reader
```
"""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware.auth import DEFAULT_AUTH_TIMEOUT_S, AuthMode, AuthSettings
from firmware.config.common import readable_file
from hal.rfid import MAX_TAG_CHARS, check_tag
from hal.yamlnodes import Value

__all__ = ["AuthConfig", "parse_auth", "read_tags_file"]

_AUTH_KEYS = ("mode", "tags", "tags_file", "timeout", "tag_before_plugin", "reader")


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """``auth:``, read: the settings and the tag reader's URL (None: no reader)."""

    settings: AuthSettings = field(default_factory=AuthSettings)
    reader: str | None = None
    inline: frozenset[str] = frozenset()  # the tags written in the block itself

    def reloaded_tags(self) -> frozenset[str]:
        """The allow-list read again (SIGHUP): the inline tags and the tags file as it is now;
        OSError or ValueError (naming the line) if the file cannot be read."""
        path = self.settings.tags_file
        if path is None:
            return self.inline
        tags = read_tags_file(path)
        if not tags:  # a truncated or half-written file must not lock every driver out
            raise ValueError(f"{path}: no tag in it (a half-written file?)")
        return self.inline | tags


def _tag(text: str) -> str | None:
    try:
        return check_tag(text.strip())
    except ValueError:
        return None


def read_tags_file(path: str) -> frozenset[str]:
    """The tags of a tags file (one per line, '#' comments); ValueError naming the line."""
    tags = set()
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            text = line.partition("#")[0].strip()
            if not text:
                continue
            tag = _tag(text)
            if tag is None:
                raise ValueError(
                    f"{path}:{number}: {text!r} is not a tag (hex digits, at most {MAX_TAG_CHARS})"
                )
            tags.add(tag)
    return frozenset(tags)


def parse_auth(value: Value) -> AuthConfig:
    """The ``auth:`` block of a station file."""
    fields = value.mapping(_AUTH_KEYS)
    mode_value = fields.get("mode")
    mode = AuthMode.FREE
    if mode_value is not None:
        text = mode_value.string().strip().lower()
        try:
            mode = AuthMode(text)
        except ValueError:
            mode_value.fail(f"{text!r} is not a mode (allowed: free, tags)")
    inline: set[str] = set()
    tags_value = fields.get("tags")
    if tags_value is not None:
        for item in tags_value.sequence():
            tag = _tag(str(item.node.value))
            if tag is None:
                item.fail(f"not a tag (hex digits, at most {MAX_TAG_CHARS})")
            inline.add(tag)
    tags = set(inline)
    file_value = fields.get("tags_file")
    tags_file = None
    if file_value is not None:
        tags_file = readable_file(file_value)
        try:
            tags |= read_tags_file(tags_file)
        except (OSError, ValueError) as exc:
            file_value.fail(str(exc))
    reader = fields.get("reader")
    if mode is AuthMode.TAGS and reader is None:
        value.fail("mode: tags needs reader: (the tag reader; else no tag could ever be read)")
    if mode is AuthMode.TAGS and not tags and tags_file is None:
        value.fail("mode: tags needs tags: or tags_file: (else no tag could ever charge)")
    if mode is AuthMode.FREE and (tags or tags_file):
        (tags_value or file_value or value).fail("tags are for mode: tags (this is mode: free)")
    timeout_value = fields.get("timeout")
    timeout = DEFAULT_AUTH_TIMEOUT_S if timeout_value is None else timeout_value.duration()
    if timeout_value is not None and not 1.0 <= timeout <= 3600.0:
        timeout_value.fail("must be between 1s and 1h")
    before = fields.get("tag_before_plugin")
    return AuthConfig(
        AuthSettings(
            mode=mode,
            tags=frozenset(tags),
            tags_file=tags_file,
            timeout_s=timeout,
            tag_before_plugin=True if before is None else before.boolean(),
        ),
        None if reader is None else reader.url(),
        frozenset(inline),
    )
