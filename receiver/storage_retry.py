"""A write or fsync of a copy that failed in a way that can be redone (EIO and kin): drop, back off, resend.

An I/O error on a write is transient (protocol/failures.py): a path failover, a device or controller
reset, an NFS server back. The receiver then acknowledges nothing more, drops what it had not
acknowledged, answers ERROR ``storage-retry`` (the shipper backs off, capped and jittered, and shows
Retrying) and takes the bytes again at the next connection. Nothing acknowledged is lost: every ACK
came after a sync that returned.

Why drop instead of simply syncing again: an fsync that failed is not safely retryable on the same
file. Linux marks the dirty pages clean (or drops them) after a failed writeback, so a second fsync
returns success with the bytes never written, and a read of them answers from the page cache, not
from the disk (PostgreSQL's "fsyncgate", 2018). Recovery must not trust what the file seems to hold
beyond the last durable, verified offset: the unacknowledged tail is cut (the partial truncated to the
acknowledged offset, a newer partial to nothing) and received again. The cut is made before anything
reads the partial again (``SegmentStore.recover()`` verifies its chunks by reading them back); when
even the cut fails, it is remembered and made before the next connection's recovery.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass, field

from logship.files import from_the_disk
from protocol.failures import Kind, classify_os_error, errno_name
from protocol.messages import START, Position
from receiver import chunk_index
from receiver.store import SegmentStore

log = logging.getLogger("receiver")


def is_storage_retry(error: BaseException) -> bool:
    """Return whether ``error`` is an I/O error of a write that can be redone (not a full disk)."""
    no_space = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT)  # receiver/space.py's
    return classify_os_error(error) is Kind.TRANSIENT and not no_space


def cut_to(segment: str, acked: Position, sealed: bool) -> int | None:
    """Return the length a partial of ``segment`` keeps after a failed write: the acknowledged offset of
    the acknowledged segment, 0 for a newer one; None for an older one (recovery quarantines it). Pure."""
    if acked == START or segment > acked.segment:
        return 0
    if segment == acked.segment and not sealed:
        return acked.offset
    return None


def drop_unacknowledged(store: SegmentStore, acked: Position, sealed: bool) -> int:
    """Cut every partial of ``store`` back to what was acknowledged; return the bytes dropped.

    Raises OSError when a cut fails (the storage is still failing).
    """
    dropped = 0
    for path in sorted(store.incoming.glob("*.partial")):
        keep = cut_to(path.name[: -len(".partial")], acked, sealed)
        if keep is None:
            continue
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size > keep:
                os.ftruncate(fd, keep)
                os.fsync(fd)
                dropped += size - keep
            # Inline records (receiver/chunk_index.py) past the cut would be written back by recovery.
            chunk_index.cut_records(store.idx_path(path.name[: -len(".partial")]), keep)
            # Whatever the cache still holds of the kept range is read from the disk again by recovery.
            from_the_disk(fd)
        finally:
            os.close(fd)
    # recover() cuts the chunk records (.idx) that no longer have their bytes.
    return dropped


@dataclass(slots=True)
class Episode:
    """One copy's storage failing, from its first failed write to its next acknowledgement."""

    since: float
    reason: str
    failures: int = 0
    cut_pending: tuple[Position, bool] | None = None
    """The acknowledged position to cut back to before the next recovery (the cut itself failed)."""


@dataclass
class StorageTrouble:
    """The copies whose storage failed lately, shared by the connections of one receiver."""

    episodes: dict[str, Episode] = field(default_factory=dict)

    def failed(self, store: SegmentStore, stream: str, error: BaseException, acked: Position, sealed: bool) -> str:
        """Record a failed write or sync of ``stream``, cut its unacknowledged tail; return the ERROR text.

        Logged at ERROR once per episode, however many attempts fail meanwhile.
        """
        store.close()
        store.close_manifest()  # reopened at the next append: a descriptor that saw EIO is not trusted
        episode = self.episodes.get(stream)
        text = f"({errno_name(error)}) on stream {stream}: {getattr(error, 'strerror', None) or error}"
        if episode is None:
            episode = self.episodes[stream] = Episode(time.monotonic(), text)
        episode.failures += 1
        episode.reason = text
        try:
            dropped = drop_unacknowledged(store, acked, sealed)
            episode.cut_pending = None
        except OSError:
            dropped = -1
            episode.cut_pending = (acked, sealed)
        what = (
            f"dropped {dropped} bytes not acknowledged"
            if dropped >= 0
            else "the bytes not acknowledged are cut before the copy is read again"
        )
        if episode.failures == 1:
            log.error(
                "stream %s: storage failed %s; %s, telling the shipper to back off and resend (nothing "
                "acknowledged is lost)",
                stream,
                text,
                what,
            )
        else:
            log.debug("stream %s: storage failed again (%d): %s; %s", stream, episode.failures, text, what)
        return f"{text}; {what}, back off and resend"

    def failed_recovery(self, stream: str, error: BaseException) -> str:
        """Record that ``stream``'s copy could not be recovered from disk (EIO); return the ERROR text."""
        text = f"({errno_name(error)}) on stream {stream}: {getattr(error, 'strerror', None) or error}"
        episode = self.episodes.get(stream)
        if episode is None:
            episode = self.episodes[stream] = Episode(time.monotonic(), text)
            log.error("stream %s: storage failed %s reading the copy back; telling shippers to back off", stream, text)
        episode.failures += 1
        episode.reason = text
        return f"{text} reading the copy back; back off"

    def before_recover(self, store: SegmentStore, stream: str) -> None:
        """Make a cut that failed before, before recovery reads the partial. Raises OSError."""
        episode = self.episodes.get(stream)
        if episode is not None and episode.cut_pending is not None:
            drop_unacknowledged(store, *episode.cut_pending)
            episode.cut_pending = None

    def acknowledged(self, stream: str) -> None:
        """The copy's storage took bytes again: end its episode (one WARNING)."""
        episode = self.episodes.pop(stream, None)
        if episode is not None:
            log.warning(
                "stream %s: storage works again after %d failed attempts in %.1fs",
                stream,
                episode.failures,
                time.monotonic() - episode.since,
            )

    def problem(self, stream: str) -> str | None:
        """Return the current storage failure of ``stream``'s copy, or None."""
        episode = self.episodes.get(stream)
        return None if episode is None else f"storage failed {episode.reason} x{episode.failures}"
