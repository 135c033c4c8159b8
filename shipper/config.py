"""Shipper configuration: the one path from the command line and the TOML file (``--config``) to the
settings in shipper/settings.py. It imports no runtime code.

Example::

    node = "db-host-1"                  # optional; default: the host name

    [[stream]]
    name = "db1"
    source = "/var/lib/db1/log"
    secret_file = "/etc/logship/db1.secret"
    seal = "next"                       # next | closed | immediate
    seal_settle = "1s"                  # for seal = closed where no close is seen
    seal_idle = "5s"                    # optional: also seal the newest segment idle this long
    segment_size = "16MiB"              # optional
    pattern = 'E00[0-9A-F]{8}\\.log'     # optional

    retain = true                       # optional: remove source segments every target holds
    archive_dir = "/var/lib/db1/archive" # optional: move them there instead of deleting
    truncation_lag = "1h"               # optional: keep them that long after the last target got them
    sync = "ANY 1 (standby-1:7000, dr-site:7000)"  # optional: the policy `wait` applies (default ANY 1)

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
``retain``, ``archive_dir``, ``truncation_lag``, ``retain_until``, ``sync``, ``compress``, ``rate_limit``,
``window``, ``window_max``, ``chunk_size``. A stream's or target's own table wins over the top level.

The command line is the same document: ``flags_doc()`` writes the flags given in its shape (without
``--config``, one [[stream]] table from --stream, --source, --target ...) and lays them over the
file's top level, so a flag wins over the file's top-level setting. ``from_doc()`` is the one path
from such a document to a ``ShipperConfig``; ``DEFAULTS`` holds every default it fills in.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import Any

from logship.config import (
    Check,
    ConfigError,
    checked,
    checked_flags,
    load_toml,
    parse_address,
    parse_count,
    parse_duration,
    parse_rate_or_off,
    parse_size,
    parse_size_or_auto,
    parse_switch,
    parse_text,
    read_secret,
    streams_as_list,
)
from protocol.history import History
from shipper.config_values import (
    _archive,
    _check_keys,
    _compression,
    _pattern,
    _payload_mac,
    _policy,
    _rate_limit,
    _retain_until,
    _sender,
    _source,
    _stream_name,
    _sync,
    _tls,
    _unique,
    claimed_epoch,
    load_history_file,
    seed_spooled,
)
from shipper.settings import (
    DEFAULT_ACK_TIMEOUT,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WINDOW_MAX,
    SEAL_MODES,
    ShipperConfig,
    StreamConfig,
    TargetConfig,
    default_state_dir,
)

Doc = dict[str, Any]
"""A config document: what tomllib reads from the file, or what ``flags_doc()`` makes of the flags."""

DEFAULTS: Doc = {
    "chunk_size": "auto",
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
_STREAM_KEYS |= {"seal_settle", "history", "sync"}
_STREAM_KEYS |= {"retain", "archive_dir", "truncation_lag", "seed_command", *_TLS_KEYS}
_TARGET_KEYS = {
    "address",
    "secret_file",
    "retain_until",
    "compress",
    "rate_limit",
    "payload_mac",
    *_PACING_KEYS,
    *_TLS_KEYS,
}
_TOP_KEYS = {
    "node",
    "stream",
    "ack_timeout",
    "poll_interval",
    "state_dir",
    "admin",
    "compress",
    "rate_limit",
    "payload_mac",
}
_TOP_KEYS |= {*_PACING_KEYS, *_INHERITED_KEYS, "sync"}
# Flags that name a top-level setting (the flag's dest is the setting's key); they apply with --config too.
_TOP_FLAGS = (
    "ack_timeout",
    "poll_interval",
    "state_dir",
    "admin",
    "compress",
    "rate_limit",
    "payload_mac",
    *sorted(_PACING_KEYS),
)
# The flags that describe the one stream of a command line without --config, by setting key.
_STREAM_FLAGS = {"name": "stream", **{k: k for k in ("source", "secret_file", "pattern", "seal", "seal_idle")}}
_STREAM_FLAGS |= {k: k for k in ("segment_size", "epoch", "history", "seed_command", *sorted(_TLS_KEYS))}


# The form of every value: a TOML value (or a flag's text) is parsed by its check at start, and a bad
# one is one line naming file, table and key. Keys without a check here are tables or lists.
CHECKS: dict[str, Check] = {
    **dict.fromkeys(("ack_timeout", "poll_interval", "seal_idle", "truncation_lag"), parse_duration),
    **dict.fromkeys(("window_max", "segment_size"), parse_size),
    "chunk_size": parse_size_or_auto,
    **dict.fromkeys(("node", "name", "source", "secret_file", "pattern", "address", "history"), parse_text),
    "seed_command": parse_text,
    **dict.fromkeys(("state_dir", "admin", "archive_dir", "retain_until", "compress", "sync", *_TLS_KEYS), parse_text),
    "window": parse_size_or_auto,
    "rate_limit": parse_rate_or_off,
    "epoch": parse_count,
    "retain": parse_switch,
    "seal": lambda value: parse_text(value) if value in SEAL_MODES else _policy(value, None, None),
    "seal_settle": parse_duration,
}
_FLAG_CHECKS = {**CHECKS, "stream": parse_text}  # --stream is the name; in a file, "stream" is the tables


def flags_doc(args: argparse.Namespace) -> Doc:
    """Return the flags given on the command line as a config document (flags left out are absent).

    Raises ConfigError for a bad value (naming the flag), and for stream flags beside ``--config``,
    which would otherwise be ignored without a word.
    """
    doc = checked_flags({key: getattr(args, key) for key in (*_TOP_FLAGS, *sorted(_INHERITED_KEYS))}, _FLAG_CHECKS)
    given = checked_flags({flag: getattr(args, flag) for flag in (*_STREAM_FLAGS.values(), "target")}, _FLAG_CHECKS)
    if args.config:
        if given:
            flags = ", ".join(f"--{flag.replace('_', '-')}" for flag in given)
            raise ConfigError(f"{flags}: not with --config (the file's [[stream]] tables say that)")
        return doc
    if not doc.get("retain"):
        lone = [f"--{key.replace('_', '-')}" for key in ("archive_dir", "truncation_lag") if key in doc]
        if lone:
            raise ConfigError(f"{', '.join(lone)} only apply with --retain: give --retain too, or leave them out")
    stream = {key: given[flag] for key, flag in _STREAM_FLAGS.items() if flag in given}
    stream["target"] = [{"address": address} for address in given.get("target", ())]
    doc["stream"] = [stream]
    return doc


def config_from_args(args: argparse.Namespace) -> ShipperConfig:
    """Build the configuration from ``--config`` (with the flags laid over it) or from the flags alone.

    Raises ConfigError for anything wrong, with a one-line message.
    """
    flags = flags_doc(args)
    if args.config:
        return from_doc({**streams_as_list(load_toml(args.config), args.config), **flags}, args.config)
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
    doc = checked(doc, CHECKS, where)
    top = {**DEFAULTS, **doc}
    sender = _sender(top)
    raw_streams = doc.get("stream", [])
    if not isinstance(raw_streams, list) or not raw_streams:
        raise ConfigError(f"{where}: no [[stream]] table")
    try:
        streams = tuple(_stream(raw, top, origin) for raw in raw_streams)
        state_dir_path = Path(str(doc["state_dir"])) if doc.get("state_dir") else default_state_dir()
        streams = tuple(seed_spooled(s, state_dir_path) for s in streams)
    except ConfigError as e:
        # Every error names its file: one from a check that knows no file gets the file's name here.
        if origin and not str(e).startswith(origin):
            raise ConfigError(f"{origin}: {e}") from None
        raise
    if len({s.name for s in streams}) != len(streams):
        raise ConfigError(f"{where}: a stream is named twice")
    if not any(s.retain for s in streams):
        lone = [key for key in ("archive_dir", "truncation_lag") if doc.get(key) is not None]
        if lone:
            raise ConfigError(f"{where}: {', '.join(lone)} only apply with retain = true, which no stream has")
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
    name = _stream_name(raw.get("name"), where)
    place = f"{where}: stream {name}"
    _check_keys(raw, _STREAM_KEYS, place)
    raw = checked(raw, CHECKS, place)
    stream_secret = read_secret(raw["secret_file"]) if "secret_file" in raw else None
    targets = []
    for t in raw.get("target", []):
        if not isinstance(t, dict) or "address" not in t:
            raise ConfigError(f"{where}: stream {name}: each [[stream.target]] needs an address")
        _check_keys(t, _TARGET_KEYS, f"{place} target")
        t = checked(t, CHECKS, f"{place} target {t['address']}")
        targets.append(_target(t, raw, top, stream_secret, place, origin))
    source = _source(raw.get("source"))
    retain = bool(raw.get("retain", top["retain"]))
    archive = _archive(raw.get("archive_dir", top.get("archive_dir")))
    if not retain and {"archive_dir", "truncation_lag"} & set(raw):
        raise ConfigError(f"{place}: archive_dir and truncation_lag only apply with retain = true")
    if retain and archive is not None and archive.resolve() == source.resolve():
        raise ConfigError(f"{place}: archive_dir {archive} is the source directory itself; give another directory")
    history = load_history_file(raw["history"], name) if "history" in raw else History()
    return StreamConfig(
        name=name,
        source=source,
        targets=_unique(tuple(targets), name),
        pattern=_pattern(raw.get("pattern")),
        policy=_policy(
            raw.get("seal", top["seal"]), raw.get("seal_idle"), raw.get("segment_size"), raw.get("seal_settle")
        ),
        epoch=claimed_epoch(int(raw["epoch"]) if "epoch" in raw else None, history, place)
        if "history" in raw
        else int(raw.get("epoch", top["epoch"])),
        history=history,
        poll_interval=float(top["poll_interval"]),
        retain=retain,
        archive_dir=archive if retain else None,
        truncation_lag=float(raw.get("truncation_lag", top.get("truncation_lag")) or 0.0),
        sync=_sync(raw.get("sync", top.get("sync")), targets, place),
        seed_command=str(raw["seed_command"]) if raw.get("seed_command") else None,
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
        _payload_mac(t.get("payload_mac", top.get("payload_mac", False)), where),
    )
