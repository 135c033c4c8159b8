"""The receiver server: the registry of stream copies, wired to admission and one session per connection.

One ``StreamCopy`` per stream owns the store (receiver/copy.py); connections are accepted and admitted
under ``--max-unauthenticated`` by receiver/admission.py, each is served by a ``Session``
(receiver/session.py), whose attached streams are group-committed by receiver/committer.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from protocol.aio import FramedConnection
from protocol.buffers import BufferPool
from protocol.names import check_stream_name
from receiver.admission import Admission, Slot
from receiver.config import ServerConfig
from receiver.copy import StreamCopy
from receiver.datadir import existing_streams
from receiver.ha_view import add_views
from receiver.session import Session
from receiver.space import SpaceGuard
from receiver.status import waiting_row
from receiver.store import SegmentStore

log = logging.getLogger("receiver")

__all__ = ["ReceiverServer", "ServerConfig"]


class ReceiverServer:
    """The receiver: a TCP server plus the copies of every stream it has seen."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.copies: dict[str, StreamCopy] = {}
        self.sessions: set[asyncio.Task[None]] = set()
        self.admission = Admission(config, self._on_connect, self.sessions)
        # One pool for all connections: it runs on the event loop alone (taken by the decoders, given
        # back by the committers once apply() returned), and bounds the free memory once.
        self.payload_pool = BufferPool()
        self.space = SpaceGuard(config.data_dir, config.min_free)

    @property
    def unauthenticated(self) -> int:
        return self.admission.unauthenticated

    @property
    def refused_busy(self) -> int:
        return self.admission.refused_busy

    def copy(self, name: str) -> StreamCopy:
        """Return the copy of stream ``name``, opening it (and starting its replay) on first use."""
        check_stream_name(name)
        copy = self.copies.get(name)
        if copy is None:
            store = SegmentStore(self.config.data_dir / name)
            copy = StreamCopy(name, store, self.config.replay_for(name), self.config.retention_for(name))
            self.copies[name] = copy
            copy.start()
        return copy

    def known_streams(self) -> list[str]:
        """Return the streams that have a copy in the data dir, in name order."""
        return existing_streams(self.config.data_dir)

    def status(self) -> dict[str, Any]:
        """Return the status snapshot: one row per stream copy."""
        now = time.time()
        admission = self.admission
        copies = [self._row(self.copies[name], now) for name in sorted(self.copies)]
        ha = add_views(copies, self.config.data_dir, now)  # the node's HA agent, while it reports
        return {
            "role": "receiver",
            "node": self.config.node,
            "pid": os.getpid(),
            "copies": copies,
            # How close the receiver is to refusing new connections (the --max-unauthenticated cap).
            "connections": {
                "total": admission.connections_total,
                "unauthenticated": admission.unauthenticated,
                "max_unauthenticated": self.config.max_unauthenticated,
                "refused_busy": admission.refused_busy,
                "frames_refused": admission.frames_refused,
                "refused_no_space": self.space.refusals,
                "disk_full": int(self.space.problem() is not None),
            },
            # A full data dir (below --min-free): shippers are told to back off until space returns.
            "space": {"problem": self.space.problem(), "min_free": str(self.config.min_free)},
            **({"ha": ha} if ha else {}),
        }

    def _row(self, copy: StreamCopy, now: float) -> dict[str, Any]:
        # A copy held up by a full disk (or failing storage) says so in its own row (issue 13).
        replay_wait = copy.state.last_error if copy.replayer.space_waits else None
        return waiting_row(copy.row(now), self.space.waiting(copy.name, replay_wait))

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Open the copies on disk and listen; return the address bound. Raises OSError."""
        # Copies already on disk replay from the start, whether or not their shipper comes back.
        for name in self.known_streams():
            self.copy(name)
        return await self.admission.listen(host, port)

    async def stop(self) -> None:
        """Stop accepting, then let every connection finish its write in hand."""
        self.admission.close()
        for task in list(self.sessions):
            task.cancel()
        if self.sessions:
            await asyncio.gather(*self.sessions, return_exceptions=True)
        await self.admission.wait_closed()
        for copy in self.copies.values():
            await copy.stop()
            copy.store.close_manifest()

    async def _on_connect(self, conn: FramedConnection, slot: Slot | None = None) -> None:
        task = asyncio.current_task()
        assert task is not None
        if slot is None:
            # A plain TCP connection: it takes its slot now, before a byte is read.
            slot = self.admission.take_slot(conn)
            if slot is None:
                return
        self.sessions.add(task)
        session = Session(conn, self.config, self.copy, self.payload_pool, self.space)
        try:
            await session.run(slot)
        except asyncio.CancelledError:
            pass
        except OSError as e:
            # A copy's files vanished under it (a deleted stream or data dir): one line, not a traceback;
            # the data dir's watch (logship/dirwatch.py) says what it means for the receiver.
            log.warning("%s: closing: the copy's files cannot be used: %s", conn.peer, e)
        finally:
            self.admission.frames_refused += session.frames_refused
            slot.release()
            self.sessions.discard(task)
            await conn.close()
