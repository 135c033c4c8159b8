"""Receiver settings: command-line flags, optionally a TOML file (``--config``) with per-stream tables.

Example::

    listen = "0.0.0.0:7000"
    data_dir = "/var/lib/logship"
    secret_file = "/etc/logship/default.secret"   # streams without their own secret

    replay = "directory"                          # directory | command (default directory)
    replay_lag = "0"                              # e.g. "90s", "1h30m": replay only segments installed that long ago
    idle_timeout = "60s"                          # every time setting takes the same durations (250ms, 1h30m)
    tls_cert = "/etc/logship/receiver.pem"        # optional: TLS with this certificate
    tls_key = "/etc/logship/receiver.key"         # its key (mode 0600), if not in tls_cert
    tls_ca = "/etc/logship/shippers-ca.pem"       # optional: shippers must present a certificate it signed
    max_unauthenticated = 64                      # connections still in their handshake, at most
    min_free = "64MiB"                            # or "1%": below it the receiver takes no more bytes
    no_rewind = false                             # true: refuse a shipper whose history needs a rewind here

    [streams.db1]
    secret_file = "/etc/logship/db1.secret"       # only this secret may write db1
    replay = "command"                            # per-stream replay settings override the ones above
    replay_command = "my-apply {path}"            # {path}, {name}, {stream} placeholders
    inspect_cmd = "my-check"                      # gets the segment path; non-zero exit vetoes
    replay_lag = "24h"
    replay_rerun = "never"                        # never | safe: may an interrupted replay command run again?
    replay_recover_command = "my-resume {path}"   # run after an interrupted replay instead (optional)

Flags given on the command line win over the file.
"""

from __future__ import annotations

import argparse
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from logship.config import (
    Check,
    ConfigError,
    check_key_file,
    checked,
    checked_flags,
    load_toml,
    parse_address,
    parse_count,
    parse_duration,
    parse_size,
    parse_switch,
    parse_text,
    read_secret,
    streams_by_name,
)
from protocol.errors import ProtocolError
from protocol.limits import DEFAULT_MAX_PAYLOAD
from protocol.names import check_stream_name
from receiver.replay_config import REPLAY_CHECKS, REPLAY_KEYS, ReplaySettings, as_table, replay_from_doc
from receiver.replay_config import REPLAY_MODES as REPLAY_MODES  # re-exported: older imports name this module
from receiver.replay_config import REPLAY_RERUN as REPLAY_RERUN
from receiver.replay_config import add_replay_flags as add_replay_flags
from receiver.replay_config import replay_flags as replay_flags
from receiver.replay_config import replay_settings as replay_settings
from receiver.retention_config import RETENTION_CHECKS, RETENTION_KEYS, RetentionSettings, retention_from_doc
from receiver.space_config import MinFree, parse_min_free

