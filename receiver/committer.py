"""Group commit of one attached stream: queued storage ops are written and fsynced in a worker thread,
and acknowledged only once durable.

Everything that piled up while the previous batch was being written goes into the next one; while one
batch is being fdatasynced the next is already written. ``Attachment.submit()`` queues, the commit loop
writes and syncs, ``detach()`` finishes the writes in hand.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from protocol.aio import FramedConnection
from protocol.buffers import BufferPool
from protocol.errors import ErrorCode
from protocol.messages import START, Ack, Error, Position
from receiver.ingest import Ingest
from receiver.manifest import Installed
from receiver.ops import Install, Op, Restart, Write
from receiver.space import SpaceGuard, is_no_space
from receiver.storage_retry import drop_unacknowledged, is_storage_retry
from receiver.store import SegmentStore
from receiver.writers import Writer

log = logging.getLogger("receiver")


class CommittedCopy(Protocol):
    """What a committer needs of its stream's copy (receiver/copy.py's ``StreamCopy``)."""

    name: str
    store: SegmentStore

    @property
    def replayed_position(self) -> Position: ...

    def on_installed(self, records: list[Installed]) -> None: ...


C = TypeVar("C", bound=CommittedCopy)


_COMMITS = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="commit")
"""The worker threads that write and sync batches. Its own pool, not the loop's default executor, so a
batch is handed over with ``submit()`` and no asyncio wrapper: ``run_in_executor`` would post one more
wake-up to the loop per batch (the wrapped future's completion) beside the batch's own."""


class _Batch:
    """One batch of storage ops from its write to its ACK. A single trip to a worker thread writes it
    and then syncs it, and tells the loop once, when it is done (``written`` and ``synced`` resolve
    then). Only when more ops were already waiting once the write was done does it tell the loop
    early too (``written``), so their batch is written while this one is being synced. Holds its
    payloads (``ops``) until the commit loop sees the write done: the buffers go back to the pool then."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        store: SegmentStore,
        ops: list[Op],
        on_synced: Callable[[_Batch], None] | None = None,
        more_waiting: Callable[[], bool] = lambda: False,
    ) -> None:
        self.nbytes = 0
        self.sync_returned = False
        """Set on the loop once the worker's sync returned without error."""
        self.finished = False
        """Acknowledged (or found not to need it): by ``on_synced`` or the commit loop, once."""
        self.write_done = False
        """Set by the worker thread once the write returned (``installed`` then holds its result): the
        commit loop may start the next write without waiting for ``written``."""
        self.installed: list[Installed] = []
        self._on_synced = on_synced
        self._more_waiting = more_waiting
        self.events: list[Install | Restart] = []
        self.installed_before_failure: list[Installed] = []
        """What a write that failed part-way had installed already (in log/ and the manifest)."""
        ack: tuple[Position, bool] | None = None
        for op in ops:
            if isinstance(op, Write):
                self.nbytes += len(op.payload)
                ack = Position(op.segment, op.offset + len(op.payload)), False
            elif isinstance(op, Install | Restart):  # a Rewrite or Rehash (receiver/rewrite.py) moves nothing
                self.events.append(op)
                if isinstance(op, Install):
                    ack = Position(op.segment, op.size), True
        self.ack = ack if ack is not None else (START, False)
        self.ops = ops
        self.written: asyncio.Future[list[Installed]] = loop.create_future()
        self.synced: asyncio.Future[None] = loop.create_future()
        # Its failure is the written future's, reported there; do not warn about it a second time.
        self.synced.add_done_callback(lambda f: f.cancelled() or f.exception())
        _COMMITS.submit(self._run, loop, store, ops)

    def _run(self, loop: asyncio.AbstractEventLoop, store: SegmentStore, ops: list[Op]) -> None:
        try:
            pending, installed = store.write(ops)
        except BaseException as e:  # noqa: BLE001 (the loop must hear of any failure, or it waits for ever)
            # Set before the loop hears of the failure (the call below), so it reads the final list.
            self.installed_before_failure = list(getattr(store, "installed", ()))
            _post(loop, self._done, None, e)
            return
        self.installed = installed
        self.write_done = True
        # After write_done is set: ops submitted from now on find it set (and their batch starts at
        # once); ops submitted before are seen here. Either way nobody waits for this batch's sync.
        if self._more_waiting():
            _post(loop, _settle, self.written, installed, None)
        try:
            store.sync(pending)
        except BaseException as e:  # noqa: BLE001 (as above)
            _post(loop, self._done, installed, e)
            return
        _post(loop, self._done, installed, None)

    def _done(self, installed: list[Installed] | None, exc: BaseException | None) -> None:
        # On the loop: the one wake-up of a batch that nobody was waiting behind.
        _settle(self.written, installed, exc if installed is None else None)
        if exc is not None:
            if not self.synced.done():
                self.synced.set_exception(exc)
            return
        if not self.synced.done():
            self.synced.set_result(None)
        if self._on_synced is not None:
            # Straight from here: waiting for the commit loop to wake for it would add a loop iteration
            # before the ACK, behind whatever else is ready (scripts/bench lag: synced -> ACK p99 2 ms).
            self._on_synced(self)


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closing: nobody to tell
        loop.call_soon_threadsafe(callback, *args)


