"""Storage verbs for one stream's copy: write chunks, install sealed segments, recover, list, read.

Layout under the stream directory:
  log/<segment>              sealed, verified segments, byte-identical to the source; nothing else
  incoming/<segment>.partial the active segment as received so far
  incoming/<segment>.idx     one record per durable chunk (offset, length, xxh3_64), so a restart can
                             re-verify the partial from disk and cut a torn tail; a small batch's
                             records carry the chunk's bytes too (receiver/chunk_index.py), so that
                             only the .idx is fdatasynced before its ACK
  quarantine/                partials that failed their whole-segment digest, and sealed segments that
                             failed inspection before replay, each with a .reason file, kept for inspection
  manifest                   one JSON line per installed segment: name, size, xxh3_128, the sealed
                             segment before it, install time (appended and fsynced before the rename
                             into log/), so replay can re-verify, check continuity and apply its lag
  replica/                   the replayed log (written by the directory target, receiver/targets.py),
                             plus <segment>.partial after activation (receiver/activation.py)
  state.json                 epoch, failure, replay and suspension state (receiver/state.py)

Methods here block (they write and fsync); the server calls them from a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

import xxhash

from logship.files import fsync_dir
from protocol.digest import segment_hasher
from receiver import chunk_index
from receiver.manifest import Base, Installed, Stamp
from receiver.manifest_file import ManifestFile
from receiver.ops import Install, Op, Rehash, Restart, Rewrite, Write
from receiver.partial_writer import FileSync, PartialWriter, PendingSync, SharedFd, start_writeback
from receiver.rewrite import carry_out

_IDX = chunk_index.RECORD
READ_BLOCK = 4 * 1024 * 1024
"""Bytes read per call when a segment is re-read (verification, replay, activation)."""


class ReplicaError(Exception):
    """A segment could not be read, verified or installed into the replica; ``corrupt`` if its bytes are bad."""

    def __init__(self, text: str, corrupt: bool = False) -> None:
        super().__init__(text)
        self.corrupt = corrupt


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a stream's copy holds on disk after a restart."""

    last_sealed: str
    last_sealed_size: int
    active: str | None
    offset: int
    hasher: xxhash.xxh3_128
    discarded: int


