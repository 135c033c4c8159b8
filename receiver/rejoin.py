"""A former primary rejoins a newer epoch as a standby (issue 16): the copy it led from is activated.

What such a copy holds. It was a standby that was activated at epoch N: ``log/`` and the manifest end at
the fork of epoch N (the last segment it received as a standby), ``replica/`` holds those segments
replayed, and then every segment the application wrote into ``replica/`` while this node led (its
shipper shipped them from there), maybe an unsealed tail of epoch N-1 beside them
(``<segment>.partial``, left by the activation) and in ``incoming/``. The new leader's history forks
epoch N+1 at some position F inside what this node led: the last segment the new leader held sealed.

``rejoin_dir()`` turns it back into a standby of the newer epoch without sending anything again, when
the chain checks hold: F is at or after the end of ``log/`` (the new epoch forked inside this node's
own epoch), F ends a segment of ``replica/``, and that segment's xxh3_128 is the fork's digest (the same
check a standby's rewind makes at the handshake, receiver/rewind.py). Then, in this order (each step
may be redone after a crash):

1. everything past F (segments of ``replica/`` after it, the unsealed tails) moves to
   ``quarantine/rejoin-epoch<M>-<time>/`` with a ``reason`` file and the old manifest, state and history;
2. the segments of ``replica/`` from the end of ``log/`` up to F are hard-linked (else copied) into
   ``log/`` and recorded in the manifest, chained as if they had been received (link or copy, fsync,
   rename, then the record);
3. the fork is recorded as the one epoch M must have (``fence --fork``), and the copy starts a fresh
   Standby state at epoch M, replayed up to F (as a reseed starts a fresh Seeding one: the activated
   role itself has no way out, receiver/state.py).

The next shipper of the new epoch resumes at F. When a check fails, ``RejoinRefused`` says why, and the
caller may reseed the copy instead (``rejoin_running(..., reseed=True)``): the copy is demoted to a
standby of epoch M and moved aside whole (receiver/reseed.py), and the new leader sends a base image.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from logship.files import fsync_dir
from protocol.digest import segment_hasher
from protocol.history import Fork
from protocol.messages import START, Position
from receiver.history_file import HISTORY_FILE, load_history, save_history
from receiver.manifest_file import ManifestFile
from receiver.reseed import ReseedRefused, reseed_dir
from receiver.state import CopyState, load_state, save_state

log = logging.getLogger("receiver")

COPY_BLOCK = 1 << 20


class RejoinRefused(Exception):
    """The activated copy cannot become a standby of the new epoch without a reseed."""


def _segments(replica: Path, pattern: str | None) -> list[Path]:
    """The segments the application (or replay) wrote into replica/, in log order: the names the shipper
    shipped from there (its ``pattern``; by default any name but hidden, .tmp and .partial files)."""
    rx = re.compile(pattern) if pattern else None
    try:
        entries = list(os.scandir(replica))
    except FileNotFoundError:
        return []
    return sorted(
        Path(e.path)
        for e in entries
        if e.is_file(follow_symlinks=False)
        and not e.name.startswith(".")
        and not e.name.endswith((".partial", ".tmp"))
        and (rx is None or rx.fullmatch(e.name) is not None)
    )


def _tails(root: Path) -> list[Path]:
    """Unsealed tails of the epoch before this node's: beside the replica and in incoming/."""
    found = [p for p in (root / "replica").glob("*.partial") if p.is_file()]
    if (root / "incoming").is_dir():
        found += [p for p in (root / "incoming").iterdir() if p.suffix in (".partial", ".idx")]
    return sorted(found)


def _copy_in(src: Path, dest_dir: Path) -> tuple[int, bytes, str]:
    """Put ``src`` into ``dest_dir`` durably under its name (temp, fsync, rename); return its size,
    xxh3_128 and how. A hard link where the filesystem has them (not one data byte written: replay
    links log/ into replica/ the same way, and a replica is never written in place), else a copy."""
    tmp = dest_dir / f".{src.name}.rejoin"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left by a crash
    try:
        os.link(src, tmp)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    else:
        size, digest = _digest(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the new link count, before a name relies on it
        finally:
            os.close(fd)
        os.replace(tmp, dest_dir / src.name)
        return size, digest, "link"
    hasher = segment_hasher()
    size = 0
    with open(src, "rb") as f, open(tmp, "wb") as out:
        while block := f.read(COPY_BLOCK):
            hasher.update(block)
            out.write(block)
            size += len(block)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dest_dir / src.name)
    return size, hasher.digest(), "copy"


