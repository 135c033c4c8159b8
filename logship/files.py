"""Crash-safe file verbs both daemons use for their own state: atomic replace, directory fsync, and
the exclusive lock that keeps two processes off one directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def lock_exclusive(path: Path, mode: int = 0o644) -> int | None:
    """Take an exclusive lock on ``path`` for as long as the returned descriptor stays open.

    Returns None if another process holds it. Writes our pid into the file for the operator.
    Raises OSError if the lock file cannot be opened.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def from_the_disk(fd: int) -> None:
    """Drop the clean cached pages of ``fd`` so that what is read next comes from the disk.

    After a failed writeback Linux may keep the pages cached and marked clean although the disk never
    got them ("fsyncgate"), and a restarted receiver's recovery (receiver/store.py) would then verify,
    and offer to resume after, bytes that are not durable. Dirty pages stay (the kernel still writes
    them; a kill -9 leaves those), so this costs a read from the disk of what was already written there.
    """
    with contextlib.suppress(OSError):  # advice only: a file system without it reads as before
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
