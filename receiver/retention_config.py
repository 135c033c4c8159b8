"""Standby retention settings of the receiver: the flags, the config keys and the per-stream tables that
say when a replayed segment may leave log/ and replica/ (receiver/retention.py decides and acts;
receiver/config.py merges these with the rest)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from logship.config import Check, checked, parse_count, parse_duration, parse_text
from receiver.settings_group import Flag, SettingsGroup, given, one_of

KEEP_MODES = ("replayed", "all")
CONSUMER = "consumer"
"""``replica_keep = "consumer"``: the database reading replica/ removes what it no longer needs itself."""
RETENTION_FLAGS: tuple[Flag, ...] = (
    (
        "keep",
        KEEP_MODES,
        "replayed (default): remove a segment from log/ and replica/ once replayed and past --truncation-lag; "
        "all: never remove",
    ),
    ("truncation_lag", "DURATION", "how long a segment stays after its replay (default 1d)"),
    ("keep_min", "N", "always keep the newest N segments in log/ (default 10)"),
    (
        "replica_keep",
        "N|consumer",
        "keep at least the newest N replayed segments in replica/ (default: replica/ follows log/); "
        "consumer: the database reading replica/ removes from it (pg_archivecleanup as archive_cleanup_command)",
    ),
    (
        "replica_cleanup_command",
        "CMD",
        "run this instead of removing from replica/: {oldest} is the oldest segment it must keep, "
        "{replica} the directory (e.g. 'pg_archivecleanup {replica} {oldest}')",
    ),
)
RETENTION_KEYS = tuple(key for key, _, _ in RETENTION_FLAGS)


def parse_replica_keep(value: str | int) -> str | int:
    """A count, or ``consumer``. Raises ConfigError."""
    return CONSUMER if value == CONSUMER else parse_count(value)


RETENTION_CHECKS: dict[str, Check] = {
    "keep": parse_text,
    "truncation_lag": parse_duration,
    "keep_min": parse_count,
    "replica_keep": parse_replica_keep,
    "replica_cleanup_command": parse_text,
}
"""The form of every retention value: each is parsed at start; a bad one is one line naming file, table, key."""


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """When one stream's replayed segments may be removed from the standby's disk."""

    keep: str = "replayed"
    """``replayed``: a segment may go once it is replayed and ``truncation_lag`` has passed since; ``all``:
    nothing is ever removed (log/, replica/ and the manifest grow for ever, as before retention existed)."""
    truncation_lag: float = 86400.0
    """Seconds a segment stays after its replay (Exchange's TruncationLagTime). The default, a day, leaves
    time to notice a bad replica and to restart a database that still reads older segments."""
    keep_min: int = 10
    """The newest this many segments of log/ always stay, replayed and past the lag or not. The last
    replayed segment stays whatever this says: a restart resumes after it and a rewind may cut there."""
    replica_keep: int | str | None = None
    """replica/ keeps at least the newest this many replayed segments, even after log/ let them go (a
    database reading replica/ may need older segments on a restart). None: a replica/ segment goes with
    its log/ segment. replica/ never loses a segment log/ still has (they share the bytes anyway).
    ``consumer``: the receiver removes nothing from replica/; the database does, knowing what it still
    needs (PostgreSQL: ``archive_cleanup_command = 'pg_archivecleanup DIR %r'``), and activation does not
    count what is missing before the oldest segment left there."""
    replica_cleanup_command: str | None = None
    """Run instead of removing from replica/ ourselves, whenever the oldest segment replica/ must keep
    moves: {oldest} (that segment), {replica} (the directory), {stream}; like PostgreSQL's
    ``archive_cleanup_command = 'pg_archivecleanup DIR %r'``. Non-zero exit is logged, then retried later."""


def retention_settings(values: dict[str, Any], base: RetentionSettings, where: str) -> RetentionSettings:
    """Build retention settings from ``values`` (config keys; None or missing keep ``base``).

    Raises ConfigError for a bad mode, duration or count.
    """
    values = checked(values, RETENTION_CHECKS, where)
    return RetentionSettings(
        keep=one_of(values.get("keep") or base.keep, KEEP_MODES, "keep", where),
        truncation_lag=given(values, "truncation_lag", base.truncation_lag),
        keep_min=given(values, "keep_min", base.keep_min),
        replica_keep=given(values, "replica_keep", base.replica_keep),
        replica_cleanup_command=values.get("replica_cleanup_command") or base.replica_cleanup_command,
    )


RETENTION = SettingsGroup(
    RETENTION_CHECKS,
    retention_settings,
    RetentionSettings(),
    "standby retention (defaults for every stream; per-stream tables in --config override)",
    RETENTION_FLAGS,
)
"""The standby retention settings group."""
add_retention_flags = RETENTION.add_flags
"""Add the standby retention flags (defaults for every stream) to a parser."""


retention_flags = RETENTION.flags
"""Return the retention settings given as flags, under their config-file names."""
retention_from_doc = RETENTION.from_doc
"""Return the default retention settings (file, then flags) and each configured stream's own; raises ConfigError."""
