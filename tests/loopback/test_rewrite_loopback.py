"""Rewrites at a real receiver in process (issue 20): a rewrite of held bytes of the active segment is
written and the SEAL of the new content installs it with nothing quarantined; a rewrite outside the
rules (feature not listed, bytes not held, a segment not being written, a wrong digest) ends the
connection with an ERROR and the partial on disk is the bytes received, untouched."""

from __future__ import annotations

import os
from pathlib import Path

from protocol.aio import ConnectionClosed
from protocol.digest import chunk_digest
from protocol.messages import REWRITE, Ack, Data, Error, Message
from tests.loopback.receiver_side import Shipper, running_receiver

SEG = "mysql-bin.000001"
NEXT = "mysql-bin.000002"
CHUNK = 64 * 1024


def rewrite(offset: int, payload: bytes, segment: str = SEG, digest: int | None = None) -> Data:
    d = chunk_digest(segment, offset, payload) if digest is None else digest
    return Data("s", segment, offset, d, payload, rewrite=True)


async def send_all(shipper: Shipper, content: bytes) -> None:
    for offset in range(0, len(content), CHUNK):
        shipper.data("s", SEG, offset, content[offset : offset + CHUNK])
    await shipper.recv_until(lambda m: isinstance(m, Ack) and m.position.offset == len(content))


async def test_a_rewrite_then_the_seal_of_the_new_content_installs_it_and_quarantines_nothing(tmp_path: Path) -> None:
    async with running_receiver(tmp_path / "data") as (_srv, port):
        shipper = await Shipper.connect(port, features=(REWRITE,))
        content = bytearray(os.urandom(5 * CHUNK + 123))
        content[21] = 1
        await send_all(shipper, bytes(content))
        content[21] = 0
        shipper.conn.send(rewrite(0, bytes(content[:4096])))
        # A second one over two chunk records, and one of the last (short) bytes.
        content[CHUNK - 10 : CHUNK + 10] = b"y" * 20
        shipper.conn.send(rewrite(CHUNK - 10, bytes(content[CHUNK - 10 : CHUNK + 10])))
        content[-3:] = b"end"
        shipper.conn.send(rewrite(len(content) - 3, b"end"))
        shipper.seal("s", SEG, bytes(content))
        got = await shipper.recv_until(lambda m: isinstance(m, Ack) and m.sealed)
        await shipper.close()
    copy = tmp_path / "data" / "s"
    assert (copy / "log" / SEG).read_bytes() == content
    assert list((copy / "quarantine").iterdir()) == []
    assert not [m for m in got if isinstance(m, Error)]


async def test_a_rewrite_durable_before_a_restart_is_part_of_the_recovered_partial(tmp_path: Path) -> None:
    content = bytearray(os.urandom(3 * CHUNK))
    async with running_receiver(tmp_path / "data") as (_srv, port):
        shipper = await Shipper.connect(port, features=(REWRITE,))
        await send_all(shipper, bytes(content))
        content[21] = 0xAA
        shipper.conn.send(rewrite(0, bytes(content[:100])))
        # The next DATA's ACK comes after the rewrite was written and synced (ops run in order).
        shipper.data("s", SEG, len(content), b"more")
        content += b"more"
        await shipper.recv_until(lambda m: isinstance(m, Ack) and m.position.offset == len(content))
        await shipper.close()
    async with running_receiver(tmp_path / "data") as (_srv, port):
        shipper = await Shipper.connect(port, features=(REWRITE,))
        resume = shipper.resumes["s"]
        assert (resume.position.segment, resume.position.offset) == (SEG, len(content))  # nothing cut
        shipper.seal("s", SEG, bytes(content))
        await shipper.recv_until(lambda m: isinstance(m, Ack) and m.sealed)
        await shipper.close()
    assert (tmp_path / "data" / "s" / "log" / SEG).read_bytes() == content


async def refused(tmp_path: Path, bad: Data, features: tuple[str, ...] = (REWRITE,), seal_first: bool = False) -> str:
    """Send a segment, then ``bad``; return the ERROR code; the partial (or copy) must be as received."""
    content = os.urandom(2 * CHUNK)
    async with running_receiver(tmp_path / "data") as (_srv, port):
        shipper = await Shipper.connect(port, features=features)
        await send_all(shipper, content)
        if seal_first:
            shipper.seal("s", SEG, content)
            await shipper.recv_until(lambda m: isinstance(m, Ack) and m.sealed)
        shipper.conn.send(bad)
        got: list[Message] = []
        try:
            got = await shipper.recv_until(lambda m: isinstance(m, Error))
        except ConnectionClosed:
            pass
        await shipper.close()
    copy = tmp_path / "data" / "s"
    held = copy / ("log" if seal_first else "incoming") / (SEG if seal_first else f"{SEG}.partial")
    assert held.read_bytes() == content
    errors = [m for m in got if isinstance(m, Error)]
    assert errors, got
    return errors[0].code


async def test_a_rewrite_without_the_feature_is_refused(tmp_path: Path) -> None:
    assert await refused(tmp_path, rewrite(0, b"\x00" * 30), features=()) == "bad-type"


async def test_a_rewrite_of_bytes_not_held_is_refused(tmp_path: Path) -> None:
    assert await refused(tmp_path, rewrite(2 * CHUNK - 1, b"ab")) == "bad-position"


async def test_a_rewrite_of_a_sealed_segment_is_refused(tmp_path: Path) -> None:
    assert await refused(tmp_path, rewrite(0, b"ab"), seal_first=True) == "bad-position"


async def test_a_rewrite_of_another_segment_is_refused(tmp_path: Path) -> None:
    assert await refused(tmp_path, rewrite(0, b"ab", segment=NEXT)) == "bad-position"


async def test_a_rewrite_with_a_wrong_digest_is_refused(tmp_path: Path) -> None:
    assert await refused(tmp_path, rewrite(0, b"ab", digest=1)) == "bad-digest"
