"""The one definition of logship's use of xxhash.

Chunks carry xxh3_64 (an int) over their place and their bytes. A sealed segment's content digest
is xxh3_128 (16 bytes, big-endian digest) of its bytes; that is what the manifest stores and replay
re-checks. A SEAL carries the seal digest: xxh3_128 over the segment's name, size and content digest.
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


def fields_digest(*fields: str | int) -> int:
    """Return the xxh3_64 digest of a control frame's fields (each as text, NUL between them).

    ACK and NACK carry no payload, but their fields decide what the shipper believes is durable (and
    may drop from its window, or let retention delete): a damaged offset must not pass as a real one.
    """
    text = "\0".join(map(str, fields))
    return xxhash.xxh3_64_intdigest(text.encode("utf-8", "surrogatepass"))


def segment_hasher() -> xxhash.xxh3_128:
    """Return an incremental hasher for a whole segment; ``.digest()`` gives 16 bytes."""
    return xxhash.xxh3_128()


def segment_digest(data: bytes | bytearray | memoryview) -> bytes:
    """Return the xxh3_128 digest of a whole segment held in memory."""
    return xxhash.xxh3_128_digest(data)


def seal_digest(segment: str, size: int, content: bytes) -> bytes:
    """Return the 16-byte digest a SEAL carries for ``segment`` of ``size`` bytes whose content digest
    (``segment_digest``) is ``content``.

    The content digest alone does not cover where the bytes belong: an empty segment's SEAL is the only
    frame that names it, and the digest of zero bytes is the same for every name, so a damaged name
    would pass. Binding name and size makes every SEAL vouch for its whole header.
    """
    head = segment.encode("utf-8", "surrogatepass") + b"\0" + size.to_bytes(8, "big")
    return xxhash.xxh3_128_digest(head + content)


EMPTY_DIGEST = segment_digest(b"")
"""The content digest of an empty segment."""
