"""Wake tailers when their source directory changes: one inotify descriptor for every stream of a process.

Polling each source directory every 20 ms costs a core at a few hundred streams and adds up to a poll
interval of lag to every append. inotify tells us at once which directory changed, so an idle stream
costs nothing and a busy one is looked at right after each write. Linux only (through ctypes, no
dependency); where inotify is missing or runs out of watches, tailers fall back to polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import struct
import weakref
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("shipper")

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# Everything that can change which segments exist or how long they are.
WATCH_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
)
_EVENT = struct.Struct("iIII")

_libc: ctypes.CDLL | None = None


def _load_libc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.inotify_init1.argtypes = [ctypes.c_int]
            libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):
            return None
        _libc = libc
    return _libc


def parse_named_events(buf: bytes) -> list[tuple[int, int, str]]:
    """Return the (watch descriptor, mask, file name or "") of every inotify event in ``buf``."""
    out = []
    pos = 0
    while pos + _EVENT.size <= len(buf):
        wd, mask, _cookie, length = _EVENT.unpack_from(buf, pos)
        raw = buf[pos + _EVENT.size : pos + _EVENT.size + length]
        out.append((wd, mask, os.fsdecode(raw.rstrip(b"\0"))))
        pos += _EVENT.size + length
    return out


def parse_events(buf: bytes) -> list[tuple[int, int]]:
    """Return the (watch descriptor, mask) of every inotify event in ``buf``."""
    return [(wd, mask) for wd, mask, _name in parse_named_events(buf)]


class DirectoryWatcher:
    """One inotify descriptor; calls a directory's callbacks (from the event loop) when it changes."""

    _per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DirectoryWatcher | None] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self.fd = fd
        self.loop = loop
        self._callbacks: dict[int, list[Callable[[], None]]] = {}
        self._on_closed: dict[int, list[Callable[[str], None]]] = {}
        """Per watch: who wants the name of each file a writer closed (IN_CLOSE_WRITE)."""
        loop.add_reader(fd, self._on_readable)

    @classmethod
    def for_loop(cls) -> DirectoryWatcher | None:
        """Return the running loop's watcher, creating it on first use; None where inotify is unavailable."""
        loop = asyncio.get_running_loop()
        if loop in cls._per_loop:
            return cls._per_loop[loop]
        watcher = None
        libc = None if os.environ.get("LOGSHIP_NO_INOTIFY") else _load_libc()
        if libc is not None:
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd >= 0:
                watcher = cls(fd, loop)
            else:
                log.warning("inotify unavailable (%s); polling source directories", os.strerror(ctypes.get_errno()))
        cls._per_loop[loop] = watcher
        return watcher

    def watch(
        self, directory: Path, callback: Callable[[], None], on_closed: Callable[[str], None] | None = None
    ) -> int | None:
        """Call ``callback`` whenever ``directory`` changes; return the watch, or None if it cannot be watched.

        ``on_closed`` also gets the name of every file in it that a writer closed, before ``callback`` runs.
        """
        libc = _load_libc()
        assert libc is not None
        wd = libc.inotify_add_watch(self.fd, os.fsencode(directory), WATCH_MASK)
        if wd < 0:
            if ctypes.get_errno() == errno.ENOSPC:
                log.warning("out of inotify watches (fs.inotify.max_user_watches); polling %s", directory)
            return None
        self._callbacks.setdefault(wd, []).append(callback)
        if on_closed is not None:
            self._on_closed.setdefault(wd, []).append(on_closed)
        return wd

    def watching(self, wd: int) -> bool:
        """Return whether watch ``wd`` is still alive (the kernel drops it when the directory goes away)."""
        return wd in self._callbacks

    def unwatch(self, wd: int, callback: Callable[[], None], on_closed: Callable[[str], None] | None = None) -> None:
        """Stop calling ``callback`` for ``wd``; close the watcher once nothing is watched any more."""
        if on_closed is not None:
            with contextlib.suppress(ValueError, KeyError):
                self._on_closed[wd].remove(on_closed)
        callbacks = self._callbacks.get(wd)
        if callbacks is not None:
            with contextlib.suppress(ValueError):
                callbacks.remove(callback)
            if not callbacks:
                del self._callbacks[wd]
                self._on_closed.pop(wd, None)
                libc = _load_libc()
                assert libc is not None
                libc.inotify_rm_watch(self.fd, wd)
        if not self._callbacks:
            self.close()

    def close(self) -> None:
        """Stop watching anything; the next for_loop() on this loop makes a new watcher."""
        if self.fd < 0:
            return
        if not self.loop.is_closed():
            self.loop.remove_reader(self.fd)
        os.close(self.fd)
        self.fd = -1
        if self._per_loop.get(self.loop) is self:
            del self._per_loop[self.loop]

    def _on_readable(self) -> None:
        woken: set[int] = set()
        overflow = False
        while True:
            try:
                buf = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                break
            except OSError as e:
                log.error("reading inotify events failed: %s; waking every tailer", e)
                overflow = True
                break
            if not buf:
                break
            for wd, mask, name in parse_named_events(buf):
                if mask & IN_CLOSE_WRITE and name:
                    for on_closed in list(self._on_closed.get(wd, ())):
                        on_closed(name)
                if mask & IN_Q_OVERFLOW:
                    overflow = True
                elif mask & IN_IGNORED:
                    # The directory is gone (or moved away): its watch is dead; the tailer finds out by
                    # watching() and polls until it can watch again.
                    self._on_closed.pop(wd, None)
                    for callback in self._callbacks.pop(wd, ()):
                        callback()
                else:
                    woken.add(wd)
        if overflow:
            woken = set(self._callbacks)
        for wd in woken:
            for callback in list(self._callbacks.get(wd, ())):
                callback()