class SegmentStore:
    """One stream's copy on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log_dir = root / "log"
        self.incoming = root / "incoming"
        self.quarantine = root / "quarantine"
        self.state_path = root / "state.json"
        self.manifest_path = root / "manifest"
        self.replica = root / "replica"
        for d in (self.log_dir, self.incoming, self.quarantine):
            d.mkdir(parents=True, exist_ok=True)
        self._seg: str | None = None
        self._writer: PartialWriter | None = None
        self._fd = -1
        self._idx_fd = -1
        self._idx: SharedFd | None = None
        self._created = False
        self._writeback = chunk_index.Writeback()
        self.manifest = ManifestFile(self.manifest_path)
        self._pending = PendingSync([])
        self.installed: list[Installed] = []
        """Manifest records of installs made by apply() since the caller last took them."""
        self.fresh: dict[str, Stamp] = {}
        """Segments this process verified and installed, not yet inspected: the stamp each had in log/."""

    # -- reading ------------------------------------------------------------------------------

    def sealed_segments(self) -> list[str]:
        """Return the names in log/, in log order."""
        return sorted(e.name for e in os.scandir(self.log_dir) if e.is_file() and not e.name.startswith("."))

    def partial_path(self, segment: str) -> Path:
        return self.incoming / f"{segment}.partial"

    def idx_path(self, segment: str) -> Path:
        return self.incoming / f"{segment}.idx"

    # -- recovery -----------------------------------------------------------------------------

    def recover(self) -> Recovered:
        """Re-read the copy from disk: the last sealed segment and the verified part of the partial.

        A partial's bytes count only as far as its chunk records verify; a torn or garbage tail is
        cut off. Stray partials that cannot be the active one are moved to quarantine/.
        """
        self.close()
        sealed = self.sealed_segments()
        last = sealed[-1] if sealed else ""
        last_size = (self.log_dir / last).stat().st_size if last else 0
        partials = sorted(p.name[: -len(".partial")] for p in self.incoming.glob("*.partial"))
        for idx in self.incoming.glob("*.idx"):
            if idx.name[: -len(".idx")] not in partials:
                idx.unlink()
        active = None
        for name in partials:
            if name > last and active is None:
                active = name
            else:
                self._quarantine(name, "stray partial at recovery")
        if active is None:
            return Recovered(last, last_size, None, 0, segment_hasher(), 0)
        offset, hasher, discarded = self._verify_partial(active)
        return Recovered(last, last_size, active, offset, hasher, discarded)

    def _verify_partial(self, segment: str) -> tuple[int, xxhash.xxh3_128, int]:
        return chunk_index.recover_partial(segment, self.partial_path(segment), self.idx_path(segment))

    # -- writing ------------------------------------------------------------------------------

    def _open(self, segment: str) -> None:
        self.close()
        self._writer = PartialWriter(self.partial_path(segment))
        self._fd = self._writer.fd
        self._idx_fd = os.open(self.idx_path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._idx = SharedFd(self._idx_fd)
        self._seg = segment
        self._created = True
        self._writeback = chunk_index.Writeback()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._idx is not None:
            self._idx.release()
            self._idx = None
        self._fd = self._idx_fd = -1
        self._seg = None

    def apply(self, ops: list[Op]) -> list[Installed]:
        """Carry out ``ops`` in order and make them durable before returning; return what was installed.

        Raises OSError (disk full, I/O error); the caller must then rebuild its view with recover().
        """
        pending, installed = self.write(ops)
        self.sync(pending)
        return installed

    def write(self, ops: list[Op]) -> tuple[PendingSync, list[Installed]]:
        """Carry out ``ops`` in order; installs and quarantines are durable on return, the chunks only
        once ``sync()`` of the returned PendingSync returned. Returns it and what was installed.

        The two halves let the server write the next batch while the last one is being synced (an
        fdatasync does not stop writes to the file meanwhile; it makes durable at least what was
        written before it began). Raises OSError, as apply().
        """
        self.installed = []
        self._pending = PendingSync([])
        try:
            self._write(ops)
        except BaseException:
            self._pending.close()
            raise
        return self._pending, self.installed

    def _write(self, ops: list[Op]) -> None:
        # A trickle of small appends is made durable by one fdatasync (of the .idx, its bytes inline)
        # instead of two; a batch of large chunks keeps them in the partial only (receiver/chunk_index.py).
        inline = chunk_index.inline_segments(ops)
        records: list[Write] = []
        dirty = False
        for op in ops:
            if isinstance(op, Write):
                if self._seg != op.segment:
                    self._flush(records, dirty, inline)
                    records, dirty = [], False
                    self._open(op.segment)
                if op.payload:
                    # Queued: contiguous chunks go out in one write (receiver/partial_writer.py). Inline
                    # ones through the page cache: nothing waits for them to reach the disk.
                    assert self._writer is not None
                    self._writer.add(op.offset, op.payload, direct=op.segment not in inline)
                    records.append(op)
                dirty = True
            elif isinstance(op, Install):
                self._flush(records, dirty, inline)
                records, dirty = [], False
                self._install(op)
            elif isinstance(op, Restart):
                self._flush(records, dirty, inline)
                records, dirty = [], False
                self.close()
                self._quarantine(op.segment, op.reason)
            elif isinstance(op, Rewrite | Rehash):
                # Bytes already written (receiver/rewrite.py): its records must be in the idx first.
                self._flush(records, dirty, inline)
                records, dirty = [], False
                carry_out(op, self.partial_path(op.segment), self.idx_path(op.segment))
        self._flush(records, dirty, inline)

    def _flush(self, records: list[Write], dirty: bool, inline_segments: frozenset[str]) -> None:
        """Write the chunk records and leave the partial and its records to the next sync()."""
        if not dirty or self._fd < 0 or self._writer is None:
            return
        assert self._seg is not None
        self._writer.flush()
        inline = self._seg in inline_segments
        if inline:
            parts: list[bytes | memoryview] = []
            for op in records:
                parts += (chunk_index.inline(op.offset, len(op.payload), op.digest), memoryview(op.payload))
            data = b"".join(parts)
        else:
            data = b"".join(chunk_index.plain(op.offset, len(op.payload), op.digest) for op in records)
        if data and (n := os.write(self._idx_fd, data)) != len(data):
            # Only a full file system takes fewer bytes; recover() cuts the torn record (receiver/space.py).
            raise OSError(errno.ENOSPC, f"short write of {self._seg}.idx: {n} of {len(data)} bytes")
        assert self._idx is not None
        if inline:
            # Durable by the .idx alone: the partial is left to the page cache (its bytes become
            # durable at the install's fsync or the next large batch's fdatasync; recovery writes
            # them back from the .idx until then), and its cached range to that later flush.
            self._writer.deferred = True
            span = self._writeback.due(records)
            self._pending.files.append(FileSync(self._seg, self._writer.shared.hold(), self._idx.hold(), span, True))
        else:
            cached = self._writer.take_cached()
            self._pending.files.append(FileSync(self._seg, self._writer.shared.hold(), self._idx.hold(), cached, False))
        if self._created:
            self._pending.sync_incoming = True
            self._created = False

    def sync(self, pending: PendingSync) -> None:
        """Make the chunks of one write() durable. Safe to run beside the next write() (another
        thread): the descriptors it holds stay open until it lets go of them. Raises OSError."""
        try:
            for entry in pending.files:
                fd, idx_fd, cached = entry.fd, entry.idx_fd, entry.cached
                if entry.inline:
                    # Its .idx holds the chunks' bytes too (receiver/chunk_index.py): one flush. The
                    # partial's writeback, once a MiB is due, starts only now, behind it on the device.
                    os.fdatasync(idx_fd)
                    if cached is not None:
                        start_writeback(fd, *cached)
                    continue
                # The records and the bytes they vouch for, one after the other in this thread. Their
                # order does not matter: recovery checks every record against the bytes of the partial
                # and cuts at the first that does not match, so a record that reached the disk without
                # its bytes is dropped there. The ACK waits for both. (Run in parallel from two threads,
                # the two fdatasyncs took longer at the 99th percentile than one after the other.)
                os.fdatasync(fd)
                os.fdatasync(idx_fd)
                # The bytes are on disk and nothing here reads them again (the segment digest is
                # computed as they arrive): drop them from the page cache, so a long catch-up does not
                # push everything else out of memory and make the kernel reclaim under our writes.
                # Only the range this batch wrote through the cache (chunks written with O_DIRECT
                # never entered it): a whole-file call walked every page of the file at every batch.
                if cached is not None:
                    os.posix_fadvise(fd, cached[0], cached[1] - cached[0], os.POSIX_FADV_DONTNEED)
            if pending.sync_incoming:
                fsync_dir(self.incoming)
        finally:
            pending.close()

    def _install(self, op: Install) -> None:
        fresh = self._seg != op.segment
        if fresh:
            self._open(op.segment)
            fsync_dir(self.incoming)
        size = os.fstat(self._fd).st_size
        if size != op.size:
            raise OSError(f"{op.segment}: partial holds {size} bytes, SEAL says {op.size}")
        # Mark the file: its mtime one nanosecond before its last write's, a value no later write can
        # give it (a write sets the current time, never an earlier one), yet still the time of the
        # write to whoever reads it. Inspection trusts the digest matched here only while inode, size
        # and that mtime are unchanged (verify_sealed()).
        st = os.fstat(self._fd)
        os.utime(self._fd, ns=(st.st_atime_ns, st.st_mtime_ns - 1))
        os.fsync(self._fd)
        # That fsync made every chunk of this write() to the segment durable (all were written before
        # it), and its .idx is deleted below: the batch's sync need not flush either again (two device
        # cache flushes per segment fewer). Chunks of an earlier batch are that batch's sync's.
        cached = self._pending.drop(op.segment)
        assert self._writer is not None
        if self._writer.deferred or fresh:
            # Inline batches left their bytes cached (and a descriptor opened just now does not know
            # which): drop the whole file, once per segment.
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)
        elif cached is not None:
            os.posix_fadvise(self._fd, cached[0], cached[1] - cached[0], os.POSIX_FADV_DONTNEED)
        st = os.fstat(self._fd)
        stamp = Stamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        self.close()
        # The record goes first: a segment in log/ always has one. A record whose rename never happened
        # is harmless, the segment is installed again (and recorded again) when the shipper resends it.
        record = self.manifest.append(op.segment, op.size, op.digest, op.prev, time.time())
        os.rename(self.partial_path(op.segment), self.log_dir / op.segment)
        self.installed.append(record)
        self.fresh[op.segment] = stamp
        fsync_dir(self.log_dir)
        # Not flushed: an .idx left behind by a crash has no partial any more, and recover() removes it.
        with contextlib.suppress(FileNotFoundError):
            self.idx_path(op.segment).unlink()

    # -- manifest -----------------------------------------------------------------------------

    def read_manifest(self) -> list[Installed]:
        """Return the install records in log order, the newest record of a name winning; torn lines skipped."""
        return self.manifest.read()

    def read_manifest_base(self) -> Base | None:
        """Return where the manifest's chain starts (None: at the stream's first segment)."""
        return self.manifest.read_base()

    def close_manifest(self) -> None:
        self.manifest.close()

    # -- replay and quarantine verbs -------------------------------------------------------------------------

    def verify_sealed(self, record: Installed, full: bool = False) -> str:
        """Check log/<segment> against the size and xxh3_128 recorded in the manifest; return how.

        "stamp": this process verified the segment's whole digest at SEAL and installed it, and its
        inode, size and install mark are unchanged since (nothing wrote, truncated or replaced it), so
        its bytes are not read again. "read": the bytes are read again and hashed, after a restart, for
        a segment already inspected once (a retry), or with ``full`` (an inspector will read it).
        Raises ReplicaError (corrupt=True for a wrong size or digest).
        """
        path = self.log_dir / record.name
        stamp = self.fresh.pop(record.name, None)
        if stamp is not None and not full:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                raise ReplicaError(f"{record.name} is missing from log/") from None
            if stamp == Stamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) and st.st_size == record.size:
                return "stamp"
        hasher = segment_hasher()
        size = 0
        try:
            with open(path, "rb", buffering=0) as f:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
                buf = bytearray(READ_BLOCK)  # one buffer read into: no allocation (and faults) per block
                view = memoryview(buf)
                while n := f.readinto(buf):
                    hasher.update(view[:n])
                    size += n
        except FileNotFoundError:
            raise ReplicaError(f"{record.name} is missing from log/") from None
        except OSError as e:
            raise ReplicaError(f"{record.name}: cannot read: {e.strerror}") from None
        if size != record.size:
            raise ReplicaError(f"{record.name}: {size} bytes in log/, {record.size} recorded at install", corrupt=True)
        if hasher.digest() != record.digest:
            raise ReplicaError(f"{record.name}: xxh3_128 differs from the one recorded at install", corrupt=True)
        return "read"

    def quarantine_sealed(self, segment: str, reason: str) -> Path | None:
        """Move log/<segment> to quarantine/ with a .reason file beside it (bad data is kept, never deleted)."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        dest = self.quarantine / f"{segment}.{stamp}.{time.time_ns() % 1_000_000_000}"
        try:
            os.rename(self.log_dir / segment, dest)
        except FileNotFoundError:
            return None
        (dest.parent / f"{dest.name}.reason").write_text(reason + "\n")
        fsync_dir(self.quarantine)
        fsync_dir(self.log_dir)
        return dest

    def _quarantine(self, segment: str, reason: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        dest = self.quarantine / f"{segment}.{stamp}.{time.time_ns() % 1_000_000_000}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.partial_path(segment), dest)
            (dest.parent / f"{dest.name}.reason").write_text(reason + "\n")
        with contextlib.suppress(FileNotFoundError):
            self.idx_path(segment).unlink()
        fsync_dir(self.quarantine)
        fsync_dir(self.incoming)
