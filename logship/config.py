"""Parsing helpers shared by both command lines: addresses, sizes, durations, rates, secret and key
files. No I/O beyond reading the file the caller names."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A setting is wrong; the message is one line fit for stderr."""


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML config file.

    Raises ConfigError with a one-line message when it is missing or malformed.
    """
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}") from None


def _stream_tables(doc: dict[str, Any], origin: str) -> dict[str, dict[str, Any]] | None:
    """Return the file's streams by name, from either shape, or None if it has no stream tables.

    Both daemons' files take ``[streams.NAME]`` (the documented shape) and, as older shipper files
    have it, ``[[stream]]`` tables with ``name = "NAME"``; one file uses one shape.
    """
    listed, named = doc.get("stream"), doc.get("streams")
    if listed is not None and named is not None:
        raise ConfigError(f"{origin}: both [[stream]] and [streams.NAME] tables: use [streams.NAME] only")
    if named is not None:
        if not isinstance(named, dict) or not all(isinstance(t, dict) for t in named.values()):
            raise ConfigError(f"{origin}: streams must be tables: [streams.NAME]")
        return {str(name): dict(table) for name, table in named.items()}
    if listed is None:
        return None
    if not isinstance(listed, list) or not all(isinstance(t, dict) for t in listed):
        raise ConfigError(f"{origin}: [[stream]] must be tables (or write [streams.NAME])")
    out: dict[str, dict[str, Any]] = {}
    for table in listed:
        name = table.get("name")
        if not isinstance(name, str):
            raise ConfigError(f'{origin}: a [[stream]] table has no name = "..." (or write [streams.NAME])')
        if name in out:
            raise ConfigError(f"{origin}: stream {name} is configured twice")
        out[name] = {k: v for k, v in table.items() if k != "name"}
    return out


def streams_by_name(doc: dict[str, Any], origin: str) -> dict[str, Any]:
    """Return ``doc`` with its stream tables, of either shape, as ``streams = {NAME: table}``."""
    tables = _stream_tables(doc, origin)
    rest = {k: v for k, v in doc.items() if k not in ("stream", "streams")}
    return rest if tables is None else {**rest, "streams": tables}


def streams_as_list(doc: dict[str, Any], origin: str) -> dict[str, Any]:
    """Return ``doc`` with its stream tables, of either shape, as ``stream = [{name = NAME, ...}]``."""
    tables = _stream_tables(doc, origin)
    rest = {k: v for k, v in doc.items() if k not in ("stream", "streams")}
    return rest if tables is None else {**rest, "stream": [{"name": n, **t} for n, t in tables.items()]}


def parse_address(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6).

    Raises ConfigError if it is not of that form or the port is out of range.
    """
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\s:\[\]]+):(\d{1,5})", text)
    if not m:
        raise ConfigError(f"bad address {text!r}: expected HOST:PORT")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise ConfigError(f"bad address {text!r}: port out of range")
    return host, port


_SIZE = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}


def parse_size(text: str | int) -> int:
    """Parse a byte count such as ``4096``, ``64k``, ``16MiB`` (a TOML integer is bytes).

    Raises ConfigError for anything else, negatives and booleans included.
    """
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ConfigError(f"bad size {text!r}: expected e.g. 4096, 64k, 16MiB")
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"bad size {text!r}: must be >= 0")
        return text
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _SIZE:
        raise ConfigError(f"bad size {text!r}: expected e.g. 4096, 64k, 16MiB")
    return int(m.group(1)) * _SIZE[m.group(2).lower()]


_DURATION_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
DURATION_FORM = "e.g. 0, 250ms, 5s, 90s, 15m, 1h30m, 1.5d (a bare number is seconds)"


def parse_duration(text: str | int | float) -> float:
    """Parse a duration: ``250ms``, ``90s``, ``15m``, ``1h30m``, ``1.5d``, or a bare number of seconds.

    TOML numbers (int or float) are seconds too. Raises ConfigError for anything else, negatives and
    booleans included.
    """
    if isinstance(text, bool):
        raise ConfigError(f"bad duration {text!r}: expected {DURATION_FORM}")
    if isinstance(text, int | float):
        if text < 0 or text != text or text == float("inf"):
            raise ConfigError(f"bad duration {text!r}: must be a finite number of seconds >= 0")
        return float(text)
    if not isinstance(text, str):
        raise ConfigError(f"bad duration {text!r}: expected {DURATION_FORM}")
    compact = text.strip().replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", compact):
        return float(compact)
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ConfigError(f"bad duration {text!r}: expected {DURATION_FORM}")
    units = [u for _, u in parts]
    # 1h30m is fine, 30m1h and 1h1h are typos: units must come largest first, each once.
    order = list(_DURATION_UNIT)[::-1]
    if len(set(units)) != len(units) or [order.index(u) for u in units] != sorted(order.index(u) for u in units):
        raise ConfigError(f"bad duration {text!r}: units largest first, each once ({DURATION_FORM})")
    return sum(float(n) * _DURATION_UNIT[u] for n, u in parts)


