"""receiver/partial_writer.py on real files: which chunks go with O_DIRECT, and that every byte lands."""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import receiver.partial_writer as pw
from protocol.buffers import HUGE, AlignedBuffer, BufferPool
from protocol.digest import chunk_digest, segment_digest
from receiver.ops import Install, Write
from receiver.store import SegmentStore

MIB = 1 << 20
_LIBC = ctypes.CDLL(None, use_errno=True)


def _aligned(data: bytes) -> AlignedBuffer:
    buf = AlignedBuffer(len(data))
    buf[:] = data
    return buf


def _cached_pages(path: Path) -> int:
    """Pages of ``path`` in the page cache now (mincore over a mapping of it; nothing is read)."""
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vec = (ctypes.c_ubyte * pages)()
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), size) as m:
        window = (ctypes.c_char * size).from_buffer(m)
        try:
            assert _LIBC.mincore(ctypes.c_void_p(ctypes.addressof(window)), ctypes.c_size_t(size), vec) == 0
        finally:
            del window
    return sum(v & 1 for v in vec)


@pytest.fixture
def direct(tmp_path: Path) -> Iterator[None]:
    probe = pw.PartialWriter(tmp_path / "probe")
    ok = probe.direct_fd >= 0
    probe.close()
    if not ok:
        pytest.skip("this filesystem refuses O_DIRECT")
    yield


def test_aligned_chunks_go_to_the_device_in_one_write_and_never_into_the_page_cache(
    tmp_path: Path, direct: None
) -> None:
    path = tmp_path / "E1.partial"
    chunks = [os.urandom(MIB) for _ in range(4)]
    w = pw.PartialWriter(path)
    for i, c in enumerate(chunks):
        w.add(i * MIB, _aligned(c))
    w.flush()
    os.fdatasync(w.fd)
    assert (w.direct_bytes, w.cached_bytes, w.take_cached()) == (4 * MIB, 0, None)
    w.close()
    assert _cached_pages(path) == 0
    assert path.read_bytes() == b"".join(chunks)


def test_bytes_and_unaligned_chunks_go_through_the_page_cache_and_are_reported(tmp_path: Path, direct: None) -> None:
    path = tmp_path / "E1.partial"
    small, odd, big = os.urandom(4096), os.urandom(MIB + 100), os.urandom(MIB)
    w = pw.PartialWriter(path)
    w.add(0, small)  # bytes (a small append): cached
    w.add(4096, _aligned(odd))  # aligned buffer, unaligned length: cached
    w.add(4096 + len(odd), _aligned(big))  # aligned buffer at an unaligned offset: cached
    w.flush()
    end = 4096 + len(odd) + len(big)
    assert (w.direct_bytes, w.cached_bytes, w.take_cached(), w.take_cached()) == (0, end, (0, end), None)
    os.fdatasync(w.fd)
    w.close()
    assert _cached_pages(path) > 0
    assert path.read_bytes() == small + odd + big


def test_a_direct_chunk_after_cached_ones_keeps_every_byte(tmp_path: Path, direct: None) -> None:
    # Cached and direct writes side by side in one file, as a trickle of appends followed by a
    # catch-up in full chunks gives: a buffered read sees both.
    path = tmp_path / "E1.partial"
    parts = [os.urandom(4096) for _ in range(3)] + [os.urandom(MIB), os.urandom(MIB)]
    w = pw.PartialWriter(path)
    offset = 0
    for p in parts:
        w.add(offset, p if len(p) == 4096 else _aligned(p))
        offset += len(p)
    w.flush()
    assert (w.direct_bytes, w.cached_bytes) == (2 * MIB, 3 * 4096)
    w.close()
    assert path.read_bytes() == b"".join(parts)


def test_without_direct_writes_everything_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pw, "DIRECT", False)
    w = pw.PartialWriter(tmp_path / "E1.partial")
    w.add(0, _aligned(os.urandom(MIB)))
    w.flush()
    assert (w.direct_fd, w.direct_bytes, w.cached_bytes) == (-1, 0, MIB)
    w.close()


