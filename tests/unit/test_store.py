"""SegmentStore: apply ops, recover after a crash (torn tails), quarantine, crash-safe file writes."""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from logship.files import write_atomic
from protocol.digest import chunk_digest, seal_digest, segment_digest
from protocol.messages import Data, Seal
from receiver import chunk_index
from receiver.ingest import Ingest, Verdict
from receiver.ops import Install, Op, Restart, Write
from receiver.store import SegmentStore

S1 = "E00000001.log"
S2 = "E00000002.log"
S3 = "E00000003.log"
S4 = "E00000004.log"
RECORD = struct.calcsize(">QIQ")


def writes(segment: str, chunks: list[bytes], start: int = 0) -> list[Op]:
    """Return the Write ops that put ``chunks`` one after another from ``start``."""
    ops: list[Op] = []
    offset = start
    for chunk in chunks:
        ops.append(Write(segment, offset, chunk, chunk_digest(segment, offset, chunk)))
        offset += len(chunk)
    return ops


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def quarantined(store: SegmentStore) -> list[str]:
    return sorted(p.name for p in store.quarantine.iterdir())


@pytest.fixture(autouse=True)
def plain_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests read and tear the .idx as plain records: no batch journaled inline here (the inline
    records have their own tests, tests/unit/test_store_inline.py)."""
    monkeypatch.setattr(chunk_index, "INLINE_MAX", -1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SegmentStore]:
    s = SegmentStore(tmp_path / "db1")
    yield s
    s.close()


BLOB = random.Random(7).randbytes(10_000)


# -- apply -----------------------------------------------------------------------------------


def test_writes_then_install_give_an_identical_sealed_segment(store: SegmentStore) -> None:
    store.apply(writes(S1, chunks_of(BLOB, 3000)))
    assert store.partial_path(S1).read_bytes() == BLOB
    assert store.idx_path(S1).stat().st_size == 4 * RECORD
    assert store.sealed_segments() == []

    store.apply([Install(S1, len(BLOB))])
    assert (store.log_dir / S1).read_bytes() == BLOB
    assert store.sealed_segments() == [S1]
    assert list(store.incoming.iterdir()) == []


def test_ops_spread_over_several_batches_and_segments(store: SegmentStore) -> None:
    a, b = BLOB[:4000], BLOB[4000:]
    ops = writes(S1, chunks_of(a, 1000))
    store.apply(ops[:1])
    store.apply(ops[1:3])
    store.apply([*ops[3:], Install(S1, len(a)), *writes(S2, chunks_of(b, 2500)), Install(S2, len(b))])
    assert (store.log_dir / S1).read_bytes() == a
    assert (store.log_dir / S2).read_bytes() == b
    assert store.sealed_segments() == [S1, S2]
    assert list(store.incoming.iterdir()) == []


def test_empty_segment_installs_as_empty_file(store: SegmentStore) -> None:
    store.apply([Write(S1, 0, b"", chunk_digest(S1, 0, b"")), Install(S1, 0)])
    assert (store.log_dir / S1).read_bytes() == b""
    assert list(store.incoming.iterdir()) == []


def test_install_at_the_wrong_size_raises(store: SegmentStore) -> None:
    store.apply(writes(S1, [b"abc"]))
    with pytest.raises(OSError, match="partial holds 3 bytes"):
        store.apply([Install(S1, 4)])
    assert store.sealed_segments() == []


def test_sealed_segments_ignores_dotfiles(store: SegmentStore) -> None:
    (store.log_dir / ".tmpfile").write_bytes(b"x")
    store.apply([*writes(S1, [b"abc"]), Install(S1, 3)])
    assert store.sealed_segments() == [S1]


def test_ingest_and_store_together(store: SegmentStore) -> None:
    ingest = Ingest("", None, 0)
    for i, chunk in enumerate(chunks_of(BLOB, 999)):
        out = ingest.on_data(Data("db1", S1, i * 999, chunk_digest(S1, i * 999, chunk), chunk))
        assert out.verdict is Verdict.ACCEPT
        store.apply(out.ops)
    out = ingest.on_seal(Seal("db1", S1, len(BLOB), seal_digest(S1, len(BLOB), segment_digest(BLOB))))
    store.apply(out.ops)
    assert (store.log_dir / S1).read_bytes() == BLOB


# -- recover ---------------------------------------------------------------------------------


def test_recover_empty_store(store: SegmentStore) -> None:
    rec = store.recover()
    assert (rec.last_sealed, rec.last_sealed_size, rec.active, rec.offset, rec.discarded) == ("", 0, None, 0, 0)


def test_recover_reports_sealed_and_partial(store: SegmentStore) -> None:
    store.apply([*writes(S1, [b"sealed!"]), Install(S1, 7), *writes(S2, chunks_of(BLOB, 4096))])
    rec = store.recover()
    assert rec.last_sealed == S1
    assert rec.last_sealed_size == 7
    assert rec.active == S2
    assert rec.offset == len(BLOB)
    assert rec.hasher.digest() == segment_digest(BLOB)
    assert rec.discarded == 0


def test_recover_then_continue_writing(store: SegmentStore) -> None:
    head, tail = BLOB[:6000], BLOB[6000:]
    store.apply(writes(S1, chunks_of(head, 2000)))
    rec = store.recover()
    ingest = Ingest(rec.last_sealed, rec.active, rec.offset, rec.hasher)
    for i, chunk in enumerate(chunks_of(tail, 1500)):
        out = ingest.on_data(Data("db1", S1, 6000 + i * 1500, chunk_digest(S1, 6000 + i * 1500, chunk), chunk))
        assert out.verdict is Verdict.ACCEPT
        store.apply(out.ops)
    out = ingest.on_seal(Seal("db1", S1, len(BLOB), seal_digest(S1, len(BLOB), segment_digest(BLOB))))
    assert out.verdict is Verdict.ACCEPT
    store.apply(out.ops)
    assert (store.log_dir / S1).read_bytes() == BLOB


def test_recover_cuts_garbage_after_the_last_record(store: SegmentStore) -> None:
    store.apply(writes(S1, chunks_of(BLOB, 2500)))
    store.close()
    with open(store.partial_path(S1), "ab") as f:
        f.write(b"\xde\xad\xbe\xef" * 100)
    rec = store.recover()
    assert rec.active == S1
    assert rec.offset == len(BLOB)
    assert rec.discarded == 400
    assert rec.hasher.digest() == segment_digest(BLOB)
    assert store.partial_path(S1).read_bytes() == BLOB
    assert store.idx_path(S1).stat().st_size == 4 * RECORD


def test_recover_cuts_a_corrupt_last_chunk(store: SegmentStore) -> None:
    store.apply(writes(S1, chunks_of(BLOB, 2500)))
    store.close()
    with open(store.partial_path(S1), "r+b") as f:
        f.seek(9000)
        f.write(b"\x00\x01\x02")
    rec = store.recover()
    assert rec.offset == 7500
    assert rec.discarded == 2500
    assert rec.hasher.digest() == segment_digest(BLOB[:7500])
    assert store.partial_path(S1).read_bytes() == BLOB[:7500]
    assert store.idx_path(S1).stat().st_size == 3 * RECORD


def test_recover_cuts_a_short_last_chunk(store: SegmentStore) -> None:
    store.apply(writes(S1, chunks_of(BLOB, 2500)))
    store.close()
    os.truncate(store.partial_path(S1), 9000)
    rec = store.recover()
    assert rec.offset == 7500
    assert rec.discarded == 1500
    assert store.partial_path(S1).read_bytes() == BLOB[:7500]
    assert store.idx_path(S1).stat().st_size == 3 * RECORD


@pytest.mark.parametrize("cut", [1, RECORD // 2, RECORD - 1])
def test_recover_cuts_a_torn_index_record(store: SegmentStore, cut: int) -> None:
    store.apply(writes(S1, chunks_of(BLOB, 2500)))
    store.close()
    os.truncate(store.idx_path(S1), 3 * RECORD + cut)
    rec = store.recover()
    assert rec.offset == 7500
    assert rec.discarded == 2500
    assert rec.hasher.digest() == segment_digest(BLOB[:7500])
    assert store.partial_path(S1).read_bytes() == BLOB[:7500]
    assert store.idx_path(S1).stat().st_size == 3 * RECORD
    # A second recovery finds nothing more to cut.
    again = store.recover()
    assert (again.offset, again.discarded) == (7500, 0)


def test_recover_partial_without_index_starts_from_zero(store: SegmentStore) -> None:
    store.apply(writes(S1, [b"abc"]))
    store.close()
    store.idx_path(S1).unlink()
    rec = store.recover()
    assert (rec.active, rec.offset, rec.discarded) == (S1, 0, 3)
    assert store.partial_path(S1).read_bytes() == b""


def test_recover_quarantines_stray_partials(store: SegmentStore) -> None:
    store.apply([*writes(S2, [b"two"]), Install(S2, 3)])
    store.apply(writes(S1, [b"old"]))
    store.apply(writes(S2, [b"dup"]))
    store.apply(writes(S3, [b"three"]))
    store.apply(writes(S4, [b"four"]))
    (store.incoming / "E00000009.log.idx").write_bytes(b"orphan")

    rec = store.recover()
    assert rec.last_sealed == S2
    assert rec.active == S3
    assert rec.offset == 5
    names = sorted(p.name for p in store.incoming.iterdir())
    assert names == [f"{S3}.idx", f"{S3}.partial"]
    q = quarantined(store)
    for seg in (S1, S2, S4):
        moved = [n for n in q if n.startswith(f"{seg}.") and not n.endswith(".reason")]
        assert len(moved) == 1
        assert (store.quarantine / f"{moved[0]}.reason").read_text().strip() == "stray partial at recovery"
    assert len(q) == 6
    assert (store.log_dir / S2).read_bytes() == b"two"


def test_restart_quarantines_the_partial_with_a_reason(store: SegmentStore) -> None:
    store.apply(writes(S1, [b"bad bytes"]))
    store.apply([Restart(S1, "segment digest mismatch"), *writes(S1, [b"good"])])
    q = quarantined(store)
    assert len(q) == 2
    data_name = next(n for n in q if not n.endswith(".reason"))
    assert data_name.startswith(f"{S1}.")
    assert (store.quarantine / data_name).read_bytes() == b"bad bytes"
    assert (store.quarantine / f"{data_name}.reason").read_text() == "segment digest mismatch\n"
    assert store.partial_path(S1).read_bytes() == b"good"
    assert store.idx_path(S1).stat().st_size == RECORD
    store.apply([Install(S1, 4)])
    assert (store.log_dir / S1).read_bytes() == b"good"


def test_restart_without_a_partial_is_harmless(store: SegmentStore) -> None:
    store.apply([Restart(S1, "nothing there")])
    assert quarantined(store) == []


def test_write_atomic_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "file.json"
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]