def _digest(path: Path) -> tuple[int, bytes]:
    hasher = segment_hasher()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(COPY_BLOCK):
            hasher.update(block)
            size += len(block)
    return size, hasher.digest()


def plan(root: Path, epoch: int, fork: Fork, pattern: str | None = None) -> tuple[Position, list[Path], list[Path]]:
    """Check the chain and say what to do: (the end of log/, replica segments to adopt, what to move
    aside). Raises RejoinRefused. Reads only."""
    state = load_state(root / "state.json")
    if state.activated is None:
        raise RejoinRefused(f"the copy in {root} is not activated (role {state.role.value}): fence it instead")
    if epoch <= state.epoch:
        raise RejoinRefused(f"epoch {epoch} is not newer than the copy's {state.epoch}")
    if fork.position is None:
        raise RejoinRefused(f"the fork of epoch {fork.epoch} is not known")
    if fork.epoch <= state.epoch:
        raise RejoinRefused(f"the fork given is of epoch {fork.epoch}, not newer than the copy's {state.epoch}")
    manifest = ManifestFile(root / "manifest")
    records = manifest.read()
    if not records and manifest.read_base() is not None:
        # Reseeded, then activated before anything was received: where its log ends is not recorded.
        raise RejoinRefused("the copy holds no manifest record after its base")
    log_end = Position(records[-1].name, records[-1].size) if records else START
    f = fork.position
    if f < log_end:
        raise RejoinRefused(
            f"epoch {fork.epoch} forked at {f}, before this node's own epoch began ({log_end}): "
            "the new leader lacks what this copy received as a standby"
        )
    led = [p for p in _segments(root / "replica", pattern) if p.name > log_end.segment]
    adopt = [p for p in led if p.name <= f.segment]
    past = [p for p in led if p.name > f.segment]
    if f.segment == log_end.segment:
        where = root / "log" / f.segment if f.segment else None
        if f.offset != log_end.offset:
            raise RejoinRefused(f"epoch {fork.epoch} forked inside {f.segment} ({f}), which this copy holds sealed")
    else:
        if not adopt or adopt[-1].name != f.segment:
            raise RejoinRefused(f"epoch {fork.epoch} forked at {f}, a segment this node's replica does not hold")
        where = adopt[-1]
    if where is not None:
        size, digest = _digest(where)
        if size != f.offset:
            raise RejoinRefused(
                f"epoch {fork.epoch} forked at {f}, inside this node's {f.segment} of {size} bytes: reseed"
            )
        if not fork.digest or digest != fork.digest:
            raise RejoinRefused(
                f"this node's {f.segment} is not the new leader's at the fork of epoch {fork.epoch} "
                "(another history, or no digest to check): reseed"
            )
    return log_end, adopt, past + _tails(root)


