"""A station's ``link:`` block: its MQTT broker, site, login and site key (docs/mqtt.md).

One job: read the ``link:`` block of a station file into a ``LinkConfig``, with what it names
read now rather than at run time (the password file, the TLS files, the site key file
``key_file``, refused with file:line when missing or unreadable); parse broker URLs, and
redact any password written into a URL before an error message or a log repeats it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from firmware.config.common import readable_file
from firmware.link.auth import KeyFileError, Keyring, load_keyring
from firmware.link.station_link import DEFAULT_TELEMETRY_PERIOD_S
from hal.yamlnodes import Value, fmt

__all__ = ["LinkConfig", "parse_broker_url", "parse_link", "redact_url"]

MQTT_PORT = 1883  # IANA registered port for MQTT
MQTTS_PORT = 8883  # IANA registered port for MQTT over TLS
# MQTT 3.1.1, 3.1.3.5: a password is at most 65535 bytes; a longer file is not a password file.
MAX_PASSWORD_CHARS = 65535


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """A station's ``link:`` block: its MQTT broker and site (docs/mqtt.md).

    ``password`` is read from ``password_file`` when the file is loaded (a missing file is a
    config error, not a run-time surprise). ``ca``/``cert``/``key`` are absolute paths.
    """

    broker: str  # as written: mqtt://host:port or mqtts://host:port
    site: str
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    telemetry_period_s: float = DEFAULT_TELEMETRY_PERIOD_S
    # The site key (firmware.link.auth) read from ``key_file``; None only with ``insecure:
    # true`` (a lab link whose limits anyone on the broker can forge).
    keyring: Keyring | None = field(default=None, repr=False)
    key_file: str | None = None

    def with_broker(self, url: str) -> LinkConfig:
        """This link on another broker (``ampshare run --broker``); ValueError for a URL that
        is not a broker's, or that drops TLS the block's ``tls:`` options were written for."""
        host, port, tls = parse_broker_url(url)
        if not tls and (self.ca or self.cert):
            raise ValueError(
                f"{redact_url(url)}: the link's tls: options need an mqtts:// broker URL"
            )
        return replace(self, broker=url, host=host, port=port, tls=tls)


_LINK_KEYS = (
    "broker",
    "site",
    "username",
    "password",
    "password_file",
    "tls",
    "telemetry_period",
    "key_file",
    "insecure",
)
# A topic level must not hold MQTT's separator or wildcards (MQTT 3.1.1, 4.7.1).
_TOPIC_FORBIDDEN = frozenset("/+#\0")


def parse_broker_url(text: str) -> tuple[str, int, bool]:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` -> (host, port, tls); ValueError,
    whose message never repeats a password written into the URL."""
    parts = urlsplit(text)
    text = redact_url(text)
    if parts.scheme not in ("mqtt", "mqtts") or "://" not in text:
        raise ValueError(f"{text!r} is not a broker URL (expected mqtt://HOST:PORT or mqtts://...)")
    if parts.path.strip("/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(
            f"{text!r}: expected only a host and port, e.g. mqtt://127.0.0.1:1883 "
            "(credentials go in username / password_file)"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a TCP port (1..65535)") from None
    if port == 0:
        raise ValueError(f"{text!r}: the port is not a TCP port (1..65535)")
    if not parts.hostname:
        raise ValueError(f"{text!r}: no host")
    tls = parts.scheme == "mqtts"
    return parts.hostname, port or (MQTTS_PORT if tls else MQTT_PORT), tls


def redact_url(text: str) -> str:
    """``text`` with any ``user:password@`` of a URL replaced by ``***@``: what an error message
    or a log line may repeat of a URL somebody typed (a password must never reach a log)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}{sep}{netloc}{slash}{tail}"


def _topic_id(value: Value, what: str) -> str:
    ident = value.ident()
    bad = sorted(_TOPIC_FORBIDDEN & set(ident))
    if bad or len(ident) > 64:
        value.fail(
            f"{ident!r} cannot be an MQTT topic level (the {what} id names topics; "
            "allowed: up to 64 characters without '/', '+', '#')"
        )
    return ident


def parse_link(value: Value, station_id: str) -> LinkConfig:
    """The ``link:`` block (docs/mqtt.md, "Station config")."""
    fields = value.mapping(_LINK_KEYS, ("broker", "site"))
    broker_value = fields.require("broker")
    broker = broker_value.string()
    try:
        host, port, tls = parse_broker_url(broker)
    except ValueError as exc:
        broker_value.fail(str(exc))
    site = _topic_id(fields.require("site"), "site")
    if _TOPIC_FORBIDDEN & set(station_id):
        value.fail(
            f"the station id {station_id!r} names MQTT topics: it must not contain '/', '+', '#'"
        )
    username = None if (user := fields.get("username")) is None else user.string()
    password_value, file_value = fields.get("password"), fields.get("password_file")
    password = None
    if password_value is not None and file_value is not None:
        file_value.fail("give password or password_file, not both")
    if password_value is not None:
        password = password_value.string()
    if file_value is not None:
        path = readable_file(file_value)
        try:
            with open(path, encoding="utf-8") as stream:
                text = stream.read(MAX_PASSWORD_CHARS + 1)
        except (OSError, UnicodeDecodeError) as exc:  # e.g. a binary file named by mistake
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not text"
            file_value.fail(f"{path}: cannot read a password from it ({reason})")
        if len(text) > MAX_PASSWORD_CHARS:
            file_value.fail(f"{path}: longer than {MAX_PASSWORD_CHARS} characters (not a password)")
        password = text.strip()  # a trailing newline is not part of a password
        if not password:
            file_value.fail(f"{path} is empty")
    if password is not None and username is None:
        (password_value or file_value or value).fail("a password needs a username")
    ca = cert = key = None
    tls_value = fields.get("tls")
    if tls_value is not None:
        if not tls:
            tls_value.fail("TLS options need an mqtts:// broker URL (default port 8883)")
        tls_fields = tls_value.mapping(("ca", "cert", "key"))
        ca = None if (v := tls_fields.get("ca")) is None else readable_file(v)
        cert = None if (v := tls_fields.get("cert")) is None else readable_file(v)
        key = None if (v := tls_fields.get("key")) is None else readable_file(v)
        if (cert is None) != (key is None):
            tls_value.fail("a client certificate needs both cert and key")
    period_value = fields.get("telemetry_period")
    period = DEFAULT_TELEMETRY_PERIOD_S
    if period_value is not None:
        period = period_value.duration()
        if not 0.1 <= period <= 60.0:
            period_value.fail(
                f"{fmt(period)} s is not allowed (allowed: 0.1 s .. 60 s; the coordinator "
                "takes a station that stays silent much longer for offline)"
            )
    keyring, key_path = None, None
    key_value, insecure_value = fields.get("key_file"), fields.get("insecure")
    insecure = False if insecure_value is None else insecure_value.boolean()
    if key_value is not None:
        if insecure_value is not None and insecure:
            insecure_value.fail("insecure: true and a key_file contradict each other")
        key_path = readable_file(key_value)
        try:
            keyring = load_keyring(key_path)
        except KeyFileError as exc:
            key_value.fail(str(exc))
    elif not insecure:
        value.fail(
            "a site link needs key_file: (the site key that signs limits; `ampshare keygen "
            "FILE` makes one), or insecure: true for a lab without one (docs/mqtt.md, "
            '"Threat model")',
            f"{value.field}.key_file",
        )
    return LinkConfig(
        broker=broker,
        site=site,
        host=host,
        port=port,
        tls=tls,
        username=username,
        password=password,
        ca=ca,
        cert=cert,
        key=key,
        telemetry_period_s=period,
        keyring=keyring,
        key_file=key_path,
    )
