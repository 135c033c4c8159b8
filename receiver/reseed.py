"""``python -m receiver reseed``: start a copy over from a base image (Exchange's Update-StorageGroupCopy).

The copy's old files (log/, incoming/, replica/, base/, manifest, state.json, history.json, a partial
image) move aside to ``quarantine/reseed-<time>/`` (removed instead with ``--delete-existing``); a fresh
state.json keeps the epoch (so older shippers stay fenced) and says Seeding. The next shipper that can
send an image (a ``seed_command``) sends one (receiver/seed.py); copying continues after it.

Through the control socket of a running receiver (which drops the attached shipper and restarts the
copy's replay on the fresh state), or on the data dir under its lock when none runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from logship.files import fsync_dir
from receiver.state import CopyState, load_state, save_state

log = logging.getLogger("receiver")

KEEP = ("quarantine", "control.sock")
"""Entries of a stream directory a reseed leaves where they are."""


class ReseedRefused(Exception):
    """The copy cannot be reseeded as asked."""


def reseed_dir(
    root: Path, delete_existing: bool, manual_resume: bool, now: float | None = None, rejoin: int | None = None
) -> dict[str, Any]:
    """Move the copy under ``root`` aside (or delete it) and leave a fresh Seeding state; return the report.

    Blocking. Raises ReseedRefused for an activated copy (a primary: fence it first, then reseed), unless
    ``rejoin`` names the newer epoch its former primary rejoins as a standby (receiver/rejoin.py).
    """
    now = time.time() if now is None else now
    old = load_state(root / "state.json")
    if old.activated is not None and (rejoin is None or rejoin <= old.epoch):
        raise ReseedRefused(
            f"the copy in {root} is activated (the primary of epoch {old.epoch}); reseeding it would demote it: "
            "stop its shippers and move its data dir aside by hand if that is what you mean"
        )
    entries = sorted(e for e in os.listdir(root) if e not in KEEP) if root.exists() else []
    where: Path | None = None
    moved_bytes = 0
    if entries and not any(_holds_files(root / e) for e in entries):
        # Only the empty directories a fresh copy starts with: nothing worth keeping aside.
        for name in entries:
            shutil.rmtree(root / name)
        fsync_dir(root)
        entries = []
    if entries:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
        where = root / "quarantine" / f"reseed-{stamp}"
        n = 1
        while where.exists():
            n += 1
            where = root / "quarantine" / f"reseed-{stamp}-{n}"
        where.mkdir(parents=True, mode=0o700)
        for name in entries:
            moved_bytes += _size(root / name)
            os.rename(root / name, where / name)
        (where / "reason").write_text(f"reseed asked at {time.ctime(now)}; epoch {old.epoch}\n")
        fsync_dir(where)
        fsync_dir(root)
        if delete_existing:
            shutil.rmtree(where)
            fsync_dir(where.parent)
    root.mkdir(parents=True, exist_ok=True)  # the umask's mode, as SegmentStore makes it
    state = CopyState(epoch=max(old.epoch, rejoin or 0))
    state.begin_seed(now, manual_resume)
    save_state(root / "state.json", state)
    report = {
        "stream": root.name,
        "epoch": state.epoch,
        "moved_to": None if where is None or delete_existing else str(where),
        "deleted": delete_existing and where is not None,
        "bytes": moved_bytes,
        "manual_resume": manual_resume,
    }
    log.warning(
        "stream %s: RESEED: old copy (%d bytes) %s; Seeding: waiting for a base image",
        root.name,
        moved_bytes,
        "deleted" if report["deleted"] else f"moved to {where}" if where is not None else "was empty",
    )
    return report


def _holds_files(path: Path) -> bool:
    if path.is_symlink() or not path.is_dir():
        return True
    return any(files for _d, _dirs, files in os.walk(path))


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum((Path(d) / f).lstat().st_size for d, _dirs, files in os.walk(path) for f in files)


def render(report: dict[str, Any], where: str) -> str:
    """The operator's one-paragraph answer."""
    old = (
        "old copy deleted"
        if report["deleted"]
        else f"old copy moved to {report['moved_to']}"
        if report["moved_to"]
        else "no old copy"
    )
    tail = "; replay waits for `resume` once it is installed" if report["manual_resume"] else ""
    return (
        f"stream {report['stream']}: Seeding at epoch {report['epoch']} {where} ({old}); "
        f"the next shipper with a seed_command sends a base image{tail}"
    )


async def reseed_running(copy: Any, delete_existing: bool, manual_resume: bool) -> dict[str, Any]:
    """Reseed ``copy`` (a receiver/copy.py StreamCopy) of a running receiver: drop its shipper, stop its
    replay, move its files aside, and restart it on the fresh Seeding state. Raises ReseedRefused."""
    import asyncio

    from receiver.replayer import Replayer
    from receiver.store import SegmentStore

    if copy.state.activated is not None or copy.activating:
        raise ReseedRefused(f"stream {copy.name} is activated here (a primary); it is not reseeded")
    owner = copy.owner
    if owner is not None:
        log.warning("stream %s: reseed: closing the connection from %s", copy.name, owner.conn.peer)
        owner.conn.writer.close()
    async with copy.lock:
        await copy.replayer.stop()
        copy.store.close_manifest()
        copy.store.close()
        root = copy.store.root
        loop = asyncio.get_running_loop()
        report: dict[str, Any] = await loop.run_in_executor(None, reseed_dir, root, delete_existing, manual_resume)
        copy.store = SegmentStore(root)
        copy.state = load_state(copy.store.state_path)
        copy.installed, copy.base, copy.source_head = [], None, None
        copy.replayer = Replayer(copy, copy.replayer.settings, on_replayed=copy.replayer.on_replayed)
        copy.replayer.start()
    return report