def rejoin_dir(
    root: Path, epoch: int, fork: Fork, now: float | None = None, pattern: str | None = None
) -> dict[str, Any]:
    """Make the activated copy under ``root`` a standby of ``epoch`` resuming at ``fork`` (the module
    docstring); return the report. ``pattern``: the names the shipper shipped from replica/ (other files
    there stay). Blocking; the copy's store is closed. Raises RejoinRefused."""
    now = time.time() if now is None else now
    log_end, adopt, aside = plan(root, epoch, fork, pattern)
    assert fork.position is not None
    state = load_state(root / "state.json")
    dest: Path | None = None
    moved = 0
    if aside:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
        dest = root / "quarantine" / f"rejoin-epoch{epoch}-{stamp}-{time.time_ns() % 10**9}"
        dest.mkdir(parents=True)
        why = (
            f"rejoined epoch {epoch} as a standby: this node led epoch {state.epoch}, and epoch {fork.epoch} "
            f"forked at {fork.position}; what is here was past that fork\n"
        )
        (dest / "reason").write_text(why)
        for name in ("manifest", "state.json", HISTORY_FILE):
            if (root / name).exists():
                shutil.copyfile(root / name, dest / name)
        for path in aside:
            sub = dest / path.parent.name
            sub.mkdir(exist_ok=True)
            moved += path.stat().st_size
            os.rename(path, sub / path.name)
            fsync_dir(sub)
        fsync_dir(dest)
        for d in {p.parent for p in aside}:
            fsync_dir(d)
    manifest = ManifestFile(root / "manifest")
    prev, adopted, how = log_end.segment, 0, set()
    try:
        for path in adopt:
            size, digest, way = _copy_in(path, root / "log")
            fsync_dir(root / "log")
            manifest.append(path.name, size, digest, prev, now)
            prev, adopted = path.name, adopted + size
            how.add(way)
    finally:
        manifest.close()
    known = load_history(root)
    if known.fenced.get(fork.epoch) != fork.position:
        known.fenced[fork.epoch] = fork.position
        save_history(root, root.name, known)
    led_epoch = state.epoch
    # A fresh standby state at the new epoch, as a reseed starts a fresh Seeding one: the activated role
    # itself has no way out (receiver/state.py), the copy's state starts over. Replayed up to the fork.
    fresh = CopyState(epoch=epoch, extra=dict(state.extra))
    end = fork.position if adopt else state.replayed_position
    if end.segment:
        fresh.replayed_up_to(end.segment, end.offset, now)
    save_state(root / "state.json", fresh)
    report = {
        "stream": root.name,
        "epoch": epoch,
        "led_epoch": led_epoch,
        "fork": str(fork.position),
        "adopted_segments": [p.name for p in adopt],
        "adopted_bytes": adopted,
        "adopted_how": sorted(how),
        "moved_aside": [str(p.relative_to(root)) for p in aside],
        "moved_bytes": moved,
        "quarantine": str(dest) if dest is not None else None,
        "reseeded": False,
    }
    log.warning(
        "stream %s: REJOINED epoch %d as a standby at %s (led epoch %d): %d segments of its own log kept, "
        "%d bytes past the fork moved to %s",
        root.name,
        epoch,
        fork.position,
        led_epoch,
        len(adopt),
        moved,
        dest or "nowhere (nothing was past it)",
    )
    return report


def demote_and_reseed(root: Path, epoch: int, why: str, now: float | None = None) -> dict[str, Any]:
    """Reseed the activated copy as a standby of ``epoch`` (all moved aside at once). Blocking."""
    led_epoch = load_state(root / "state.json").epoch
    try:
        report = reseed_dir(root, delete_existing=False, manual_resume=False, now=now, rejoin=epoch)
    except ReseedRefused as e:
        raise RejoinRefused(str(e)) from None
    log.warning("stream %s: rejoining epoch %d by a reseed (led epoch %d): %s", root.name, epoch, led_epoch, why)
    return {**report, "led_epoch": led_epoch, "reseeded": True, "why": why}


async def rejoin_running(
    copy: Any, epoch: int, fork: Fork | None, reseed: bool, pattern: str | None = None
) -> dict[str, Any]:
    """Rejoin ``copy`` (a receiver/copy.py StreamCopy) of a running receiver: stop its replay, do the
    work on disk, and restart it on the new state. ``fork`` None or a failed check: with ``reseed``
    the copy is reseeded, else RejoinRefused."""
    from receiver.replayer import Replayer
    from receiver.store import SegmentStore

    if copy.state.activated is None or copy.activating:
        raise RejoinRefused(f"stream {copy.name} is not activated here (or an activation runs)")
    loop = asyncio.get_running_loop()
    async with copy.lock:
        await copy.replayer.stop()
        copy.store.close_manifest()
        copy.store.close()
        root = copy.store.root
        try:
            if fork is None:
                raise RejoinRefused("the new epoch's fork is not known")
            report: dict[str, Any] = await loop.run_in_executor(None, rejoin_dir, root, epoch, fork, None, pattern)
        except RejoinRefused as e:
            if not reseed:
                copy.replayer.start()
                raise
            report = await loop.run_in_executor(None, demote_and_reseed, root, epoch, str(e))
        copy.store = SegmentStore(root)
        copy.state = load_state(copy.store.state_path)
        copy.installed = copy.store.read_manifest()
        copy.base = copy.store.read_manifest_base()
        copy.source_head = None
        copy.replayer = Replayer(copy, copy.replayer.settings, on_replayed=copy.replayer.on_replayed)
        copy.replayer.start()
    return report
