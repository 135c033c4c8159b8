"""The manifest: one JSON line per segment installed into log/, the record replay checks against; and the
stamp of a fresh install (what inspection compares instead of reading the bytes again). No I/O.

The records form a chain by content: each carries ``pdx``, the digest of its predecessor's record
(``record_digest()``), so a segment of another history that happens to have the right name does not
fit after a record it was not written after. Records written before the chain existed have no ``pdx``
and are checked by name only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.digest import segment_digest


@dataclass(frozen=True, slots=True)
class Installed:
    """A manifest record: a segment that entered log/, verified."""

    name: str
    size: int
    digest: bytes
    """xxh3_128 of the whole segment, as the shipper sent it and the receiver checked it."""
    prev: str
    """The sealed segment before it when it was installed ("" if none): the chain replay checks."""
    at: float
    """Wall-clock time of the install (the replay lag counts from it)."""
    pdx: bytes | None = None
    """``record_digest()`` of the predecessor's record (empty for the first segment); None in a record
    written before the chain existed, or after a predecessor whose record was missing."""

    def to_line(self) -> bytes:
        record = {"seg": self.name, "size": self.size, "xxh": self.digest.hex(), "prev": self.prev, "at": self.at}
        if self.pdx is not None:
            record["pdx"] = self.pdx.hex()
        return json.dumps(record, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Installed | None:
        """Parse one manifest line; None for a torn or unreadable one."""
        try:
            r = json.loads(line)
            pdx = bytes.fromhex(r["pdx"]) if r.get("pdx") is not None else None
            return cls(str(r["seg"]), int(r["size"]), bytes.fromhex(r["xxh"]), str(r["prev"]), float(r["at"]), pdx)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def record_digest(record: Installed) -> bytes:
    """The digest the next record's ``pdx`` carries: xxh3_128 of this record's line."""
    return segment_digest(record.to_line())


def chain_problem(records: Sequence[Installed], names: bool = True) -> str:
    """Say where records in log order do not form one chain ('' if they do): a name gap (unless not
    ``names``: replay stops at a gap by itself) or a ``pdx`` that is not the digest of the record before it."""
    before: Installed | None = None
    for record in records:
        if names and record.prev != (before.name if before else ""):
            last = before.name if before else "none"
            return f"{record.name}: recorded after {record.prev or 'nothing'}, but the record before is {last}"
        if record.pdx is not None and record.pdx != (record_digest(before) if before else b""):
            return f"{record.name}: its predecessor's record is not the one it was installed after (another history)"
        before = record
    return ""


def parse_manifest(data: bytes) -> list[Installed]:
    """Return the install records in log order, the newest record of a name winning; torn lines skipped."""
    by_name: dict[str, Installed] = {}
    for line in data.splitlines():
        record = Installed.from_line(line)
        if record is not None:
            by_name[record.name] = record
    return [by_name[name] for name in sorted(by_name)]


@dataclass(frozen=True, slots=True)
class Stamp:
    """What identifies a file's content without reading it, as far as writes through the filesystem go."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
