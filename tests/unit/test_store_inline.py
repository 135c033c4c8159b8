"""Inline chunk records (receiver/chunk_index.py): a small batch is durable by its .idx alone.

The power-loss tests snapshot each file's bytes at every fdatasync/fsync the store makes (what the
disk is sure to hold), then rebuild the copy as a power cut would leave it: the .idx as of its last
flush (plus a torn tail), the partial as of its last flush with garbage or nothing after it. Every
acknowledged byte must come back, verified.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from protocol.digest import chunk_digest, segment_digest
from protocol.messages import Position
from receiver import chunk_index
from receiver.ops import Install, Op, Rewrite, Write
from receiver.storage_retry import drop_unacknowledged
from receiver.store import SegmentStore

S1 = "E00000001.log"
BLOB = random.Random(11).randbytes(40_000)
RECORD = chunk_index.RECORD.size


def writes(chunks: list[bytes], start: int = 0) -> list[Op]:
    ops: list[Op] = []
    off = start
    for c in chunks:
        ops.append(Write(S1, off, c, chunk_digest(S1, off, c)))
        off += len(c)
    return ops


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SegmentStore]:
    s = SegmentStore(tmp_path / "db1")
    yield s
    s.close()


def test_inline_is_decided_per_segment_over_the_whole_batch() -> None:
    half = b"x" * (chunk_index.INLINE_MAX // 2 + 1)
    s2 = "E00000002.log"
    ops: list[Op] = [*writes([half]), Install(S1, len(half)), Write(s2, 0, b"y", 0), *writes([half], len(half))]
    # S1's two halves total more than INLINE_MAX, even with other ops between them; S2's one byte does not.
    assert chunk_index.inline_segments(ops) == {s2}
    assert chunk_index.inline_segments(writes([half])) == {S1}
    assert chunk_index.inline_segments([Install(S1, 0)]) == frozenset()


def test_a_batch_split_by_a_rewrite_journals_both_halves_as_the_batch_decided(store: SegmentStore) -> None:
    # The chunks of one batch and their records must agree: one decision (chunk_index.inline_segments)
    # for the write and for the records, even where another op splits the batch's records in two.
    half = BLOB[:30_000] + os.urandom(chunk_index.INLINE_MAX // 2 - 30_000 + 1)
    store.apply([*writes([half]), Rewrite(S1, 0, half), *writes([half], len(half))])
    records = chunk_index.parse(store.idx_path(S1).read_bytes())
    assert [(r.offset, r.inline) for r in records] == [(0, -1), (len(half), -1)]
    assert store.partial_path(S1).read_bytes() == half + half


def test_a_small_batch_carries_its_bytes_in_the_index_and_a_large_one_does_not(store: SegmentStore) -> None:
    small = BLOB[:5000]
    store.apply(writes([small[:4096], small[4096:]]))
    records = chunk_index.parse(store.idx_path(S1).read_bytes())
    assert [(r.offset, r.length, r.inline >= 0) for r in records] == [(0, 4096, True), (4096, 904, True)]
    assert store.idx_path(S1).read_bytes()[records[0].inline : records[0].inline + 4096] == small[:4096]
    big = os.urandom(chunk_index.INLINE_MAX + 1)
    store.apply(writes([big], 5000))
    records = chunk_index.parse(store.idx_path(S1).read_bytes())
    assert records[-1].offset == 5000 and records[-1].inline == -1
    assert store.idx_path(S1).stat().st_size == 2 * RECORD + 5000 + RECORD
    store.apply([Install(S1, 5000 + len(big))])
    assert (store.log_dir / S1).read_bytes() == small + big
    assert list(store.incoming.iterdir()) == []


def test_a_small_batch_is_one_flush_and_a_large_one_two(store: SegmentStore, monkeypatch: pytest.MonkeyPatch) -> None:
    flushed: list[str] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}").rsplit(".", 1)[-1])
        real(fd)

    store.apply(writes([b"x" * 100]))  # creates the files (and flushes incoming/)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    store.apply(writes([b"y" * 4096], 100))
    assert flushed == ["idx"]
    flushed.clear()
    store.apply(writes([b"z" * (chunk_index.INLINE_MAX + 1)], 4196))
    assert flushed == ["partial", "idx"]


def test_the_partials_writeback_is_started_once_a_mib_of_inline_batches_is_due(
    store: SegmentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After every batch it queued a 4 KiB write on the device ahead of the next batch's flush.
    started: list[tuple[int, int]] = []
    monkeypatch.setattr("receiver.store.start_writeback", lambda fd, start, end: started.append((start, end)))
    every = chunk_index.WRITEBACK_EVERY
    for n in range(2 * every // 4096 + 10):
        store.apply(writes([BLOB[:4096]], n * 4096))
    assert started == [(0, every), (every, 2 * every)]


class DiskAtFlush:
    """What the disk is sure to hold of every file: its bytes as of its last fdatasync or fsync."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.synced: dict[str, bytes] = {}
        for name in ("fdatasync", "fsync"):
            monkeypatch.setattr(os, name, self._wrap(getattr(os, name)))

    def _wrap(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def flush(fd: int) -> None:
            real(fd)
            path = os.readlink(f"/proc/self/fd/{fd}")
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    self.synced[os.path.basename(path)] = f.read()

        return flush

    def get(self, name: str) -> bytes:
        return self.synced.get(name, b"")


@pytest.mark.parametrize("garble", ["lost", "zeros", "garbage", "stale"])
def test_every_acknowledged_byte_survives_a_power_cut_that_loses_the_unsynced_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, garble: str
) -> None:
    rng = random.Random(garble)
    store = SegmentStore(tmp_path / "db1")
    disk = DiskAtFlush(monkeypatch)
    # Small batches (inline), a large one (the partial fdatasynced too), small ones again.
    sizes = [4096] * 3 + [100, 3000] + [chunk_index.INLINE_MAX + 4096] + [4096] * 4 + [17]
    content = random.Random(3).randbytes(sum(sizes))
    off = 0
    cuts: list[tuple[int, bytes, bytes]] = []
    for size in sizes:
        store.apply(writes([content[off : off + size]], off))
        off += size
        # Acknowledged here: what a power cut now leaves of each file.
        cuts.append((off, disk.get(f"{S1}.idx"), disk.get(f"{S1}.partial")))
    store.close()
    for acked, idx, partial in cuts:
        root = tmp_path / f"cut{acked}"
        (root / "incoming").mkdir(parents=True)
        tail = rng.randbytes(rng.randrange(1, 200))
        if garble == "lost":  # none or some of the unsynced bytes reached the disk
            kept = partial + content[len(partial) : len(partial) + rng.randrange(acked - len(partial) + 1)]
        elif garble == "zeros":
            kept = partial + bytes(acked - len(partial))
        elif garble == "garbage":
            kept = partial + rng.randbytes(acked - len(partial) + 50)
        else:  # the unsynced range holds bytes of some other write
            kept = partial + bytes(b ^ 0x5A for b in content[len(partial) : acked])
        (root / "incoming" / f"{S1}.partial").write_bytes(kept)
        (root / "incoming" / f"{S1}.idx").write_bytes(idx + tail[: rng.randrange(len(tail))])
        rec = SegmentStore(root).recover()
        assert rec.offset >= acked, (acked, len(partial))
        assert rec.hasher.digest() == segment_digest(content[: rec.offset])
        assert (root / "incoming" / f"{S1}.partial").read_bytes() == content[: rec.offset]
        # And the recovered copy goes on: a second recovery keeps it all, an install seals it.
        again = SegmentStore(root)
        assert again.recover().offset == rec.offset
        again.apply([*writes([content[rec.offset :]], rec.offset), Install(S1, len(content))])
        assert (root / "log" / S1).read_bytes() == content
        again.close()


