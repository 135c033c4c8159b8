"""Checks of single shipper settings (names, paths, pacing, TLS files, retention): each turns one
TOML or flag value into its settings type or raises a one-line ConfigError. Imports no runtime code."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

from logship.config import (
    ConfigError,
    check_key_file,
    parse_duration,
    parse_size,
)
from protocol.compression import Compression, parse_compression
from protocol.errors import ProtocolError
from protocol.history import History
from protocol.names import check_stream_name
from shipper.policy import PolicyError, parse_policy, resolve
from shipper.settings import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PATTERN,
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_MIN,
    LARGE_CHUNK_SIZE,
    SEAL_MODES,
    SealPolicy,
    SenderConfig,
    StreamConfig,
    TargetConfig,
    TlsFiles,
)

Doc = dict[str, Any]


def _payload_mac(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: payload_mac must be true or false, not {value!r}")
    return value


def _check_keys(table: Doc, allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")


def _stream_name(name: object, where: str) -> str:
    try:
        return check_stream_name(name)
    except ProtocolError:
        # The wire's rule (check_stream_name) and no looser one: a name refused there is refused here.
        raise ConfigError(
            f"{where}: bad stream name {name!r}: expected [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}} without '..'"
        ) from None


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
    settle = 1.0 if seal_settle is None else parse_duration(seal_settle)  # type: ignore[arg-type]
    idle = None if seal_idle is None else parse_duration(seal_idle)  # type: ignore[arg-type]
    size = parse_size(str(segment_size)) if segment_size not in (None, "") else None
    if size == 0:
        raise ConfigError("segment size must be positive")
    return SealPolicy(str(seal), idle, size, settle)


def auto_chunk_size(smallest_window: int) -> int:
    """The chunk size where none is given: half the smallest window the sender may use, between 1 MiB
    and 4 MiB, and never more than that window.

    Why: a larger chunk costs less CPU per GiB on both sides (fewer frames, digests started, ACKs and
    group commits; 4 MiB against 1 MiB: shipper 0.71x, receiver 0.91x, scripts/benchmarks/fixes.md),
    but a window that holds one chunk only idles the link for a round trip per chunk: half the
    window keeps two chunks in flight.
    """
    return min(smallest_window, max(DEFAULT_CHUNK_SIZE, min(LARGE_CHUNK_SIZE, smallest_window // 2)))


def _sender(table: Doc) -> SenderConfig:
    """Build the pacing from a table holding chunk_size, window, window_max and ack_timeout."""
    window = str(table["window"])
    adaptive = window.strip().lower() == "auto"
    win = DEFAULT_WINDOW if adaptive else parse_size(window)
    win_max = parse_size(str(table["window_max"]))
    window_min = min(DEFAULT_WINDOW_MIN, win_max)
    given = str(table["chunk_size"])
    chunk = auto_chunk_size(window_min if adaptive else win) if given.strip().lower() == "auto" else parse_size(given)
    ack_timeout = parse_duration(table["ack_timeout"])
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
        window_min=window_min,
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


def _compression(text: object) -> Compression | None:
    if text in (None, ""):
        return None
    try:
        return parse_compression(str(text))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _rate_limit(value: object) -> float | None:
    return None if value in (None, "off") else float(value)  # type: ignore[arg-type]


def _unique(targets: tuple[TargetConfig, ...], stream: str) -> tuple[TargetConfig, ...]:
    # Two spellings of one address too (``LOCALHOST:5000``, ``localhost:5000``, ``127.0.0.1:5000``):
    # one stream shipped twice to one receiver would only take the stream from itself (issue 13).
    if len({same_address(t.address) for t in targets}) != len(targets):
        raise ConfigError(f"stream {stream}: the same target is given twice (one receiver, one stream)")
    if not targets:
        raise ConfigError(f"stream {stream}: no target")
    return targets


def same_address(address: tuple[str, int]) -> tuple[str, int]:
    """Return ``address`` spelt one way: host name in lower case, an IP address in its short form,
    ``localhost`` as 127.0.0.1 (the receiver listens there). No DNS lookup."""
    host = address[0].strip("[]").lower().rstrip(".")
    if host == "localhost":
        host = "127.0.0.1"
    with contextlib.suppress(ValueError):
        host = str(ipaddress.ip_address(host))
    return host, address[1]


def load_history_file(path: str, stream: str) -> History:
    """Read a history file (receiver/history_file.py writes it). Raises ConfigError, one line."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read history file {path}: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(f"history file {path} is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"history file {path} is not a JSON object")
    if doc.get("stream", stream) != stream:
        raise ConfigError(f"history file {path} is the history of stream {doc['stream']!r}, not {stream!r}")
    try:
        return History.from_json(doc.get("history", []))
    except ValueError as e:
        raise ConfigError(f"history file {path}: {e}") from None


def claimed_epoch(epoch: int | None, history: History, where: str) -> int:
    """The epoch to claim: the history's, or a newer one given; an older one given is an error."""
    if epoch is None:
        return history.epoch
    if epoch < history.epoch:
        raise ConfigError(f"{where}: epoch {epoch} is older than the history's epoch {history.epoch}")
    return epoch


def _sync(value: object, targets: list[TargetConfig], where: str) -> str | None:
    """Check a stream's ``sync`` policy against its targets; return its text (None: not set)."""
    if value is None:
        return None
    try:
        resolve(parse_policy(str(value)), [t.name for t in targets])
    except PolicyError as e:
        raise ConfigError(f"{where}: sync: {e}") from None
    return str(value)


def seed_spooled(stream: StreamConfig, state_dir: Path) -> StreamConfig:
    """Return ``stream`` with its reseed directory under the state dir (issue 17): its spooled images
    (with a ``seed_command``) and its source's floor."""
    return dataclasses.replace(stream, seed_dir=state_dir / "seed" / stream.name)
