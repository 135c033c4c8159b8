"""The manifest: one JSON line per segment installed into log/, the record replay checks against; and the
stamp of a fresh install (what inspection compares instead of reading the bytes again). No I/O.

The records form a chain by content: each carries ``pdx``, the digest of its predecessor's record
(``record_digest()``), so a segment of another history that happens to have the right name does not
fit after a record it was not written after. Records written before the chain existed have no ``pdx``
and are checked by name only.

A ``Base`` line says where the chain starts when the records before it are not in the manifest: trimmed
by standby retention, or never here (a copy reseeded from a base image). The first record after it must
name the base's segment as ``prev`` and, when the base knows it, carry its record digest as ``pdx``.
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


@dataclass(frozen=True, slots=True)
class Base:
    """Where the manifest's chain starts: the segment the first kept record was installed after."""

    after: str
    """That segment's name ("" when the copy starts at the stream's first segment)."""
    rdx: bytes | None
    """``record_digest()`` of its record, the ``pdx`` the next record must carry; None when unknown (a
    reseeded copy: its image came without the record), then the next record is checked by name only."""
    at: float
    """Wall-clock time the base was written."""
    why: str = "retention"
    """``retention`` (older records trimmed) or ``reseed`` (the copy starts from a base image)."""
    removed: int = 0
    """Segments standby retention removed from this copy before the base, in all (for status)."""
    removed_bytes: int = 0
    """Their bytes. Kept in the base line so the count changes in the same atomic rename as the records."""

    def to_line(self) -> bytes:
        record: dict[str, object] = {"base": self.after, "rdx": self.rdx.hex() if self.rdx is not None else None}
        record.update(at=self.at, why=self.why)
        if self.removed or self.removed_bytes:
            record.update(removed=self.removed, removed_bytes=self.removed_bytes)
        return json.dumps(record, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Base | None:
        """Parse a base line; None for any other line, torn or not."""
        try:
            r = json.loads(line)
            if not isinstance(r, dict) or "base" not in r:
                return None
            rdx = bytes.fromhex(r["rdx"]) if r.get("rdx") is not None else None
            removed, removed_bytes = int(r.get("removed", 0)), int(r.get("removed_bytes", 0))
            return cls(str(r["base"]), rdx, float(r["at"]), str(r.get("why", "retention")), removed, removed_bytes)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def admits(self, record: Installed) -> bool:
        """Whether ``record`` may be the first one after this base."""
        if record.prev != self.after:
            return False
        return self.rdx is None or record.pdx is None or record.pdx == self.rdx


def first_pdx(base: Base | None) -> bytes | None:
    """The ``pdx`` the first record of a manifest carries: b"" at the stream's start, else the base's."""
    return b"" if base is None else base.rdx


def record_digest(record: Installed) -> bytes:
    """The digest the next record's ``pdx`` carries: xxh3_128 of this record's line."""
    return segment_digest(record.to_line())


def chain_problem(records: Sequence[Installed], names: bool = True, base: Base | None = None) -> str:
    """Say where records in log order do not form one chain ('' if they do): a name gap (unless not
    ``names``: replay stops at a gap by itself) or a ``pdx`` that is not the digest of the record before it.
    The first record is checked against ``base`` (the stream's start when None)."""
    before: Installed | None = None
    for record in records:
        expected_prev = before.name if before else (base.after if base else "")
        if names and record.prev != expected_prev:
            last = before.name if before else (f"the base {base.after}" if base and base.after else "none")
            return f"{record.name}: recorded after {record.prev or 'nothing'}, but the record before is {last}"
        expected_pdx = record_digest(before) if before else first_pdx(base)
        if record.pdx is not None and expected_pdx is not None and record.pdx != expected_pdx:
            return f"{record.name}: its predecessor's record is not the one it was installed after (another history)"
        before = record
    return ""


def parse_manifest(data: bytes) -> list[Installed]:
    """Return the install records in log order, the newest record of a name winning; torn lines skipped.
    Records at or before the base (parse_base()) are not part of the chain any more and are left out."""
    by_name: dict[str, Installed] = {}
    for line in data.splitlines():
        record = Installed.from_line(line)
        if record is not None:
            by_name[record.name] = record
    base = parse_base(data) if b'"base"' in data else None
    floor = base.after if base is not None else ""
    return [by_name[name] for name in sorted(by_name) if name > floor]


def parse_base(data: bytes) -> Base | None:
    """Return the manifest's base (the last base line wins), or None: the chain starts at the stream's start."""
    base: Base | None = None
    for line in data.splitlines():
        if b'"base"' in line:
            base = Base.from_line(line) or base
    return base


@dataclass(frozen=True, slots=True)
class Stamp:
    """What identifies a file's content without reading it, as far as writes through the filesystem go."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
