"""The manifest: one JSON line per segment installed into log/, the record replay checks against; and the
stamp of a fresh install (what inspection compares instead of reading the bytes again). No I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass


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

    def to_line(self) -> bytes:
        record = {"seg": self.name, "size": self.size, "xxh": self.digest.hex(), "prev": self.prev, "at": self.at}
        return json.dumps(record, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Installed | None:
        """Parse one manifest line; None for a torn or unreadable one."""
        try:
            r = json.loads(line)
            return cls(str(r["seg"]), int(r["size"]), bytes.fromhex(r["xxh"]), str(r["prev"]), float(r["at"]))
        except (ValueError, KeyError, TypeError):
            return None


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
