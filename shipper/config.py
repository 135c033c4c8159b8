"""Shipper configuration: the one path from the command line and the TOML file (``--config``) to the
settings in shipper/settings.py. It imports no runtime code.

Example::

    node = "db-host-1"                  # optional; default: the host name

    [[stream]]
    name = "db1"
    source = "/var/lib/db1/log"
    secret_file = "/etc/logship/db1.secret"
    seal = "next"                       # next | closed | immediate
    seal_settle = 1                     # seconds, for seal = closed where no close is seen
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
``state_dir`` and ``admin`` ("HOST:PORT") may be given, and defaults for every stream or target:
``retain``, ``archive_dir``, ``truncation_lag``, ``retain_until``, ``compress``, ``rate_limit``,
``window``, ``window_max``, ``chunk_size``. A stream's or target's own table wins over the top level.

The command line is the same document: ``flags_doc()`` writes the flags given in its shape (without
``--config``, one [[stream]] table from --stream, --source, --target ...) and lays them over the
file's top level, so a flag wins over the file's top-level setting. ``from_doc()`` is the one path
from such a document to a ``ShipperConfig``; ``DEFAULTS`` holds every default it fills in.
"""

from __future__ import annotations

import argparse
import re
import socket
from pathlib import Path
from typing import Any

from logship.config import (
    ConfigError,
    check_key_file,
    load_toml,
    parse_address,
    parse_duration,
    parse_rate,
    parse_size,
    read_secret,
)
from protocol.compression import Compression, parse_compression
from protocol.names import STREAM_NAME
from shipper.settings import (
    DEFAULT_ACK_TIMEOUT,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PATTERN,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_MAX,
    DEFAULT_WINDOW_MIN,
    SEAL_MODES,
    SealPolicy,
    SenderConfig,
    ShipperConfig,
    StreamConfig,
    TargetConfig,
    TlsFiles,
    default_state_dir,
)

Doc = dict[str, Any]
"""A config document: what tomllib reads from the file, or what ``flags_doc()`` makes of the flags."""

DEFAULTS: Doc = {
    "chunk_size": DEFAULT_CHUNK_SIZE,
    "window": "auto",
    "window_max": DEFAULT_WINDOW_MAX,
    "ack_timeout": DEFAULT_ACK_TIMEOUT,
    "poll_interval": DEFAULT_POLL_INTERVAL,
    "seal": "next",
    "epoch": 0,
    "retain": False,
    "retain_until": "replayed",
}
"""The default of every setting that has one besides "not set"; flags and file both fall back on it."""

_TLS_KEYS = {"tls_cert", "tls_key", "tls_ca"}
_PACING_KEYS = {"chunk_size", "window", "window_max"}
# Top-level settings a stream (or its targets) inherits unless its own table gives them.
_INHERITED_KEYS = {"retain", "archive_dir", "truncation_lag", "retain_until"}
_STREAM_KEYS = {"name", "source", "secret_file", "seal", "seal_idle", "segment_size", "pattern", "epoch", "target"}
_STREAM_KEYS |= {"seal_settle"}
_STREAM_KEYS |= {"retain", "archive_dir", "truncation_lag", *_TLS_KEYS}
_TARGET_KEYS = {"address", "secret_file", "retain_until", "compress", "rate_limit", *_PACING_KEYS, *_TLS_KEYS}
_TOP_KEYS = {"node", "stream", "ack_timeout", "poll_interval", "state_dir", "admin", "compress", "rate_limit"}
_TOP_KEYS |= {*_PACING_KEYS, *_INHERITED_KEYS}
# Flags that name a top-level setting (the flag's dest is the setting's key); they apply with --config too.
_TOP_FLAGS = ("ack_timeout", "poll_interval", "state_dir", "admin", "compress", "rate_limit", *sorted(_PACING_KEYS))
# The flags that describe the one stream of a command line without --config, by setting key.
_STREAM_FLAGS = {"name": "stream", **{k: k for k in ("source", "secret_file", "pattern", "seal", "seal_idle")}}
_STREAM_FLAGS |= {k: k for k in ("segment_size", "epoch", *sorted(_TLS_KEYS))}


def flags_doc(args: argparse.Namespace) -> Doc:
    """Return the flags given on the command line as a config document (flags left out are absent)."""
    doc = {key: value for key in (*_TOP_FLAGS, *sorted(_INHERITED_KEYS)) if (value := getattr(args, key)) is not None}
    if not args.config:
        stream = {key: value for key, flag in _STREAM_FLAGS.items() if (value := getattr(args, flag)) is not None}
        stream["target"] = [{"address": address} for address in args.target or ()]
        doc["stream"] = [stream]
    return doc


def config_from_args(args: argparse.Namespace) -> ShipperConfig:
    """Build the configuration from ``--config`` (with the flags laid over it) or from the flags alone.

    Raises ConfigError for anything wrong, with a one-line message.
    """
    flags = flags_doc(args)
    if args.config:
        return from_doc({**load_toml(args.config), **flags}, args.config)
    required = (("--stream", args.stream), ("--source", args.source), ("--target", args.target))
    missing = [flag for flag, value in (*required, ("--secret-file", args.secret_file)) if not value]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (or give --config FILE)")
    return from_doc(flags)


def state_dir_from(flag: str | None, config_path: str | None) -> Path:
    """Return the state directory a command names: the flag, else the config file's, else the default.

    Raises ConfigError if the config file cannot be read.
    """
    value = flag or (load_toml(config_path).get("state_dir") if config_path else None)
    return Path(str(value)) if value else default_state_dir()


