"""Reused payload buffers: the receiver reads large DATA payloads into them in place. No I/O."""

from __future__ import annotations

import contextlib
import mmap

ALIGN = 4096
"""What a page-aligned buffer's start is a multiple of: enough for O_DIRECT on 512 and 4096-byte sectors."""
HUGE = 2 * 1024 * 1024
"""A transparent huge page (x86-64, arm64 with 4 KiB pages): what payload buffers are carved from."""


class AlignedBuffer(mmap.mmap):
    """A writable, page-aligned payload buffer (private anonymous memory), compared like bytes.

    The receiver writes a payload held in one with O_DIRECT (receiver/store.py): the device reads it
    straight from here, with no copy into the page cache. A bytearray cannot be that: glibc puts a
    large one 16 bytes past a page boundary.
    """

    def __new__(cls, size: int) -> AlignedBuffer:
        return super().__new__(cls, -1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)

    def __eq__(self, other: object) -> bool:
        try:
            return memoryview(self) == memoryview(other)  # type: ignore[arg-type]
        except TypeError:
            return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like bytearray

    def __repr__(self) -> str:
        return f"AlignedBuffer({len(self)})"


class _Slab(AlignedBuffer):
    """A multiple of ``HUGE`` bytes backed by transparent huge pages where the kernel allows, carved
    into payload buffers (memoryviews) by a BufferPool.

    Why: a payload written with O_DIRECT has its pages pinned one by one for the device (4 KiB
    pages: 256 per MiB, and that many bio segments), and every socket read into it walks as many TLB
    entries. From huge pages, 1 GiB of 1 MiB O_DIRECT writes took 0.035 s of CPU instead of 0.09 and
    0.56 s of wall time instead of 0.76 (microbenchmark, scripts/benchmarks/fixes.md). A huge page
    needs a 2 MiB-aligned 2 MiB of one mapping: a 1 MiB mapping of its own can never have one, so
    the pool carves two 1 MiB buffers out of each 2 MiB slab (the kernel aligns an anonymous mapping
    of a multiple of 2 MiB to 2 MiB).
    """

    def __new__(cls, size: int) -> _Slab:
        slab = super().__new__(cls, size)
        with contextlib.suppress(AttributeError, OSError):  # no MADV_HUGEPAGE here: 4 KiB pages, as before
            slab.madvise(mmap.MADV_HUGEPAGE)
        return slab


def page_aligned(buf: object) -> bool:
    """Whether ``buf`` is a payload buffer of a BufferPool (or an AlignedBuffer): page-aligned, so
    that the store may write it with O_DIRECT."""
    if isinstance(buf, memoryview):
        return isinstance(buf.obj, _Slab)
    return isinstance(buf, AlignedBuffer)


def _carves(size: int) -> bool:
    # Sizes that tile huge pages exactly, each buffer at a page-aligned offset: the power-of-two
    # chunk sizes from 512 KiB (1 MiB by default). Others (a segment's odd tail, small chunks, for
    # which a whole huge page would be memory mostly unused) get a mapping of their own.
    return size >= HUGE // 4 and size % ALIGN == 0 and (HUGE % size == 0 or size % HUGE == 0)


class BufferPool:
    """Payload buffers given back once their bytes are written, to receive later payloads of the
    same size into.

    A fresh 1 MiB bytearray is a fresh mmap whose every page faults in zeroed and is unmapped when
    freed: that cost the receiver more CPU than the copies and digests together (perf, scripts/bench
    throughput). Only whoever owns a buffer alone may give it back; the pool keeps at most
    ``max_bytes`` of free buffers and lets the rest go. The default covers what one connection can
    have in flight (the committer's 32 MiB of pending writes and the decoder's 8 MiB before it pauses
    reading): at 16 MiB, 3 in 10 payloads missed and were allocated (and zeroed, and faulted in)
    afresh. It does not raise the peak: only buffers in use at once are ever allocated.

    Its buffers are page-aligned (``page_aligned()``), so that the store can write them with
    O_DIRECT: memoryviews of huge-page slabs for the power-of-two sizes (``_Slab``), an
    ``AlignedBuffer`` of its own for any other size.
    """

    def __init__(self, max_bytes: int = 48 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._free: dict[int, list[AlignedBuffer | memoryview]] = {}
        self.free_bytes = 0
        self.hits = 0
        self.misses = 0

    def take(self, size: int) -> AlignedBuffer | memoryview:
        """Return a buffer of ``size`` bytes (reused when one is free; its content is stale)."""
        free = self._free.get(size)
        if free:
            self.hits += 1
            self.free_bytes -= size
            return free.pop()
        self.misses += 1
        if not _carves(size):
            return AlignedBuffer(size)
        # The other buffers of the slab are free ones (memory only once written: no peak raised
        # beyond the rest of one huge page).
        view = memoryview(_Slab(max(size, HUGE)))
        bufs = [view[at : at + size] for at in range(0, len(view), size)]
        free = self._free.setdefault(size, [])
        free.extend(bufs[1:])
        self.free_bytes += size * (len(bufs) - 1)
        return bufs[0]

    def give(self, buf: object) -> None:
        """Take back ``buf`` if it is one of ours and no one else references it any more (anything
        else, bytes or a bytearray, is left to the garbage collector)."""
        if not page_aligned(buf):
            return
        assert isinstance(buf, AlignedBuffer | memoryview)
        size = len(buf)
        if size == 0 or self.free_bytes + size > self.max_bytes:
            return
        self._free.setdefault(size, []).append(buf)
        self.free_bytes += size


class SentBuffers:
    """Read buffers handed to a transport, reused once the transport has sent every byte of them.

    A transport keeps a reference (a memoryview) to whatever it could not send at once, so a buffer
    written to it may be overwritten only when it left the transport. The caller counts the bytes it
    wrote (``written``) and asks the transport how many still wait in it: transports send in order,
    so everything up to ``written - waiting`` is gone. A fresh 1 MiB bytes per chunk cost the shipper
    a fifth of its CPU in page faults alone (perf, scripts/bench throughput).
    """

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._busy: list[tuple[int, bytearray]] = []
        """Buffers handed to the transport, each with the written count its last byte reaches."""
        self._free: list[bytearray] = []
        self.hits = 0
        self.misses = 0

    def take(self, size: int, sent: int) -> bytearray:
        """Return a buffer of ``size`` bytes (content stale); ``sent``: bytes known to have left."""
        busy = self._busy
        while busy and busy[0][0] <= sent:
            self._keep(busy.pop(0)[1])
        for i, buf in enumerate(self._free):
            if len(buf) == size:
                self.hits += 1
                return self._free.pop(i)
        self.misses += 1
        return bytearray(size)

    def handed(self, buf: bytearray, end: int) -> None:
        """Record that ``buf`` was written to the transport, its last byte at written count ``end``."""
        self._busy.append((end, buf))
        if len(self._busy) > self.keep:
            # Left to the transport (and the garbage collector): never overwritten by us again.
            self._busy.pop(0)

    def give(self, buf: bytearray) -> None:
        """Take back ``buf``, which no transport ever saw (or one that let it go)."""
        self._keep(buf)

    def _keep(self, buf: bytearray) -> None:
        if len(self._free) < self.keep:
            self._free.append(buf)
