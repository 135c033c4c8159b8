"""Divergence at the handshake: check a shipper's history against the copy and rewind the copy's tail.

``check_history()`` runs while the session holds the stream's lock, after recovery: it asks the pure
``protocol.history.decide()`` what to do, and for a rewind checks that the copy's bytes up to the fork
are the new primary's (the fork's digest), then moves everything past the fork into
``quarantine/rewind-epoch<N>-<time>/`` (never deleted) with a ``reason`` file and the manifest as it
was, rewrites the manifest without the cut records, and resumes at the fork. A refusal ends the
handshake with ERROR ``diverged``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import weakref
from pathlib import Path
from typing import Protocol

from logship.files import fsync_dir
from protocol.digest import chunk_digest, segment_hasher
from protocol.errors import RemoteProtocolError
from protocol.history import Fork, History, Refuse, Rewind, decide
from protocol.messages import Position
from receiver.chain_check import ChainCheck
from receiver.history_file import load_history, save_history
from receiver.manifest import Base, Installed
from receiver.store import _IDX as IDX_RECORD  # the .idx record format recover() verifies
from receiver.store import READ_BLOCK, Recovered, SegmentStore

log = logging.getLogger("receiver")
_chains: weakref.WeakKeyDictionary[Copy, ChainCheck] = weakref.WeakKeyDictionary()
"""Each copy's chain check, which remembers the records it found linked (receiver/chain_check.py)."""

DIVERGED = "diverged"
"""The ERROR code of a copy that cannot take the shipper's history."""


class Diverged(RemoteProtocolError):
    code = DIVERGED


class Copy(Protocol):
    name: str
    store: SegmentStore
    installed: list[Installed]
    base: Base | None

    @property
    def replayed_position(self) -> Position: ...


def copy_position(rec: Recovered) -> Position:
    """Where the copy's bytes end: in its partial, else at the end of its last sealed segment."""
    return (
        Position(rec.active, rec.offset) if rec.active is not None else Position(rec.last_sealed, rec.last_sealed_size)
    )


def _segment_file(store: SegmentStore, segment: str) -> Path:
    path = store.log_dir / segment
    return path if path.exists() else store.partial_path(segment)


def prefix_digest(store: SegmentStore, position: Position) -> bytes | None:
    """xxh3_128 of the copy's first ``position.offset`` bytes of ``position.segment``; None if it lacks them."""
    if not position.segment:
        return b""
    hasher = segment_hasher()
    left = position.offset
    try:
        with open(_segment_file(store, position.segment), "rb") as f:
            while left:
                block = f.read(min(READ_BLOCK, left))
                if not block:
                    return None
                hasher.update(block)
                left -= len(block)
    except FileNotFoundError:
        return None
    return hasher.digest()


def cut_tail(store: SegmentStore, fork: Fork, why: str) -> tuple[int, Path]:
    """Move every byte past ``fork`` into a new quarantine/ directory; return the bytes cut and it.

    The manifest is rewritten first: a crash before the moves leaves segments in log/ past the fork,
    which the next handshake cuts again.
    """
    assert fork.position is not None
    fp = fork.position
    store.close()
    store.close_manifest()
    records = store.read_manifest()
    dest = store.quarantine / f"rewind-epoch{fork.epoch}-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9}"
    dest.mkdir()
    (dest / "reason").write_text(why + "\n")
    if store.manifest_path.exists():
        shutil.copyfile(store.manifest_path, dest / "manifest")
    past = [p for p in (*store.log_dir.iterdir(), *store.incoming.glob("*.partial")) if _past(p, fp)]
    store.manifest.rewrite([r for r in records if (r.name, r.size) <= (fp.segment, fp.offset) and r.name <= fp.segment])
    cut = 0
    for path in sorted(past):
        cut += path.stat().st_size
        os.rename(path, dest / path.name)
        store.fresh.pop(path.name.removesuffix(".partial"), None)
    for idx in store.incoming.glob("*.idx"):
        if not store.partial_path(idx.name.removesuffix(".idx")).exists():
            idx.unlink()
    kept = next((dest / p.name for p in past if p.name.removesuffix(".partial") == fp.segment), None)
    if kept is not None and fp.offset:
        _write_partial(store, fp, kept)
        cut -= fp.offset
    fsync_dir(dest)
    for d in (store.log_dir, store.incoming, store.quarantine):
        fsync_dir(d)
    return cut, dest


