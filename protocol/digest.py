"""The one definition of logship's use of xxhash.

Chunks carry xxh3_64 (an int), sealed segments xxh3_128 (16 bytes, big-endian digest).
"""

from __future__ import annotations

import xxhash


def chunk_digest(data: bytes | bytearray | memoryview) -> int:
    """Return the xxh3_64 digest of one DATA payload."""
    return xxhash.xxh3_64_intdigest(data)


def segment_hasher() -> xxhash.xxh3_128:
    """Return an incremental hasher for a whole segment; ``.digest()`` gives 16 bytes."""
    return xxhash.xxh3_128()


def segment_digest(data: bytes | bytearray | memoryview) -> bytes:
    """Return the xxh3_128 digest of a whole segment held in memory."""
    return xxhash.xxh3_128_digest(data)
