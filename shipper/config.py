"""Shipper settings: the one-stream command line, or a TOML file (``--config``) for many streams.

Example::

    node = "db-host-1"                  # optional; default: the host name

    [[stream]]
    name = "db1"
    source = "/var/lib/db1/log"
    secret_file = "/etc/logship/db1.secret"
    seal = "next"                       # next | immediate
    seal_idle = 5                       # seconds, optional
    segment_size = "16MiB"              # optional
    pattern = 'E00[0-9A-F]{8}\\.log'     # optional

    retain = true                       # optional: remove source segments every target holds
    archive_dir = "/var/lib/db1/archive" # optional: move them there instead of deleting
    truncation_lag = "1h"               # optional: keep them that long after the last target got them

    [[stream.target]]
    address = "standby-1:7000"
    window = "64MiB"                    # optional, overrides the top-level window / chunk_size
    retain_until = "durable"            # replayed (default) | durable: what retention waits for here

    [[stream.target]]
    address = "dr-site:7000"
    secret_file = "/etc/logship/db1-dr.secret"   # optional, overrides the stream's
    tls_ca = "/etc/logship/dr-ca.pem"            # TLS; the receiver's certificate must be signed by it
    tls_cert = "/etc/logship/shipper.pem"        # optional client certificate (when the receiver asks)
    tls_key = "/etc/logship/shipper.key"         # its key (mode 0600), if not in tls_cert

TLS settings may also sit in the [[stream]] table, for every target of that stream. At the top level,
``state_dir`` and ``admin`` ("HOST:PORT") may be given (the command-line flags win).
"""

from __future__ import annotations

