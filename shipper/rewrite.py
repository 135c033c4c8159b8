"""Rewrites of already-shipped bytes, for ``--seal closed``: remember what was sent, resend what changed.

A writer may rewrite a byte it wrote earlier, after the shipper sent it: MariaDB clears the in-use flag
(offset 21) of a binlog just after it opened the next one. Sealing waits for the writer to close the
file, so at sealing the shipper reads the whole segment anyway (for the SEAL's digest); ``SentRanges``
holds an xxh3_64 of every 4 KiB ``BLOCK`` of the segment as it was sent (8 bytes each: 128 KiB for a
64 MiB binlog), so that one pass also finds the blocks that changed. Those go out as
DATA frames flagged ``rewrite`` (protocol/messages.py) before the SEAL, when the receiver listed the
``rewrite`` feature; otherwise the SEAL alone carries the new digest and the receiver fetches the
segment again, as before the feature.

``SentRanges`` and ``changed_ranges`` are pure; ``TrackingReader`` feeds them from the reads the sender
makes, and ``seal_content`` runs the pass at sealing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from protocol.aio import FramedConnection
from protocol.digest import chunk_digest, segment_hasher
from protocol.messages import REWRITE, Data, Position
from protocol.session import ShipperHandshake
from shipper.source import SegmentReader, SendSeal
from shipper.status import TargetStats

log = logging.getLogger("shipper")

BLOCK = 4096
"""Bytes per remembered digest (8 bytes each: 128 KiB for a 64 MiB binlog, 2 MiB for 1 GiB), and what a
one-byte change costs on the wire. Hashing in blocks this small costs ~0.1 ms per MiB sent."""
READ = 4 * 1024 * 1024
"""Bytes per read when a segment is read whole."""
MAX_REWRITE = 16 * 1024 * 1024
"""More changed bytes than this at sealing: fetch the segment again instead (bounds the memory held)."""
MAX_FRAME = 1024 * 1024
"""Adjacent changed blocks are merged into rewrite frames of up to this size (plus one block)."""


class SentRanges:
    """Digests of one segment's bytes ``[0, end)`` as they were sent, one per BLOCK-aligned block. Pure.

    ``unsure`` blocks are ones whose bytes as sent are not all known (a resume or resend began inside
    them): they are always rewritten at sealing, which is harmless when they did not change.
    """

    def __init__(self) -> None:
        self.segment = ""
        """The segment tracked; "" when nothing can be vouched for (then no rewrite is offered)."""
        self.end = 0
        self.unsure: set[int] = set()
        self._done = array("Q")
        self._open = xxhash.xxh3_64()

    def start(self, segment: str) -> None:
        """Track ``segment`` from its first byte."""
        self.segment, self.end = segment, 0
        self.unsure = set()
        self._done = array("Q")
        self._open = xxhash.xxh3_64()

    def forget(self) -> None:
        self.start("")

    def sent(self, segment: str, offset: int, data: bytes | bytearray | memoryview) -> None:
        """``data`` went out at ``offset`` of ``segment``."""
        if not self.segment or segment != self.segment or offset != self.end:
            # Not the next bytes of what we track: we cannot say what the receiver holds any more.
            self.forget()
            return
        view = memoryview(data)
        pos, n = 0, len(view)
        if self.end % BLOCK:
            # Finish the block the last bytes left open.
            pos = min(BLOCK - self.end % BLOCK, n)
            self._open.update(view[:pos])
            if (self.end + pos) % BLOCK == 0:
                self._done.append(self._open.intdigest())
        while n - pos >= BLOCK:
            self._done.append(xxhash.xxh3_64_intdigest(view[pos : pos + BLOCK]))
            pos += BLOCK
        if pos < n:
            self._open = xxhash.xxh3_64()
            self._open.update(view[pos:])
        self.end += n

    def truncate(self, offset: int) -> None:
        """The receiver holds ``[0, offset)`` as sent and wants the rest again (resume or resend)."""
        if offset > self.end:
            self.forget()
            return
        if offset == self.end:
            return
        keep = offset // BLOCK
        del self._done[keep:]
        self.unsure = {b for b in self.unsure if b < keep}
        self._open = xxhash.xxh3_64()
        if offset % BLOCK:
            self.unsure.add(keep)
        self.end = offset

    def digests(self) -> list[int]:
        """The digest of every block as sent, the last one possibly short."""
        out = list(self._done)
        if self.end % BLOCK:
            out.append(self._open.intdigest())
        return out


def changed_ranges(sent: list[int], now: list[int], unsure: set[int], size: int) -> list[tuple[int, int]]:
    """Return the byte ranges ``[start, end)`` (adjacent blocks merged) whose digest ``now`` is not the one
    ``sent`` (or whose block is ``unsure``), for a segment of ``size`` bytes. Pure."""
    out: list[tuple[int, int]] = []
    for i, digest in enumerate(now):
        if i < len(sent) and sent[i] == digest and i not in unsure:
            continue
        start, end = i * BLOCK, min(size, (i + 1) * BLOCK)
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def describe(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(f"bytes {a}-{b - 1}" for a, b in ranges)


@dataclass(slots=True)
class SealPlan:
    """What sealing needs: the content digest of the segment now and the blocks to rewrite first."""

    content: bytes
    ranges: list[tuple[int, int]]
    rewrites: list[tuple[int, bytes]] = field(default_factory=list)


class TrackingReader(SegmentReader):
    """A SegmentReader that also remembers, per block, the bytes it read for sending (``SentRanges``)."""

    def __init__(self, source: Path) -> None:
        super().__init__(source)
        self.sent = SentRanges()
        self._prev = SentRanges()
        """The segment sent before (two segments' digests at most)."""
        self.rewritten = 0
        """Bytes sent as rewrites so far (they count in the target's bytes_sent too)."""

    def seek(self, pos: Position) -> None:
        super().seek(pos)
        if self._prev.segment == pos.segment != self.sent.segment:
            # Back to the segment before (a reconnect after its SEAL went out but before it was
            # acknowledged): what was sent of it is still known.
            self.sent, self._prev = self._prev, self.sent
        if self.sent.segment and self.sent.segment == pos.segment and pos.offset <= self.sent.end:
            self.sent.truncate(pos.offset)
            return
        self._prev, self.sent = self.sent, SentRanges()
        # A segment we did not send from its start (a restart of the shipper): the receiver's bytes
        # are taken to be the source's as they are now, the best known.
        self.sent.start(pos.segment)
        done = 0
        while done < pos.offset:
            block = os.pread(self._open(pos.segment), min(READ, pos.offset - done), done)
            if not block:
                self.sent.forget()
                return
            self.sent.sent(pos.segment, done, block)
            done += len(block)

    def read(self, segment: str, offset: int, length: int) -> bytes:
        payload = super().read(segment, offset, length)
        if len(payload) == length:
            self.sent.sent(segment, offset, payload)
        return payload

    def read_into(self, segment: str, offset: int, buf: bytearray) -> int:
        n = super().read_into(segment, offset, buf)
        if n == len(buf):
            self.sent.sent(segment, offset, buf)
        return n

    def plan_seal(self, segment: str, size: int) -> SealPlan | None:
        """Read ``segment`` once as it is now: its content digest and the blocks that differ from what
        was sent. None when what was sent is not known, or too much changed (then fetch it again).

        Blocking: run it in a worker thread.
        """
        if self.sent.segment != segment or self.sent.end != size:
            return None
        sent = self.sent.digests()
        fd = self._open(segment)
        hasher = segment_hasher()
        now: list[int] = []
        held = 0
        frames: list[tuple[int, bytearray]] = []
        for base in range(0, size, READ):
            data = os.pread(fd, min(READ, size - base), base)
            if len(data) != min(READ, size - base):
                return None
            hasher.update(data)
            view = memoryview(data)
            for at in range(0, len(data), BLOCK):
                i = len(now)
                now.append(xxhash.xxh3_64_intdigest(view[at : at + BLOCK]))
                if i >= len(sent) or sent[i] != now[i] or i in self.sent.unsure:
                    block = view[at : at + BLOCK]
                    held += len(block)
                    if held > MAX_REWRITE:
                        return None
                    last = frames[-1] if frames else None
                    if last is not None and last[0] + len(last[1]) == base + at and len(last[1]) < MAX_FRAME:
                        # Adjacent changed blocks go in one frame: one write and one sync at the receiver.
                        last[1].extend(block)
                    else:
                        frames.append((base + at, bytearray(block)))
        rewrites = [(offset, bytes(data)) for offset, data in frames]
        return SealPlan(hasher.digest(), changed_ranges(sent, now, self.sent.unsure, size), rewrites)


def rewrite_agreed(hs: ShipperHandshake | None) -> bool:
    """Whether both ends listed the ``rewrite`` feature on this connection."""
    return hs is not None and REWRITE in hs.features and REWRITE in hs.peer_features


async def seal_content(
    reader: SegmentReader, conn: FramedConnection, stream: str, step: SendSeal, agreed: bool, stats: TargetStats
) -> bytes:
    """Return the content digest for the SEAL of ``step`` (``--seal closed``), sending first, as rewrites,
    the blocks that changed on the source since they were sent, when the receiver takes rewrites."""
    loop = asyncio.get_running_loop()
    plan = None
    if agreed and isinstance(reader, TrackingReader):
        plan = await loop.run_in_executor(None, reader.plan_seal, step.segment, step.size)
    if plan is None:
        # The receiver fetches the segment again if it changed (digest_on_disk says so).
        return await loop.run_in_executor(None, reader.digest_on_disk, step.segment, step.size)
    if plan.rewrites:
        nbytes = sum(len(data) for _, data in plan.rewrites)
        log.info(
            "segment %s changed on the source while it was shipped (%s); rewriting %d bytes at the target "
            "before its SEAL",
            step.segment,
            describe(plan.ranges),
            nbytes,
        )
        for offset, data in plan.rewrites:
            msg = Data(stream, step.segment, offset, chunk_digest(step.segment, offset, data), data, rewrite=True)
            stats.bytes_wire += conn.send(msg)
            stats.bytes_sent += len(data)
        reader.rewritten += nbytes
        await conn.drain()
    return plan.content
