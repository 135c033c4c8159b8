"""Rewrites of bytes the receiver already holds of the segment it is writing (DATA flagged ``rewrite``).

Under ``--seal closed`` the shipper resends, just before a SEAL, the blocks the source changed after they
were shipped (shipper/rewrite.py). A rewrite is accepted only on a connection whose HELLO listed the
``rewrite`` feature, only for the active, not yet sealed segment, only for bytes already received, and
only with a matching chunk digest; anything else is a protocol error (the connection closes, nothing is
written). ``judge()`` is that decision (pure).

An accepted rewrite is a ``Rewrite`` op, carried out in order with the stream's other storage ops (the
store calls ``carry_out``): pwrite into the partial, the chunk records covering it recomputed (so a
restart still verifies the partial), both fdatasynced before anything after it is acknowledged. The
running segment digest no longer covers the bytes on disk then: before the SEAL is judged, a ``Rehash``
op reads the partial once more and gives the ingest the digest of what it holds, so the SEAL's
whole-segment digest is checked as always; nothing goes to quarantine and nothing is fetched twice.

The read is skipped when no rewrite of the segment changed a byte (a block resent after a resume, which
the shipper cannot vouch for, often holds the same bytes): the partial is then exactly the bytes the
running digest hashed. When one did change, the read stays: xxh3_128 is a running hash, so a change at
byte 21 (MariaDB's in-use flag) changes the state for every byte after it, and no digest of the new
content can be had without hashing those bytes again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import xxhash

from protocol.digest import chunk_digest, segment_hasher
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.messages import Data, Seal
from receiver import chunk_index
from receiver.ops import Op, Rehash, Rewrite

if TYPE_CHECKING:
    from receiver.ingest import Ingest


class Attached(Protocol):
    """What the rewrites need of an attached stream (receiver/committer.py's ``Attachment``)."""

    ingest: Ingest
    copy: Any
    task: asyncio.Task[None]

    def submit(self, ops: list[Op]) -> None: ...


log = logging.getLogger("receiver")

READ_BLOCK = 4 * 1024 * 1024


def judge(ingest: Ingest, msg: Data, allowed: bool) -> Rewrite | None:
    """Return the op for the rewrite ``msg``, or None to drop it (a resend is awaited: everything after
    the damaged chunk is dropped until it comes, and the shipper rewrites again before its next SEAL).

    Raises RemoteProtocolError for a rewrite outside the rules.
    """
    if not allowed:
        raise RemoteProtocolError("rewrite DATA on a connection that did not list the rewrite feature", code="bad-type")
    if ingest.awaiting_resend:
        return None
    end = msg.offset + len(msg.payload)
    if ingest.active is None or msg.segment != ingest.active:
        open_ = ingest.active or "none"
        raise RemoteProtocolError(
            f"rewrite of {msg.segment}, which is not the segment being written ({open_})", code="bad-position"
        )
    if not msg.payload:
        raise RemoteProtocolError(f"empty rewrite of {msg.segment} at {msg.offset}", code="bad-size")
    if end > ingest.offset:
        raise RemoteProtocolError(
            f"rewrite of bytes {msg.offset}-{end - 1} of {msg.segment}, beyond the {ingest.offset} received",
            code="bad-position",
        )
    if chunk_digest(msg.segment, msg.offset, msg.payload) != msg.digest:
        raise RemoteProtocolError(
            f"rewrite of {msg.segment} at {msg.offset}: chunk digest mismatch", code=ErrorCode.BAD_DIGEST
        )
    return Rewrite(msg.segment, msg.offset, msg.payload)


def changed_span(old: bytes, new: bytes) -> tuple[int, int] | None:
    """Return the first and last index where ``old`` and ``new`` (same length) differ; None if equal."""
    if old == new:
        return None
    step = 4096
    # Whole slices compare at memcmp speed: bytes one by one only inside the first and last that differ.
    lo = next(a for a in range(0, len(old), step) if old[a : a + step] != new[a : a + step])
    hi = next(a for a in range((len(old) - 1) // step * step, -1, -step) if old[a : a + step] != new[a : a + step])
    first = next(i for i in range(lo, min(lo + step, len(old))) if old[i] != new[i])
    last = next(i for i in range(min(hi + step, len(old)) - 1, hi - 1, -1) if old[i] != new[i])
    return first, last


# -- carried out by the store, in its worker thread ---------------------------------------------------


def carry_out(op: Rewrite | Rehash, partial: Path, idx: Path) -> None:
    """Apply ``op`` to the partial at ``partial`` whose chunk records (receiver/chunk_index.py) are at ``idx``.

    Durable on return. Raises OSError.
    """
    if isinstance(op, Rehash):
        try:
            unchanged = op.current is not None and not any(r.changed.result(0) for r in op.rewrites)
            op.done.set_result(op.current if unchanged and op.current is not None else _rehash(partial, op.size))
        except BaseException as e:
            op.done.set_exception(e)
            raise
        return
    try:
        fd = os.open(partial, os.O_RDWR)
        try:
            idx_fd = os.open(idx, os.O_RDWR)
            try:
                changed = _rewrite(fd, idx_fd, op)
            finally:
                os.close(idx_fd)
        finally:
            os.close(fd)
    except BaseException as e:
        op.changed.set_exception(e)
        raise
    op.changed.set_result(changed)


def _rewrite(fd: int, idx_fd: int, op: Rewrite) -> bool:
    """Carry out ``op``; return whether a byte changed."""
    start, end = op.offset, op.offset + len(op.payload)
    old = os.pread(fd, len(op.payload), start)
    if len(old) != len(op.payload):
        raise OSError(f"{op.segment}: partial holds fewer than the {end} bytes a rewrite needs")
    span = changed_span(old, op.payload)
    if span is None:
        return False
    if os.pwrite(fd, op.payload, start) != len(op.payload):
        raise OSError(f"short rewrite of {op.segment} at {start}")
    # The chunk records that cover the range vouched for the old bytes: recompute them, or a restart
    # would cut the partial at the first of them (safe, but it would fetch the rest again). An inline
    # record's own copy of the bytes too, or recovery would write the old bytes back. (Rewrites are
    # rare, a few per segment at most: reading the whole .idx for one costs nothing that counts.)
    for rec in chunk_index.parse(os.pread(idx_fd, os.fstat(idx_fd).st_size, 0)):
        if rec.offset >= end or rec.offset + rec.length <= start:
            continue
        chunk = os.pread(fd, rec.length, rec.offset)
        digest = chunk_digest(op.segment, rec.offset, chunk)
        if rec.inline >= 0:
            os.pwrite(idx_fd, chunk, rec.inline)
        os.pwrite(idx_fd, chunk_index.ChunkRecord(rec.offset, rec.length, digest, rec.at, rec.inline).header(), rec.at)
    os.fdatasync(fd)
    os.fdatasync(idx_fd)
    log.info(
        "%s: bytes %d-%d rewritten in the copy (changed on the source after they were shipped; rewrite of %d-%d)",
        op.segment,
        start + span[0],
        start + span[1],
        start,
        end - 1,
    )
    return True


def _rehash(partial: Path, size: int) -> xxhash.xxh3_128:
    hasher = segment_hasher()
    with open(partial, "rb") as f:
        done = 0
        while done < size:
            block = f.read(min(READ_BLOCK, size - done))
            if not block:
                raise OSError(f"{partial.name} holds {done} bytes, fewer than the {size} received")
            hasher.update(block)
            done += len(block)
    return hasher


# -- the connection's side ----------------------------------------------------------------------------


class Rewrites:
    """Rewrites on one connection: which stream's active segment was rewritten since its last digest."""

    def __init__(self) -> None:
        self.touched: dict[str, tuple[str, list[Rewrite]]] = {}
        """Per stream: the segment rewritten since its digest began, and those rewrites."""

    def on_rewrite(self, att: Attached, msg: Data, allowed: bool) -> None:
        """Queue the rewrite ``msg`` (raises RemoteProtocolError if it breaks the rules)."""
        op = judge(att.ingest, msg, allowed)
        if op is None:
            return
        att.copy.bytes_received += len(msg.payload)
        att.submit([op])
        segment, ops = self.touched.get(msg.stream, ("", []))
        if segment != msg.segment:
            ops = []
        ops.append(op)
        self.touched[msg.stream] = (msg.segment, ops)

    async def before_seal(self, att: Attached, msg: Seal) -> bool:
        """Before ``msg`` is judged: if its segment was rewritten, give the ingest the digest of what the
        partial now holds. False if storage failed meanwhile (the connection then ends)."""
        ingest = att.ingest
        segment, rewrites = self.touched.get(msg.stream, ("", []))
        if segment != msg.segment or ingest.awaiting_resend or ingest.active != msg.segment:
            return True
        if msg.size != ingest.offset:
            return True  # the ingest refuses it as it is
        del self.touched[msg.stream]
        # The rewrites are carried out before this op (in order): it reads the partial only if one changed it.
        op = Rehash(msg.segment, msg.size, current=ingest.hasher.copy(), rewrites=tuple(rewrites))
        att.submit([op])
        done = asyncio.wrap_future(op.done)
        await asyncio.wait({done, att.task}, return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            done.cancel()  # storage failed before it came to the op
            return False
        if done.exception() is not None:
            return False
        ingest.hasher = done.result()
        return True