_TEXT_KEYS = ("listen", "data_dir", "secret_file", "admin", "tls_cert", "tls_key", "tls_ca")
# The form of every value: each is parsed at start, and a bad one is one line naming file, table and key.
CHECKS: dict[str, Check] = {
    **REPLAY_CHECKS,
    **RETENTION_CHECKS,
    **dict.fromkeys(("idle_timeout", "handshake_timeout"), parse_duration),
    **dict.fromkeys(_TEXT_KEYS, parse_text),
    "max_unauthenticated": parse_count,
    "no_rewind": parse_switch,
    "max_payload": parse_size,
    "min_free": parse_min_free,
}


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The receiver's TLS material, checked but not loaded (the daemon builds its context from it)."""

    cert: Path
    """The receiver's certificate (PEM; may hold the key too)."""
    key: Path
    """Its private key (the certificate file itself when the key is in it)."""
    ca: Path | None = None
    """With a CA, every shipper must present a client certificate it signed."""


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Settings of one stream at this receiver."""

    secret: bytes | None = None
    """The stream's own secret; None means the receiver's default secret applies."""
    replay: ReplaySettings | None = None
    """The stream's own replay settings; None means the receiver's defaults apply."""
    retention: RetentionSettings | None = None
    """The stream's own standby retention settings; None means the receiver's defaults apply."""


@dataclass(frozen=True, slots=True)
class ReceiverSettings:
    """Everything a receiver process needs to start."""

    listen: tuple[str, int]
    """Address to listen on."""
    data_dir: Path
    """Root of the copies."""
    default_secret: bytes | None = None
    """Secret for streams without one of their own; None: only configured streams are served."""
    streams: dict[str, StreamSettings] = field(default_factory=dict)
    """Per-stream settings from the config file."""
    max_payload: int = DEFAULT_MAX_PAYLOAD
    """Largest DATA payload accepted."""
    idle_timeout: float = 60.0
    """Seconds of silence after which a shipper is dropped."""
    replay: ReplaySettings = field(default_factory=ReplaySettings)
    """Replay settings of streams without their own."""
    admin: tuple[str, int] | None = None
    """Address of the admin HTTP endpoint (/status, /metrics); None: off."""

    def replay_for(self, stream: str) -> ReplaySettings:
        """Return how ``stream`` is replayed."""
        own = self.streams.get(stream)
        settings = own.replay if own is not None and own.replay is not None else self.replay
        return replace(settings, min_free=self.min_free)

    retention: RetentionSettings = field(default_factory=RetentionSettings)
    """Standby retention of streams without their own (receiver/retention_config.py)."""

    def retention_for(self, stream: str) -> RetentionSettings:
        """Return when ``stream``'s replayed segments may leave the standby's disk."""
        own = self.streams.get(stream)
        return own.retention if own is not None and own.retention is not None else self.retention

    handshake_timeout: float = 10.0
    """Seconds a new connection has to finish TLS and prove a stream's secret."""
    max_unauthenticated: int = 64
    """Connections still in their handshake, at most; more are closed at once."""
    tls: TlsFiles | None = None
    """TLS for every connection; None: plain TCP."""
    min_free: MinFree = field(default_factory=MinFree)
    """Free space the data dir keeps: below it no more bytes are accepted (receiver/space.py)."""
    no_rewind: bool = False
    """Refuse a shipper whose history needs a copy rewound (``no_rewind`` / --no-rewind)."""

    def secret_for(self, stream: str) -> bytes | None:
        """Return the secret a shipper must prove for ``stream``, or None if it is not served here."""
        own = self.streams.get(stream)
        if own is not None and own.secret is not None:
            return own.secret
        return self.default_secret


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Settings of one running receiver server, as the daemon wires them."""

    data_dir: Path
    """Root of the copies: DIR/<stream>/log, incoming, quarantine, state.json."""
    secret_for: Callable[[str], bytes | None]
    """The shared secret of a stream, or None if this receiver does not serve it."""
    node: str = socket.gethostname()
    """Our name in the handshake and in logs."""
    max_payload: int = DEFAULT_MAX_PAYLOAD
    """Largest DATA payload accepted, in bytes."""
    handshake_timeout: float = 10.0
    """Seconds a new connection has to prove itself."""
    idle_timeout: float = 60.0
    """Seconds of silence after which a shipper is dropped (shippers heartbeat every few seconds)."""
    max_pending: int = 32 * 1024 * 1024
    """Bytes accepted but not yet durable per stream before we stop reading from its connection."""
    replay_for: Callable[[str], ReplaySettings] = lambda stream: ReplaySettings()
    """How each stream is replayed into its standby replica."""
    max_unauthenticated: int = 64
    """Connections still in their handshake, at most; more are closed at once, so that a flood of
    silent or hostile peers cannot exhaust memory or file descriptors while real shippers wait."""
    tls: ssl.SSLContext | None = None
    """TLS for every connection (client certificates required if it has a CA); None: plain TCP."""
    no_rewind: bool = False
    """Refuse a shipper whose history needs this copy rewound, instead of rewinding (--no-rewind)."""
    min_free: MinFree = field(default_factory=MinFree)
    """Free space the data dir keeps: below it shippers are told to back off (receiver/space.py)."""
    seed_install: str | None = None
    """Shell command installing a verified base image (--seed-install-command); None: unpack into base/."""
    retention_for: Callable[[str], RetentionSettings] = lambda stream: RetentionSettings()
    """When each stream's replayed segments may leave log/ and replica/ (receiver/retention.py)."""


