"""The manifest file of one stream's copy: append a chained record (fdatasync), read, rewrite after a rewind."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from logship.files import fsync_dir, write_atomic
from receiver.manifest import Installed, parse_manifest, record_digest


class ManifestFile:
    """DIR/<stream>/manifest: one JSON line per installed segment (receiver/manifest.py)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._by_name: dict[str, Installed] | None = None
        """The newest record of each name, read at the first append: where the next ``pdx`` comes from."""

    def read(self) -> list[Installed]:
        """Return the install records in log order, the newest record of a name winning; torn lines skipped."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return parse_manifest(data)

    def append(self, name: str, size: int, digest: bytes, prev: str, at: float) -> Installed:
        """Write the record of ``name`` installed after ``prev`` and make it durable; return it."""
        if self._by_name is None:
            self._by_name = {r.name: r for r in self.read()}
        before = self._by_name.get(prev)
        pdx = b"" if not prev else (record_digest(before) if before is not None else None)
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
        """Replace the manifest by ``records`` (crash-safe: temp, fsync, rename, fsync dir)."""
        self.close()
        write_atomic(self.path, b"".join(r.to_line() for r in records))
        self._by_name = None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