def test_the_store_installs_and_recovers_directly_written_chunks(tmp_path: Path, direct: None) -> None:
    chunks = [os.urandom(MIB) for _ in range(3)] + [os.urandom(5000)]
    ops: list[Write | Install] = []
    offset = 0
    for c in chunks:
        ops.append(Write("E1", offset, _aligned(c), chunk_digest("E1", offset, c)))
        offset += len(c)
    store = SegmentStore(tmp_path / "s")
    store.apply(ops[:2])  # type: ignore[arg-type]
    store.close()
    # A restart re-verifies the partial from disk: the direct writes are there, record for record.
    rec = SegmentStore(tmp_path / "s").recover()
    assert (rec.active, rec.offset, rec.discarded) == ("E1", 2 * MIB, 0)
    store = SegmentStore(tmp_path / "s")
    store.recover()
    whole = b"".join(chunks)
    store.apply([*ops[2:], Install("E1", len(whole), segment_digest(whole), "")])  # type: ignore[list-item]
    assert (tmp_path / "s" / "log" / "E1").read_bytes() == whole


def test_a_batch_that_installs_its_segment_leaves_nothing_more_to_flush(tmp_path: Path) -> None:
    # The install fsyncs the segment after all of the batch's chunks were written (and deletes its
    # .idx), so the batch's sync has nothing of it left to flush; the next segment's chunks it has.
    first, second = os.urandom(MIB + 10), os.urandom(MIB)
    store = SegmentStore(tmp_path / "s")
    store.recover()
    pending, installed = store.write(
        [
            Write("E1", 0, _aligned(first), chunk_digest("E1", 0, first)),
            Install("E1", len(first), segment_digest(first), ""),
            Write("E2", 0, _aligned(second), chunk_digest("E2", 0, second)),
        ]
    )
    assert [r.name for r in installed] == ["E1"]
    assert [f.segment for f in pending.files] == ["E2"]
    store.sync(pending)
    assert (tmp_path / "s" / "log" / "E1").read_bytes() == first
    store.close()
    rec = SegmentStore(tmp_path / "s").recover()
    assert (rec.last_sealed, rec.active, rec.offset) == ("E1", "E2", MIB)


def test_chunks_in_the_pools_huge_page_slabs_go_to_the_device_too(tmp_path: Path, direct: None) -> None:
    # The receiver's pool hands out 1 MiB chunks as memoryviews of 2 MiB slabs (protocol/buffers.py):
    # two to a slab, each page-aligned, and written with O_DIRECT like an AlignedBuffer of their own.
    pool = BufferPool()
    bufs = [pool.take(MIB) for _ in range(2)]
    assert all(isinstance(b, memoryview) for b in bufs)
    assert bufs[0].obj is bufs[1].obj and len(bufs[0].obj) == HUGE  # type: ignore[union-attr]
    chunks = [os.urandom(MIB) for _ in range(2)]
    path = tmp_path / "E1.partial"
    w = pw.PartialWriter(path)
    for i, (buf, chunk) in enumerate(zip(bufs, chunks, strict=True)):
        buf[:] = chunk
        w.add(i * MIB, buf)
    w.flush()
    assert (w.direct_bytes, w.cached_bytes) == (2 * MIB, 0)
    w.close()
    assert _cached_pages(path) == 0
    assert path.read_bytes() == b"".join(chunks)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_sync_outlives_the_store_closing_its_files_and_then_closes_them(tmp_path: Path) -> None:
    # Two batches in the pipe: the second installs the segment (closing the store's descriptors)
    # before the first one's sync ran. That sync still flushes the same files, and the last holder
    # to let go closes them: nothing leaks, nothing is closed under a sync.
    big, small = os.urandom(MIB), os.urandom(4096)
    store = SegmentStore(tmp_path / "s")
    store.recover()
    before = _open_fds()
    first, _ = store.write([Write("E1", 0, _aligned(big), chunk_digest("E1", 0, big))])
    second, _ = store.write([Write("E1", MIB, small, chunk_digest("E1", MIB, small))])
    entries = [*first.files, *second.files]
    store.write([Install("E1", MIB + 4096, segment_digest(big + small), "")])[0].close()
    for entry in entries:
        os.fstat(entry.fd)  # still open: held by the pending syncs
    store.sync(second)
    store.sync(first)
    store.close_manifest()  # (the install opened it)
    assert _open_fds() == before
    for entry in entries:
        with pytest.raises(OSError):
            os.fstat(entry.fd)
    assert (tmp_path / "s" / "log" / "E1").read_bytes() == big + small
