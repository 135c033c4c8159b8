"""The manifest file of one stream's copy: append a chained record (fdatasync), read, rewrite after a rewind,
rebase (a new start of the chain: retention trimmed the records before it, or a reseed)."""

from __future__ import annotations

import os
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
        self.rebase(self.read_base(), records)

    def rebase(self, base: Base | None, records: Sequence[Installed]) -> None:
        """Replace the manifest by ``base`` (None: the stream's start) and ``records``, which must follow it
        (crash-safe as ``rewrite()``)."""
        self.close()
        head = base.to_line() if base is not None else b""
        write_atomic(self.path, head + b"".join(r.to_line() for r in records))
        self._by_name = None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