def test_a_torn_inline_record_is_cut_with_the_bytes_it_vouched_for(store: SegmentStore) -> None:
    for i in range(4):
        store.apply(writes([BLOB[i * 4096 : (i + 1) * 4096]], i * 4096))
    store.close()
    idx = store.idx_path(S1)
    os.truncate(idx, 3 * (RECORD + 4096) + RECORD + 100)  # the last record's bytes cut short
    os.truncate(store.partial_path(S1), 3 * 4096 + 10)  # and the partial lost them too
    rec = store.recover()
    assert (rec.offset, rec.discarded) == (3 * 4096, 10)
    assert store.partial_path(S1).read_bytes() == BLOB[: 3 * 4096]
    assert idx.stat().st_size == 3 * (RECORD + 4096)
    assert store.recover().offset == 3 * 4096


def test_inline_bytes_that_do_not_match_their_digest_are_never_written_back(store: SegmentStore) -> None:
    store.apply(writes([BLOB[:4096]]))
    store.apply(writes([BLOB[4096:8192]], 4096))
    store.close()
    idx = bytearray(store.idx_path(S1).read_bytes())
    second = chunk_index.parse(bytes(idx))[1]
    idx[second.inline + 7] ^= 1
    store.idx_path(S1).write_bytes(bytes(idx))
    os.truncate(store.partial_path(S1), 4096)
    rec = store.recover()
    assert rec.offset == 4096
    assert store.partial_path(S1).read_bytes() == BLOB[:4096]


def test_an_index_of_plain_records_written_before_inline_ones_existed_still_verifies(store: SegmentStore) -> None:
    (store.incoming / f"{S1}.partial").write_bytes(BLOB[:9000])
    records = [chunk_index.plain(o, 3000, chunk_digest(S1, o, BLOB[o : o + 3000])) for o in (0, 3000, 6000)]
    (store.incoming / f"{S1}.idx").write_bytes(b"".join(records))
    rec = store.recover()
    assert (rec.active, rec.offset, rec.discarded) == (S1, 9000, 0)
    store.apply([*writes([BLOB[9000:10000]], 9000), Install(S1, 10000)])
    assert (store.log_dir / S1).read_bytes() == BLOB[:10000]


def test_a_cut_to_the_acknowledged_offset_drops_the_inline_records_past_it(store: SegmentStore) -> None:
    for i in range(4):
        store.apply(writes([BLOB[i * 4096 : (i + 1) * 4096]], i * 4096))
    store.close()
    # A failed sync (EIO): the last two batches were never acknowledged; their bytes must not come back.
    drop_unacknowledged(store, Position(S1, 2 * 4096), False)
    rec = store.recover()
    assert rec.offset == 2 * 4096
    assert store.partial_path(S1).read_bytes() == BLOB[: 2 * 4096]
    assert store.idx_path(S1).stat().st_size == 2 * (RECORD + 4096)


def test_a_rewrite_updates_the_inline_copy_too(store: SegmentStore) -> None:
    store.apply(writes([BLOB[:4096]]))
    store.apply(writes([BLOB[4096:8192]], 4096))
    new = bytes(b ^ 0xFF for b in BLOB[4000:4200])
    store.apply([Rewrite(S1, 4000, new)])
    store.close()
    content = BLOB[:4000] + new + BLOB[4200:8192]
    os.truncate(store.partial_path(S1), 0)  # only the .idx left: the rewritten bytes must come back
    rec = store.recover()
    assert rec.offset == 8192
    assert store.partial_path(S1).read_bytes() == content
