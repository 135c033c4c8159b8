"""--seal closed: the SEAL carries the digest of the segment as the source holds it at sealing, so a byte
the writer rewrote after it was sent (MariaDB's in-use flag) makes the receiver fetch the segment again."""

from __future__ import annotations

from pathlib import Path

from protocol.digest import segment_hasher
from protocol.messages import Position
from shipper.source import SegmentReader


def digest_of(data: bytes) -> bytes:
    hasher = segment_hasher()
    hasher.update(data)
    return hasher.digest()


def test_a_byte_rewritten_after_it_was_read_changes_the_digest_on_disk(tmp_path: Path) -> None:
    data = bytearray(b"\xfebin" + bytes(17) + b"\x01" + b"event" * 5000)
    (tmp_path / "mysql-bin.000001").write_bytes(data)
    reader = SegmentReader(tmp_path)
    reader.seek(Position("mysql-bin.000001", 0))
    assert reader.read("mysql-bin.000001", 0, len(data)) == data
    assert reader.digest_on_disk("mysql-bin.000001", len(data)) == reader.digest() == digest_of(data)

    data[21] = 0  # the writer clears its in-use flag after the bytes were sent
    (tmp_path / "mysql-bin.000001").write_bytes(data)
    assert reader.digest() != digest_of(data)
    assert reader.digest_on_disk("mysql-bin.000001", len(data)) == digest_of(data)
    reader.close()