def _past(path: Path, fork: Position) -> bool:
    name = path.name.removesuffix(".partial")
    if path.name.startswith(".") or name < fork.segment:
        return False
    return name > fork.segment or path.stat().st_size > fork.offset


def _write_partial(store: SegmentStore, fork: Position, source: Path) -> None:
    """Leave the first ``fork.offset`` bytes of ``source`` as the partial to resume, with chunk records."""
    with open(source, "rb") as f, open(store.partial_path(fork.segment), "wb") as out:
        records, off = [], 0
        while off < fork.offset:
            block = f.read(min(READ_BLOCK, fork.offset - off))
            out.write(block)
            records.append(IDX_RECORD.pack(off, len(block), chunk_digest(fork.segment, off, block)))
            off += len(block)
        out.flush()
        os.fsync(out.fileno())
    with open(store.idx_path(fork.segment), "wb") as idx:
        idx.write(b"".join(records))
        idx.flush()
        os.fsync(idx.fileno())


def _chain_check(copy: Copy) -> ChainCheck:
    """The copy's chain check (a fresh one for a copy that cannot be weakly referenced: checked whole)."""
    try:
        return _chains.setdefault(copy, ChainCheck())
    except TypeError:
        return ChainCheck()


async def check_history(
    copy: Copy, epoch: int, shipper: History, rec: Recovered, no_rewind: bool
) -> tuple[Recovered, int]:
    """Check the claimed history against the copy; rewind if needed. Return the copy as recovered now
    and the bytes cut. Raises Diverged (the caller ends the handshake)."""
    loop = asyncio.get_running_loop()
    store = copy.store
    known = await loop.run_in_executor(None, load_history, store.root)
    theirs = shipper.claimed(epoch)
    position = copy_position(rec)
    decision = decide(theirs, known.history, position, copy.replayed_position, known.fenced, not no_rewind)
    mixed = _chain_check(copy).problem(copy.installed, copy.base)
    if mixed:
        # Two histories already meet in this copy's manifest: nothing can be resumed on it.
        decision = Refuse(f"the copy's manifest chain is broken: {mixed}; reseed")
    cut = 0
    if isinstance(decision, Refuse):
        log.error("stream %s: refused the shipper's history (%s): %s", copy.name, theirs.describe(), decision.reason)
        raise Diverged(f"stream {copy.name}: {decision.reason}")
    if isinstance(decision, Rewind):
        fork = decision.fork
        assert fork.position is not None
        mine = await loop.run_in_executor(None, prefix_digest, store, fork.position)
        if mine is None or (fork.digest and mine != fork.digest):
            why = f"the copy's bytes up to the fork of {fork} are not the new primary's (another history); reseed"
            log.error("stream %s: refused the shipper's history: %s", copy.name, why)
            raise Diverged(f"stream {copy.name}: {why}")
        why = f"rewound: the copy reached {position}, past the fork of {fork} (history {theirs.describe()})"
        cut, dest = await loop.run_in_executor(None, cut_tail, store, fork, why)
        log.warning(
            "stream %s: REWOUND %d bytes past the fork of %s (the copy reached %s) into %s",
            copy.name,
            cut,
            fork,
            position,
            dest,
        )
        copy.installed = await loop.run_in_executor(None, store.read_manifest)
        rec = await loop.run_in_executor(None, store.recover)
    # The shipper's history, keeping the forks only this copy knows (a shipper that claimed an epoch
    # without its history must not make the copy forget where that epoch forked).
    mine = known.history
    adopted = History(tuple(_known(f, mine.fork_of(f.epoch)) for f in theirs.forks))
    if mine != adopted:
        known.history = adopted
        await loop.run_in_executor(None, save_history, store.root, copy.name, known)
    return rec, cut


def _known(theirs: Fork, mine: Fork | None) -> Fork:
    return mine if theirs.position is None and mine is not None and mine.position is not None else theirs