import argparse
import re
import socket
import ssl
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from logship.config import (
    ConfigError,
    check_key_file,
    parse_address,
    parse_duration,
    parse_rate,
    parse_size,
    read_secret,
)
from logship.tls import client_tls_context
from protocol.compression import Compression, parse_compression
from protocol.names import STREAM_NAME
from shipper.sender import DEFAULT_WINDOW, DEFAULT_WINDOW_MIN, SenderConfig
from shipper.state import default_state_dir
from shipper.tailer import DEFAULT_PATTERN, SealPolicy


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """One receiver a stream is shipped to."""

    address: tuple[str, int]
    """Host and port of the receiver."""
    secret: bytes
    """Secret proven to this target."""
    tls: ssl.SSLContext | None = None
    """TLS towards this target (verifying its certificate); None: plain TCP."""
    sender: SenderConfig | None = None
    """This target's own pacing (window, chunk size); None: the shipper's."""
    wait_for_replay: bool = True
    """Whether retention waits until the target replayed a segment, not only until it holds it durably."""
    compression: Compression | None = None
    """Compress DATA payloads towards this target (if it supports the encoding); None: never."""
    rate_limit: float | None = None
    """Most bytes per second on the wire towards this target; None: no limit."""

    @property
    def name(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """One stream a shipper ships."""

    name: str
    """Stream name, as the receivers know it."""
    source: Path
    """Directory holding the stream's segments."""
    targets: tuple[TargetConfig, ...]
    """Receivers to ship to, each with its own connection and cursor."""
    pattern: re.Pattern[str]
    """Which file names are segments."""
    policy: SealPolicy
    """When a segment is complete."""
    epoch: int = 0
    """Epoch this shipper claims; a target activated at a newer epoch fences it."""
    poll_interval: float = 0.02
    """Seconds between looks at the source directory."""
    retain: bool = False
    """Remove source segments once every target holds them (see shipper/retainer.py)."""
    archive_dir: Path | None = None
    """With ``retain``: move removed segments here instead of deleting them."""
    truncation_lag: float = 0.0
    """With ``retain``: seconds to keep a segment after the last target got it."""


@dataclass(frozen=True, slots=True)
class ShipperConfig:
    """Everything a shipper process runs."""

    node: str
    """Our name in handshakes and logs."""
    streams: tuple[StreamConfig, ...]
    """The streams to ship."""
    sender: SenderConfig
    """Pacing of every sender."""
    state_dir: Path = field(default_factory=default_state_dir)
    """Suspended targets and the control socket live here."""
    state_dir_given: bool = False
    """Whether the operator chose ``state_dir`` (then a busy one is an error, not a warning)."""
    admin: tuple[str, int] | None = None
    """Where to serve /status and /metrics over HTTP; None: not at all."""


def _stream_name(name: object) -> str:
    if not isinstance(name, str) or not STREAM_NAME.fullmatch(name):
        raise ConfigError(f"bad stream name {name!r}: expected [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}")
    return name


def _source(path: object) -> Path:
    source = Path(str(path))
    if not source.is_dir():
        raise ConfigError(f"source directory {source} does not exist or is not a directory")
    return source


def _pattern(text: object) -> re.Pattern[str]:
    try:
        return re.compile(str(text) if text else DEFAULT_PATTERN)
    except re.error as e:
        raise ConfigError(f"bad pattern {text!r}: {e}") from None


def _policy(seal: object, seal_idle: object, segment_size: object) -> SealPolicy:
    if seal not in ("next", "immediate"):
        raise ConfigError(f"bad seal mode {seal!r}: expected next or immediate")
    idle = None if seal_idle is None else float(seal_idle)  # type: ignore[arg-type]
    if idle is not None and idle < 0:
        raise ConfigError("seal idle time must not be negative")
    size = parse_size(str(segment_size)) if segment_size not in (None, "") else None
    if size == 0:
        raise ConfigError("segment size must be positive")
    return SealPolicy(str(seal), idle, size)


def _sender(chunk_size: str, window: str, ack_timeout: float = 30.0, window_max: str = "64MiB") -> SenderConfig:
    chunk = parse_size(chunk_size)
    adaptive = window.strip().lower() == "auto"
    win = DEFAULT_WINDOW if adaptive else parse_size(window)
    win_max = parse_size(window_max)
    if not 0 < chunk <= 4 << 20:
        raise ConfigError("chunk size must be between 1 byte and 4MiB")
    if win < chunk:
        raise ConfigError("window must be at least the chunk size")
    if adaptive and win_max < chunk:
        raise ConfigError("window maximum must be at least the chunk size")
    if not 0.5 <= ack_timeout <= 3600:
        raise ConfigError("ack timeout must be between 0.5 and 3600 seconds")
    # Heartbeats must come often enough that a quiet but healthy link never hits the ack timeout (a
    # third of it), and no more often than that: with 1000 idle streams, heartbeats every 5 s were the
    # largest part of the shipper's idle CPU (scripts/bench scale).
    heartbeat = min(10.0, ack_timeout / 3)
    return SenderConfig(
        chunk_size=chunk,
        window=min(win, win_max) if adaptive else win,
        adaptive=adaptive,
        window_min=min(DEFAULT_WINDOW_MIN, win_max),
        window_max=win_max,
        ack_timeout=ack_timeout,
        heartbeat=heartbeat,
    )


def _tls(cert: object, key: object, ca: object, where: str) -> ssl.SSLContext | None:
    """Build a client TLS context, or None when no TLS setting is given.

    Raises ConfigError for a key without a certificate or a file that cannot be loaded.
    """
    if not (cert or key or ca):
        return None
    if key and not cert:
        raise ConfigError(f"{where}: a TLS key needs a TLS certificate")
    key_path = check_key_file(str(key or cert)) if cert else None
    return client_tls_context(
        Path(str(cert)) if cert else None,
        key_path,
        Path(str(ca)) if ca else None,
    )


def _retain_until(value: object, where: str) -> bool:
    if value not in ("replayed", "durable"):
        raise ConfigError(f"{where}: retain_until must be replayed or durable, not {value!r}")
    return value == "replayed"


def _archive(value: object) -> Path | None:
    if not value:
        return None
    path = Path(str(value))
    if not path.is_dir():
        raise ConfigError(f"archive directory {path} does not exist or is not a directory")
    return path


def _lag(value: object) -> float:
    return parse_duration(str(value)) if value not in (None, "") else 0.0


def _common(config: ShipperConfig, doc: dict[str, Any], args: argparse.Namespace) -> ShipperConfig:
    """Add the settings the flags and the file share: state directory and admin address."""
    state_dir = getattr(args, "state_dir", None) or doc.get("state_dir")
    admin = getattr(args, "admin", None) or doc.get("admin")
    return replace(
        config,
        state_dir=Path(str(state_dir)) if state_dir else default_state_dir(),
        state_dir_given=bool(state_dir),
        admin=parse_address(str(admin)) if admin else None,
    )


def _compression(text: object) -> Compression | None:
    if text in (None, ""):
        return None
    try:
        return parse_compression(str(text))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _rate_limit(text: object) -> float | None:
    if text in (None, "", "none", "off"):
        return None
    return parse_rate(str(text))


def _unique(targets: tuple[TargetConfig, ...], stream: str) -> tuple[TargetConfig, ...]:
    if len({t.address for t in targets}) != len(targets):
        raise ConfigError(f"stream {stream}: the same target is given twice")
    if not targets:
        raise ConfigError(f"stream {stream}: no target")
    return targets


def config_from_args(args: argparse.Namespace) -> ShipperConfig:
    """Build the configuration from ``--config`` or from the one-stream flags.

    Raises ConfigError for anything wrong, with a one-line message.
    """
    if args.config:
        return config_from_file(args.config, args)
    missing = [
        f
        for f, v in (
            ("--stream", args.stream),
            ("--source", args.source),
            ("--target", args.target),
            ("--secret-file", args.secret_file),
        )
        if not v
    ]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (or give --config FILE)")
    name = _stream_name(args.stream)
    source = _source(args.source)
    secret = read_secret(args.secret_file)
    tls = _tls(args.tls_cert, args.tls_key, args.tls_ca, "command line")
    wait_for_replay = _retain_until(getattr(args, "retain_until", "replayed"), "--retain-until")
    compression = _compression(getattr(args, "compress", None))
    rate_limit = _rate_limit(getattr(args, "rate_limit", None))
    targets = _unique(
        tuple(
            TargetConfig(
                parse_address(t),
                secret,
                tls,
                wait_for_replay=wait_for_replay,
                compression=compression,
                rate_limit=rate_limit,
            )
            for t in args.target
        ),
        name,
    )
    stream = StreamConfig(
        name=name,
        source=source,
        targets=targets,
        pattern=_pattern(args.pattern),
        policy=_policy(args.seal, args.seal_idle, args.segment_size),
        epoch=args.epoch,
        poll_interval=args.poll_interval,
        retain=bool(getattr(args, "retain", False)),
        archive_dir=_archive(getattr(args, "archive_dir", None)),
        truncation_lag=_lag(getattr(args, "truncation_lag", None)),
    )
    sender = _sender(args.chunk_size, args.window, args.ack_timeout, getattr(args, "window_max", "64MiB"))
    config = ShipperConfig(socket.gethostname(), (stream,), sender)
    return _common(config, {}, args)


_TLS_KEYS = {"tls_cert", "tls_key", "tls_ca"}
_STREAM_KEYS = {
    "name",
    "source",
    "secret_file",
    "seal",
    "seal_idle",
    "segment_size",
    "pattern",
    "epoch",
    "target",
    "retain",
    "archive_dir",
    "truncation_lag",
    *_TLS_KEYS,
}
_TARGET_KEYS = {
    "address",
    "secret_file",
    "window",
    "window_max",
    "chunk_size",
    "retain_until",
    "compress",
    "rate_limit",
    *_TLS_KEYS,
}
_TOP_KEYS = {
    "node",
    "stream",
    "chunk_size",
    "window",
    "window_max",
    "ack_timeout",
    "poll_interval",
    "state_dir",
    "admin",
    "compress",
    "rate_limit",
}


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")


def config_from_file(path: str, args: argparse.Namespace) -> ShipperConfig:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    _check_keys(doc, _TOP_KEYS, path)
    poll = float(doc.get("poll_interval", args.poll_interval))
    chunk_size = str(doc.get("chunk_size", args.chunk_size))
    window = str(doc.get("window", args.window))
    ack_timeout = float(doc.get("ack_timeout", args.ack_timeout))
    window_max = str(doc.get("window_max", getattr(args, "window_max", "64MiB")))
    sender = _sender(chunk_size, window, ack_timeout, window_max)
    compress = doc.get("compress", getattr(args, "compress", None))
    rate_limit = doc.get("rate_limit", getattr(args, "rate_limit", None))
    streams: list[StreamConfig] = []
    raw_streams = doc.get("stream", [])
    if not isinstance(raw_streams, list) or not raw_streams:
        raise ConfigError(f"{path}: no [[stream]] table")
    for raw in raw_streams:
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: [[stream]] must be tables")
        name = _stream_name(raw.get("name"))
        _check_keys(raw, _STREAM_KEYS, f"{path}: stream {name}")
        stream_secret = read_secret(raw["secret_file"]) if "secret_file" in raw else None
        targets = []
        for t in raw.get("target", []):
            if not isinstance(t, dict) or "address" not in t:
                raise ConfigError(f"{path}: stream {name}: each [[stream.target]] needs an address")
            _check_keys(t, _TARGET_KEYS, f"{path}: stream {name} target")
            secret = read_secret(t["secret_file"]) if "secret_file" in t else stream_secret
            if secret is None:
                raise ConfigError(f"{path}: stream {name}: target {t['address']} has no secret_file")
            # A target's TLS table replaces the stream's as a whole: mixing the two would be surprising.
            tls_from = t if _TLS_KEYS & set(t) else raw
            tls = _tls(
                tls_from.get("tls_cert"),
                tls_from.get("tls_key"),
                tls_from.get("tls_ca"),
                f"{path}: stream {name} target {t['address']}",
            )
            where = f"{path}: stream {name} target {t['address']}"
            own_sender = (
                _sender(
                    str(t.get("chunk_size", chunk_size)),
                    str(t.get("window", window)),
                    ack_timeout,
                    str(t.get("window_max", window_max)),
                )
                if "window" in t or "chunk_size" in t or "window_max" in t
                else None
            )
            wait_for_replay = _retain_until(t.get("retain_until", getattr(args, "retain_until", "replayed")), where)
            targets.append(
                TargetConfig(
                    parse_address(str(t["address"])),
                    secret,
                    tls,
                    own_sender,
                    wait_for_replay,
                    _compression(t.get("compress", compress)),
                    _rate_limit(t.get("rate_limit", rate_limit)),
                )
            )
        streams.append(
            StreamConfig(
                name=name,
                source=_source(raw.get("source")),
                targets=_unique(tuple(targets), name),
                pattern=_pattern(raw.get("pattern")),
                policy=_policy(raw.get("seal", "next"), raw.get("seal_idle"), raw.get("segment_size")),
                epoch=int(raw.get("epoch", 0)),
                poll_interval=poll,
                retain=bool(raw.get("retain", getattr(args, "retain", False))),
                archive_dir=_archive(raw.get("archive_dir", getattr(args, "archive_dir", None))),
                truncation_lag=_lag(raw.get("truncation_lag", getattr(args, "truncation_lag", None))),
            )
        )
    if len({s.name for s in streams}) != len(streams):
        raise ConfigError(f"{path}: a stream is named twice")
    config = ShipperConfig(str(doc.get("node", socket.gethostname())), tuple(streams), sender)
    return _common(config, doc, args)
