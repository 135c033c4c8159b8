"""Keep the receiver's resident memory close to what it holds, not what glibc keeps cached."""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3
"""mallopt() parameter number in glibc's malloc.h."""


def map_large_buffers(threshold: int = 256 * 1024) -> bool:
    """Have glibc mmap every allocation of ``threshold`` bytes or more and unmap it when freed.

    DATA payloads (up to 4 MiB) and replay blocks pass through several threads; with glibc's default
    (a threshold that rises after the first large free) they end up in per-thread arenas that keep
    freed memory: the receiver's RSS reached 101 MiB while catching up a 4 GiB backlog
    (scripts/bench memory). Returns False where it cannot be set (not glibc).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False
