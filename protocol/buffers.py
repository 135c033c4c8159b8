"""Reused payload buffers: the receiver reads large DATA payloads into them in place. No I/O."""

from __future__ import annotations


class BufferPool:
    """Payload buffers given back once their bytes are written, to receive later payloads of the
    same size into.

    A fresh 1 MiB bytearray is a fresh mmap whose every page faults in zeroed and is unmapped when
    freed: that cost the receiver more CPU than the copies and digests together (perf, scripts/bench
    throughput). Only whoever owns a buffer alone may give it back; the pool keeps at most
    ``max_bytes`` of free buffers and lets the rest go.
    """

    def __init__(self, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._free: dict[int, list[bytearray]] = {}
        self.free_bytes = 0
        self.hits = 0
        self.misses = 0

    def take(self, size: int) -> bytearray:
        """Return a bytearray of ``size`` bytes (reused when one is free; its content is stale)."""
        free = self._free.get(size)
        if free:
            self.hits += 1
            self.free_bytes -= size
            return free.pop()
        self.misses += 1
        return bytearray(size)

    def give(self, buf: bytearray) -> None:
        """Take back ``buf``, which no one else references any more."""
        size = len(buf)
        if size == 0 or self.free_bytes + size > self.max_bytes:
            return
        self._free.setdefault(size, []).append(buf)
        self.free_bytes += size
