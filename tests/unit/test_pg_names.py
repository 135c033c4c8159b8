"""PostgreSQL archive names against logship's rule that log order is name order (docs/postgresql.md).

The sequence below is the order in which a PostgreSQL 15 archive really filled in the standby test: a
primary promoted once (timeline 2), then a base backup whose backup history file is archived after its
stop segment. Each of the recipe's two streams must see its files arrive in name order; the whole
archive as one stream does not.
"""

from __future__ import annotations

import re

from shipper.settings import DEFAULT_PATTERN
from shipper.tailer import is_segment, late_arrivals
from tests.helpers.pgcluster import BACKUP_PATTERN, WAL_PATTERN

ARCHIVED_IN_ORDER = [
    "000000010000000000000006.partial",  # the old timeline's last segment, renamed at promotion
    "00000002.history",
    "000000020000000000000006",
    "000000020000000000000007",  # pg_basebackup: start segment
    "000000020000000000000008",  # stop segment, archived first ...
    "000000020000000000000007.00000028.backup",  # ... then the backup history file, named after the start
    "000000020000000000000009",
    "00000003.history",  # a later promotion: sorts after every timeline-2 segment
    "00000003000000000000000A",
    "00000003000000000000000B",  # a second base backup: start A, stop B
    "00000003000000000000000A.00000060.backup",
    "00000003000000000000000C",
]


def arrivals(pattern: str) -> list[str]:
    compiled = re.compile(pattern)
    return [n for n in ARCHIVED_IN_ORDER if is_segment(n, compiled)]


def late(names: list[str]) -> list[str]:
    """Names that, arriving one by one, sort before one already seen."""
    out = []
    for i, name in enumerate(names):
        seen = names[:i]
        out += late_arrivals(sorted([*seen, name]), set(seen), max(seen, default=""))
    return out


def test_wal_and_history_files_arrive_in_name_order() -> None:
    names = arrivals(WAL_PATTERN)
    assert names == sorted(names)
    assert "00000002.history" in names and not any(n.endswith((".backup", ".partial")) for n in names)


def test_backup_history_files_arrive_in_name_order_in_their_own_stream() -> None:
    names = arrivals(BACKUP_PATTERN)
    assert names == ["000000020000000000000007.00000028.backup", "00000003000000000000000A.00000060.backup"]
    assert names == sorted(names)


def test_the_whole_archive_as_one_stream_would_lose_backup_files() -> None:
    names = arrivals(DEFAULT_PATTERN)
    assert "000000010000000000000006.partial" not in names
    assert late(names) == ["000000020000000000000007.00000028.backup", "00000003000000000000000A.00000060.backup"]