def from_doc(doc: Doc, origin: str | None = None) -> ShipperConfig:
    """Build the configuration from a config document; ``origin`` names its file (None: the command line).

    Raises ConfigError for anything wrong, with a one-line message.
    """
    where = origin or "command line"
    _check_keys(doc, _TOP_KEYS, where)
    top = {**DEFAULTS, **doc}
    sender = _sender(top)
    raw_streams = doc.get("stream", [])
    if not isinstance(raw_streams, list) or not raw_streams:
        raise ConfigError(f"{where}: no [[stream]] table")
    streams = tuple(_stream(raw, top, origin) for raw in raw_streams)
    if len({s.name for s in streams}) != len(streams):
        raise ConfigError(f"{where}: a stream is named twice")
    state_dir, admin = doc.get("state_dir"), doc.get("admin")
    return ShipperConfig(
        str(doc.get("node", socket.gethostname())),
        streams,
        sender,
        state_dir=Path(str(state_dir)) if state_dir else default_state_dir(),
        state_dir_given=bool(state_dir),
        admin=parse_address(str(admin)) if admin else None,
    )


def _stream(raw: object, top: Doc, origin: str | None) -> StreamConfig:
    where = origin or "command line"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [[stream]] must be tables")
    name = _stream_name(raw.get("name"))
    _check_keys(raw, _STREAM_KEYS, f"{where}: stream {name}")
    stream_secret = read_secret(raw["secret_file"]) if "secret_file" in raw else None
    targets = []
    for t in raw.get("target", []):
        if not isinstance(t, dict) or "address" not in t:
            raise ConfigError(f"{where}: stream {name}: each [[stream.target]] needs an address")
        _check_keys(t, _TARGET_KEYS, f"{where}: stream {name} target")
        targets.append(_target(t, raw, top, stream_secret, f"{where}: stream {name}", origin))
    return StreamConfig(
        name=name,
        source=_source(raw.get("source")),
        targets=_unique(tuple(targets), name),
        pattern=_pattern(raw.get("pattern")),
        policy=_policy(
            raw.get("seal", top["seal"]), raw.get("seal_idle"), raw.get("segment_size"), raw.get("seal_settle")
        ),
        epoch=int(raw.get("epoch", top["epoch"])),
        poll_interval=float(top["poll_interval"]),
        retain=bool(raw.get("retain", top["retain"])),
        archive_dir=_archive(raw.get("archive_dir", top.get("archive_dir"))),
        truncation_lag=_lag(raw.get("truncation_lag", top.get("truncation_lag"))),
    )


def _target(t: Doc, stream: Doc, top: Doc, stream_secret: bytes | None, place: str, origin: str | None) -> TargetConfig:
    """Build one target from its table, inheriting what it leaves out from its stream and the top level."""
    secret = read_secret(t["secret_file"]) if "secret_file" in t else stream_secret
    if secret is None:
        raise ConfigError(f"{place}: target {t['address']} has no secret_file")
    # The command line's one TLS setting is for every target: its errors name the command line.
    where = f"{place} target {t['address']}" if origin else "command line"
    # A target's TLS table replaces the stream's as a whole: mixing the two would be surprising.
    tls_from = t if _TLS_KEYS & set(t) else stream
    own_pacing = {key: t[key] for key in _PACING_KEYS if key in t}
    return TargetConfig(
        parse_address(str(t["address"])),
        secret,
        _tls(tls_from.get("tls_cert"), tls_from.get("tls_key"), tls_from.get("tls_ca"), where),
        _sender({**top, **own_pacing}) if own_pacing else None,
        _retain_until(t.get("retain_until", top["retain_until"]), where),
        _compression(t.get("compress", top.get("compress"))),
        _rate_limit(t.get("rate_limit", top.get("rate_limit"))),
    )


def _check_keys(table: Doc, allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")


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


def _policy(seal: object, seal_idle: object, segment_size: object, seal_settle: object = None) -> SealPolicy:
    if seal not in SEAL_MODES:
        raise ConfigError(f"bad seal mode {seal!r}: expected next, closed or immediate")
    settle = 1.0 if seal_settle is None else float(seal_settle)  # type: ignore[arg-type]
    if settle < 0:
        raise ConfigError("seal settle time must not be negative")
    idle = None if seal_idle is None else float(seal_idle)  # type: ignore[arg-type]
    if idle is not None and idle < 0:
        raise ConfigError("seal idle time must not be negative")
    size = parse_size(str(segment_size)) if segment_size not in (None, "") else None
    if size == 0:
        raise ConfigError("segment size must be positive")
    return SealPolicy(str(seal), idle, size, settle)


def _sender(table: Doc) -> SenderConfig:
    """Build the pacing from a table holding chunk_size, window, window_max and ack_timeout."""
    chunk = parse_size(str(table["chunk_size"]))
    window = str(table["window"])
    adaptive = window.strip().lower() == "auto"
    win = DEFAULT_WINDOW if adaptive else parse_size(window)
    win_max = parse_size(str(table["window_max"]))
    ack_timeout = float(table["ack_timeout"])
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


def _tls(cert: object, key: object, ca: object, where: str) -> TlsFiles | None:
    """Return the TLS files of a setting, or None when no TLS setting is given.

    Raises ConfigError for a key without a certificate, or a key file others can read.
    """
    if not (cert or key or ca):
        return None
    if key and not cert:
        raise ConfigError(f"{where}: a TLS key needs a TLS certificate")
    key_path = check_key_file(str(key or cert)) if cert else None
    return TlsFiles(Path(str(cert)) if cert else None, key_path, Path(str(ca)) if ca else None)


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