def read_secret(path: str | os.PathLike[str]) -> bytes:
    """Read a shared secret from a file that only its owner may read.

    Raises ConfigError if the file is missing, unreadable, empty, or readable by group or others.
    """
    p = Path(path)
    try:
        st = p.stat()
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read secret file {p}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"secret file {p} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"secret file {p} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run: chmod 600 {p}"
        )
    secret = data.strip()
    if len(secret) < 16:
        raise ConfigError(f"secret file {p} holds {len(secret)} bytes; use at least 16 random bytes")
    return secret


_RATE = {
    "bit": 1 / 8,
    "kbit": 1000 / 8,
    "mbit": 1000**2 / 8,
    "gbit": 1000**3 / 8,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
}


def parse_rate(text: str | int | float) -> float:
    """Parse a rate into bytes per second: ``50mbit``, ``1gbit``, ``800kbit`` (bits, powers of 1000,
    as tc writes them) or ``6MB``, ``6MiB``, ``6MB/s`` (bytes); a bare number is bytes per second.

    Raises ConfigError if it is not of that form or not positive.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ConfigError(f"bad rate {text!r}: expected e.g. 50mbit, 1gbit, 800kbit, 6MB, 6MiB")
    if isinstance(text, int | float):
        text = str(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)(?:/s)?\s*", text)
    if not m or m.group(2).lower() not in (*_RATE, ""):
        raise ConfigError(f"bad rate {text!r}: expected e.g. 50mbit, 1gbit, 800kbit, 6MB, 6MiB")
    rate = float(m.group(1)) * _RATE.get(m.group(2).lower(), 1)
    if rate <= 0:
        raise ConfigError(f"bad rate {text!r}: must be positive")
    return rate


def check_key_file(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` if it is a private key file that others cannot read.

    Raises ConfigError if it is missing or readable by others (group access is allowed, so that a
    key can belong to a group such as ssl-cert).
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise ConfigError(f"cannot read TLS key file {p}: {e.strerror}") from None
    try:
        # A certificate given without --tls-key is read for its key too; say that, not "chmod".
        has_key = b"PRIVATE KEY-----" in p.read_bytes()[: 1 << 20]
    except OSError as e:
        raise ConfigError(f"cannot read TLS key file {p}: {e.strerror}") from None
    if not has_key:
        raise ConfigError(f"no private key in {p}: give --tls-key FILE (tls_key in TOML)")
    if st.st_mode & 0o007:
        raise ConfigError(
            f"TLS key file {p} is accessible by others (mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {p}"
        )
    return p


def parse_size_or_auto(value: str | int) -> str | int:
    """Parse a size, or ``auto`` (left to the program). Raises ConfigError for anything else."""
    auto = isinstance(value, str) and value.strip().lower() == "auto"
    return "auto" if auto else parse_size(value)


def parse_rate_or_off(value: str | int | float) -> str | float:
    """Parse a rate (see parse_rate), or ``off`` / ``none`` (no limit). Raises ConfigError for anything else."""
    return "off" if value in ("none", "off", "") else parse_rate(value)


def parse_count(value: str | int) -> int:
    """Parse a whole number >= 0: a TOML integer, or its digits (a flag's text).

    Raises ConfigError for anything else, booleans included.
    """
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ConfigError(f"bad number {value!r}: expected a whole number >= 0, e.g. 0, 3")


def parse_switch(value: bool) -> bool:
    """Check a TOML boolean (``true``/``false``); a string or number is a mistake, not a switch.

    Raises ConfigError for anything but a boolean.
    """
    if isinstance(value, bool):
        return value
    raise ConfigError(f"bad switch {value!r}: expected true or false (no quotes)")


def parse_text(value: str) -> str:
    """Check a non-empty string (a path, an address, a command, a name).

    Raises ConfigError for anything else (a number, a boolean, a table, "").
    """
    if isinstance(value, str) and value:
        return value
    raise ConfigError(f"bad value {value!r}: expected a non-empty string in quotes")


Check = Callable[[Any], Any]


def checked(table: Mapping[str, Any], checks: Mapping[str, Check], where: str) -> dict[str, Any]:
    """Return ``table`` with each value a check names parsed; ``where`` names the file and table.

    The one place a TOML value's type and form are checked at start. Raises ConfigError as one line:
    ``FILE: TABLE: KEY: what is wrong, expected form``.
    """
    out = dict(table)
    for key, check in checks.items():
        if table.get(key) is not None:
            try:
                out[key] = check(table[key])
            except ConfigError as e:
                raise ConfigError(f"{where}: {key}: {e}") from None
    return out


def checked_flags(values: Mapping[str, Any], checks: Mapping[str, Check]) -> dict[str, Any]:
    """Return the flags given (``values`` by setting key, None: not given) parsed by their checks.

    Raises ConfigError as one line naming the flag (``--seal-idle: bad duration ...``).
    """
    out = {key: value for key, value in values.items() if value is not None}
    for key, value in out.items():
        if key in checks:
            try:
                out[key] = checks[key](value)
            except ConfigError as e:
                raise ConfigError(f"--{key.replace('_', '-')}: {e}") from None
    return out