def _settle(fut: asyncio.Future[list[Installed]], result: list[Installed] | None, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        assert result is not None
        fut.set_result(result)


class Attachment(Generic[C]):
    """A stream attached to one connection: its ingest state and its committer task."""

    def __init__(
        self,
        copy: C,
        conn: FramedConnection,
        ingest: Ingest,
        durable: Position,
        sealed: bool,
        max_pending: int,
        pool: BufferPool | None = None,
        space: SpaceGuard | None = None,
    ) -> None:
        self.copy = copy
        self.pool = pool
        self.space = space
        self.who: Writer | None = None
        """The shipper writing through this attachment (receiver/writers.py), set once attached."""
        self.taken_over_by: Writer | None = None
        """The shipper of the connection taking this one over (waiting for the stream's lock)."""
        self.conn = conn
        self.ingest = ingest
        self.acked = durable
        self.acked_sealed = sealed
        self.max_pending = max_pending
        self.pending: list[Op] = []
        self.pending_bytes = 0
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.closing = False
        self.error: BaseException | None = None
        self._syncing: _Batch | None = None
        """The batch written before the one in hand, not yet acknowledged (all before it are)."""
        self._writing: _Batch | None = None
        """The batch in hand: its write not yet seen done by the commit loop."""
        self.task = asyncio.create_task(self._commit_loop(), name=f"commit-{copy.name}")

    def submit(self, ops: list[Op]) -> None:
        self.pending.extend(ops)
        for op in ops:
            if isinstance(op, Write):
                self.pending_bytes += len(op.payload)
        if self.pending_bytes >= self.max_pending:
            self.room.clear()
        self.wake.set()

    async def _commit_loop(self) -> None:
        # Two batches in the pipe: while one is being fdatasynced the next is already written (the
        # sync makes durable at least what was written before it began). A batch is acknowledged only
        # once its own sync and every earlier one returned. Each batch is one trip to a worker thread
        # (write, then sync) and one wake-up of the loop when it is done: a trickle of appends pays
        # one thread hand-off each way, no more. The next batch may start once the write is done
        # (``write_done``, set by the worker), seen either here when new ops wake us or from the
        # worker's early word when they were waiting already.
        loop = asyncio.get_running_loop()
        store = self.copy.store
        syncing: _Batch | None = None
        writing: _Batch | None = None
        try:
            while True:
                self.wake.clear()
                if writing is not None:
                    batch = writing
                    if batch.written.done():
                        try:
                            installed = batch.written.result()
                        except Exception:
                            await asyncio.wait({batch.synced})
                            # Segments installed before the write failed (ENOSPC on a later chunk) are
                            # in log/ and the manifest: replay must know them, or it sees a gap and Fails.
                            self.copy.on_installed(batch.installed_before_failure)
                            raise
                    elif batch.write_done:
                        installed = batch.installed
                    else:
                        await self.wake.wait()
                        continue
                    writing = self._writing = None
                    # Only one write at a time: the store's open segment is the writer's state.
                    self.copy.on_installed(installed)
                    self._recycle(batch.ops)
                    if syncing is not None:
                        await self._finish(syncing)
                    syncing = self._syncing = batch
                    if batch.sync_returned:
                        self._ack(batch)
                elif self.pending:
                    ops, self.pending = self.pending, []
                    writing = self._writing = _Batch(loop, store, ops, self._on_synced, self._more_waiting)
                    # Its write or sync ending wakes us like new work does: one event to wait on.
                    writing.written.add_done_callback(self._wake)
                    writing.synced.add_done_callback(self._wake)
                elif syncing is not None:
                    if syncing.synced.done():
                        batch, syncing = syncing, None
                        self._syncing = None
                        await self._finish(batch)
                    else:
                        await self.wake.wait()
                elif self.closing:
                    # Once closing, never wait again: a detach() that came while a batch was being
                    # written set the event only once.
                    return
                else:
                    await self.wake.wait()
        except Exception as e:
            # Storage failed (or, never seen, a bug here): acknowledge nothing more and close, so the
            # shipper reconnects and the copy is recovered from disk, instead of a silent stall.
            self.error = e
            if is_no_space(e) and self.space is not None:
                # Transient: the guard logs the full disk once; the shipper is told to back off
                # (instead of reconnecting at once into the same full disk).
                reason = self.space.enospc(e)
                self.space.refused_streams.add(self.copy.name)
                # What was written but not synced must not be offered as the next resume position
                # (recovery would read it back from the page cache): cut back to what was acknowledged.
                if syncing is not None:
                    await asyncio.wait({syncing.synced})
                self.copy.store.close()
                with contextlib.suppress(OSError):
                    drop_unacknowledged(self.copy.store, self.acked, self.acked_sealed)
                if not self.conn.closing:
                    self.conn.send(Error(ErrorCode.NO_SPACE, reason))
            elif is_storage_retry(e) and self.space is not None:
                # EIO and kin: transient too. What was not acknowledged is cut (an fsync that failed
                # cannot be trusted again: receiver/storage_retry.py), then the shipper backs off and
                # sends it again. Cut once the batch in hand is done with its descriptors.
                if syncing is not None:
                    await asyncio.wait({syncing.synced})
                reason = self.space.storage.failed(self.copy.store, self.copy.name, e, self.acked, self.acked_sealed)
                if not self.conn.closing:
                    self.conn.send(Error(ErrorCode.STORAGE_RETRY, reason))
            else:
                # A copy whose files vanished (its dir deleted under us) is one WARNING here: the data
                # dir's watch (logship/dirwatch.py) says the one ERROR of what it means for the receiver.
                text = "stream %s: storage failed, acknowledging nothing more: %s"
                if isinstance(e, FileNotFoundError) and not self.copy.store.root.exists():
                    log.warning(text, self.copy.name, e)
                else:
                    log.error(text, self.copy.name, e, exc_info=not isinstance(e, OSError))
            if syncing is not None:
                # Let its descriptors be closed before anyone recovers the copy from disk.
                await asyncio.wait({syncing.synced})
            self.copy.store.close()
            self.conn.writer.close()
            self.room.set()

    def _on_synced(self, batch: _Batch) -> None:
        # Only the oldest batch not yet acknowledged may be: a later one waits for the commit loop,
        # which acknowledges in order once every earlier sync returned. The batch in hand is the
        # oldest once the one before it is acknowledged; one that installed or quarantined a segment
        # waits for the commit loop, which tells the copy of its installs first.
        batch.sync_returned = True
        if self.error is not None:
            return
        if batch is self._syncing:
            self._ack(batch)
        elif batch is self._writing and not batch.events and (self._syncing is None or self._syncing.finished):
            self._ack(batch)

    def _wake(self, _: object) -> None:
        self.wake.set()

    def _more_waiting(self) -> bool:
        # Read from the worker thread: a list's length, under the GIL.
        return bool(self.pending) or self.closing

    async def _finish(self, batch: _Batch) -> None:
        await batch.synced
        self._ack(batch)

    def _ack(self, batch: _Batch) -> None:
        if batch.finished:
            return
        batch.finished = True
        self.pending_bytes -= batch.nbytes
        if self.pending_bytes < self.max_pending:
            self.room.set()
        for op in batch.events:
            if isinstance(op, Install):
                log.info("stream %s: sealed %s (%d bytes)", self.copy.name, op.segment, op.size)
            else:
                log.warning("stream %s: %s quarantined: %s", self.copy.name, op.segment, op.reason)
                if self.acked.segment == op.segment and not self.acked_sealed:
                    # Its bytes are gone: the resend from 0 must be acknowledged again as it becomes durable
                    # (else no ACK comes below the old position and a window smaller than it stalls).
                    self.acked = Position(op.segment, 0)
        position, sealed = batch.ack
        if (position, sealed) > (self.acked, self.acked_sealed):
            self.acked, self.acked_sealed = position, sealed
            if self.space is not None and self.space.storage.episodes:
                self.space.storage.acknowledged(self.copy.name)
            if not self.conn.closing:
                self.conn.send(Ack(self.copy.name, position, sealed, self.copy.replayed_position))

    def _recycle(self, ops: list[Op]) -> None:
        # The payloads are in the page cache (write() copied them) and the ops were their last holders
        # (the frames that carried them were consumed by the ingest): the buffers can take new payloads.
        if self.pool is None:
            return
        for op in ops:
            if isinstance(op, Write):
                self.pool.give(op.payload)  # (takes back only buffers of its own)

    async def detach(self) -> None:
        """Finish the writes in hand, make them durable, and stop."""
        self.closing = True
        self.wake.set()
        with contextlib.suppress(Exception):
            await self.task
        self.copy.store.close()
        if self.error is None and self.space is not None and self.space.storage.episodes:
            # A whole connection without a failed write (it may have had nothing to write: what the
            # failed one installed was already in log/) ends a storage episode as an ACK does.
            self.space.storage.acknowledged(self.copy.name)