def settings_from_args(args: argparse.Namespace) -> ReceiverSettings:
    """Merge ``--config`` (if any) with the flags; flags win.

    Raises ConfigError for anything wrong.
    """
    origin = getattr(args, "config", None) or "config file"
    doc: dict[str, Any] = streams_by_name(load_toml(origin), origin) if getattr(args, "config", None) else {}
    known = {
        "listen",
        "data_dir",
        "secret_file",
        "max_payload",
        "idle_timeout",
        "handshake_timeout",
        "max_unauthenticated",
        "tls_cert",
        "tls_key",
        "tls_ca",
        "streams",
        "admin",
        "min_free",
        "no_rewind",
        *REPLAY_KEYS,
        *RETENTION_KEYS,
    }
    unknown = set(doc) - known
    if unknown:
        raise ConfigError(f"{origin}: unknown setting(s) {', '.join(sorted(unknown))}")
    flags = checked_flags({key: getattr(args, key, None) for key in known - {"streams"}}, CHECKS)
    doc = {**checked(doc, CHECKS, origin), **flags}
    listen = doc.get("listen")
    if not listen:
        raise ConfigError("no listen address: give --listen HOST:PORT or listen in the config file")
    data_dir = doc.get("data_dir")
    if not data_dir:
        raise ConfigError("no data directory: give --data-dir DIR or data_dir in the config file")
    secret_file = doc.get("secret_file")
    default_secret = read_secret(secret_file) if secret_file else None
    default_replay, own_replay = replay_from_doc(doc, args, origin)
    default_retention, own_retention = retention_from_doc(doc, args, origin)
    streams: dict[str, StreamSettings] = {}
    for name, raw in as_table(doc.get("streams", {}), f"{origin}: streams").items():
        _stream_name(name, origin)
        table = as_table(raw, f"{origin}: streams.{name}")
        extra = set(table) - {"secret_file", *REPLAY_KEYS, *RETENTION_KEYS}
        if extra:
            raise ConfigError(f"{origin}: streams.{name}: unknown setting(s) {', '.join(sorted(extra))}")
        table = checked(table, CHECKS, f"{origin}: streams.{name}")
        secret = read_secret(table["secret_file"]) if "secret_file" in table else None
        streams[name] = StreamSettings(secret=secret, replay=own_replay.get(name), retention=own_retention.get(name))
    if default_secret is None and not any(s.secret for s in streams.values()):
        raise ConfigError("no secret: give --secret-file FILE, or secret_file in the config file")
    max_payload = doc.get("max_payload", DEFAULT_MAX_PAYLOAD)
    idle = doc.get("idle_timeout", 60.0)
    admin = doc.get("admin")
    handshake = doc.get("handshake_timeout", 10.0)
    cap = doc.get("max_unauthenticated", 64)
    if idle <= 0 or handshake <= 0:
        raise ConfigError("timeouts must be positive")
    if cap < 1:
        raise ConfigError("max_unauthenticated must be at least 1")
    return ReceiverSettings(
        listen=parse_address(str(listen)),
        data_dir=Path(data_dir),
        default_secret=default_secret,
        streams=streams,
        max_payload=max_payload,
        idle_timeout=idle,
        replay=default_replay,
        retention=default_retention,
        admin=parse_address(str(admin)) if admin else None,
        handshake_timeout=handshake,
        max_unauthenticated=cap,
        tls=_tls(doc),
        min_free=doc.get("min_free", MinFree()),
        no_rewind=bool(doc.get("no_rewind", False)),
    )


def _stream_name(name: str, origin: str) -> str:
    try:
        return check_stream_name(name)
    except ProtocolError:
        # The wire's rule (check_stream_name) and no looser one: a name refused there is refused here.
        raise ConfigError(
            f"{origin}: bad stream name {name!r}: expected [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}} without '..'"
        ) from None


def _tls(doc: dict[str, Any]) -> TlsFiles | None:
    """Return the TLS files of --tls-cert/--tls-key/--tls-ca (or the file); None without a certificate.

    Raises ConfigError for a CA or key without a certificate, or a key file others may read.
    """
    cert, key, ca = doc.get("tls_cert"), doc.get("tls_key"), doc.get("tls_ca")
    if not cert:
        if key or ca:
            raise ConfigError("TLS: --tls-key and --tls-ca need --tls-cert (the receiver's certificate)")
        return None
    key_path = check_key_file(str(key)) if key else check_key_file(str(cert))
    return TlsFiles(Path(str(cert)), key_path, Path(str(ca)) if ca else None)
