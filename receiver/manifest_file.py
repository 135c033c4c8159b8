"""The manifest file of one stream's copy: append a chained record (fdatasync), read, rewrite after a rewind,
rebase (a new start of the chain: retention trimmed the records before it, or a reseed), compact (retention).

Appends come from the committer's worker thread while retention compacts from another: one lock makes
each verb whole, so a record appended while retention rewrites the file is never lost."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from logship.files import fsync_dir, write_atomic
from receiver.manifest import Base, Installed, first_pdx, parse_base, parse_manifest, record_digest


class ManifestFile:
    """DIR/<stream>/manifest: one JSON line per installed segment (receiver/manifest.py)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._by_name: dict[str, Installed] | None = None
        """The newest record of each name, read at the first append: where the next ``pdx`` comes from."""
        self._base: Base | None = None
        self._lock = threading.RLock()

    def _data(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""

    def read(self) -> list[Installed]:
        """Return the install records in log order, the newest record of a name winning; torn lines skipped."""
        return parse_manifest(self._data())

    def read_base(self) -> Base | None:
        """Return where the chain starts (None: at the stream's first segment)."""
        return parse_base(self._data())

    def append(self, name: str, size: int, digest: bytes, prev: str, at: float) -> Installed:
        """Write the record of ``name`` installed after ``prev`` and make it durable; return it."""
        with self._lock:
            return self._append(name, size, digest, prev, at)

    def _append(self, name: str, size: int, digest: bytes, prev: str, at: float) -> Installed:
        if self._by_name is None:
            data = self._data()
            self._by_name = {r.name: r for r in parse_manifest(data)}
            self._base = parse_base(data)
        before = self._by_name.get(prev)
        if before is not None:
            pdx: bytes | None = record_digest(before)
        elif prev == (self._base.after if self._base is not None else ""):
            pdx = first_pdx(self._base)
        else:
            pdx = None
        record = Installed(name, size, digest, prev, at, pdx)
        if self._fd < 0:
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if created:
                fsync_dir(self.path.parent)
        os.write(self._fd, record.to_line())
        os.fdatasync(self._fd)
        self._by_name[name] = record
        return record

    def rewrite(self, records: Sequence[Installed]) -> None:
        """Replace the manifest's records by ``records``, keeping its base (crash-safe: temp, fsync, rename,
        fsync dir)."""
        with self._lock:
            self.rebase(self.read_base(), records)

    def rebase(self, base: Base | None, records: Sequence[Installed]) -> None:
        """Replace the manifest by ``base`` (None: the stream's start) and ``records``, which must follow it
        (crash-safe as ``rewrite()``)."""
        with self._lock:
            self.close()
            head = base.to_line() if base is not None else b""
            write_atomic(self.path, head + b"".join(r.to_line() for r in records))
            self._by_name = None

    def compact(self, through: str, at: float) -> tuple[Base, list[Installed]] | None:
        """Drop the records up to and including ``through`` (retention removed their segments): the base
        moves after it, carrying its record digest and the running count of what was removed. Return the
        new base and the records kept, or None (nothing written) if ``through`` has no record.

        Read under the lock from the file itself, not from a caller's list: an append made meanwhile stays.
        """
        with self._lock:
            data = self._data()
            records = parse_manifest(data)
            gone = [r for r in records if r.name <= through]
            if not gone or gone[-1].name != through:
                return None
            old = parse_base(data)
            base = Base(
                through,
                record_digest(gone[-1]),
                at,
                "retention",
                (old.removed if old else 0) + len(gone),
                (old.removed_bytes if old else 0) + sum(r.size for r in gone),
            )
            kept = records[len(gone) :]
            self.rebase(base, kept)
            return base, kept

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
