"""The one definition of logship's use of xxhash.

Chunks carry xxh3_64 (an int) over their place and their bytes, sealed segments xxh3_128 (16 bytes,
big-endian digest).
"""

from __future__ import annotations

import xxhash


def chunk_digest(segment: str, offset: int, data: bytes | bytearray | memoryview) -> int:
    """Return the xxh3_64 digest of one DATA payload at ``offset`` of ``segment``.

    The digest covers where the chunk belongs, not only its bytes: a damaged header that names another
    segment or offset no longer passes with an intact payload, so a chunk can never be written under a
    name or at a place the shipper did not send it to.
    """
    h = xxhash.xxh3_64(segment.encode("utf-8", "surrogatepass") + b"\0" + offset.to_bytes(8, "big"))
    h.update(data)
    return h.intdigest()


def segment_hasher() -> xxhash.xxh3_128:
    """Return an incremental hasher for a whole segment; ``.digest()`` gives 16 bytes."""
    return xxhash.xxh3_128()


def segment_digest(data: bytes | bytearray | memoryview) -> bytes:
    """Return the xxh3_128 digest of a whole segment held in memory."""
    return xxhash.xxh3_128_digest(data)
