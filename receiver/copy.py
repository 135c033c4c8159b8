"""One stream's copy at this receiver: its store, persisted state, manifest records, replayer and writer.

Used by the running server and, with no receiver running, by the operator commands on the data dir.
Its state changes only through ``CopyState``'s transitions (receiver/state.py); this class persists
them, one write at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from protocol.messages import Ack, Position, SourceHead
from receiver.committer import Attachment
from receiver.config import ReplaySettings
from receiver.history_file import history_rows
from receiver.manifest import Base, Installed
from receiver.replayer import Replayer
from receiver.retention import StandbyRetainer, retention_fields
from receiver.retention_config import RetentionSettings
from receiver.space import write_until_room
from receiver.state import Role, load_state
from receiver.status import copy_row
from receiver.store import SegmentStore
from receiver.writers import Writer

log = logging.getLogger("receiver")


class StreamCopy:
    """One stream's copy at this receiver: its store, persisted state, replayer, and current writer."""

    def __init__(
        self,
        name: str,
        store: SegmentStore,
        replay: ReplaySettings | None = None,
        retention: RetentionSettings | None = None,
    ) -> None:
        self.name = name
        self.store = store
        self.state = load_state(store.state_path)
        self.installed: list[Installed] = store.read_manifest()
        self.base: Base | None = store.read_manifest_base()
        """Where ``installed``'s chain starts (receiver/manifest.py Base); None: at the stream's start."""
        self.installed_at = time.time()
        self.lock = asyncio.Lock()
        self.owner: Attachment[StreamCopy] | None = None
        self.attaching: Writer | None = None
        """The shipper of a connection attaching the copy (holding its lock, not yet its owner)."""
        self.resends = 0
        self.bytes_received = 0
        self.attached_once = False
        self.activating = False
        self.source_head: tuple[SourceHead, float] | None = None
        """The shipper's last word on its source (head, copy queue) and when it came; None until then."""
        """Set while an activation runs: new shippers are fenced from that moment on."""
        self.seed: Any = None
        """The seed transfer under way (receiver/seed.py Progress), shown by status; None when none runs."""
        self._save_lock = asyncio.Lock()
        self.replayer = Replayer(self, replay or ReplaySettings(), on_replayed=self._on_replayed)
        directory = self.replayer.settings.mode == "directory"
        self.retainer = StandbyRetainer(self, retention or RetentionSettings(), directory)
        """Standby retention (receiver/retention.py): runs only in a receiver, started with the replayer."""

    def start(self) -> None:
        """Start replaying and trimming (a running receiver; operator commands on the data dir do neither)."""
        self.replayer.start()
        self.retainer.start()

    async def stop(self) -> None:
        await self.retainer.stop()
        await self.replayer.stop()

    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def failed(self) -> str | None:
        return self.state.failed

    @property
    def activated(self) -> bool:
        return self.activating or self.state.activated is not None

    @property
    def replayed_position(self) -> Position:
        return self.state.replayed_position

    async def save_state(self) -> None:
        # The replayer and the sessions both write state.json: one write at a time, newest state last.
        # A full disk is waited out (retried, newest state each time), not a traceback.
        async with self._save_lock:
            await write_until_room(self.store.state_path, self.state.to_bytes)

    def on_installed(self, records: list[Installed]) -> None:
        """Take the manifest records of fresh installs and wake the replayer."""
        if not records:
            return
        for record in records:
            if self.installed and record.name <= self.installed[-1].name:
                # A segment installed again (after a quarantine): the newest record wins.
                self.installed = [r for r in self.installed if r.name != record.name]
                self.installed.append(record)
                self.installed.sort(key=lambda r: r.name)
            else:
                self.installed.append(record)
        self.replayer.wake.set()

    async def suspend(self, comment: str | None) -> None:
        """Stop replaying this stream (persisted); copying goes on."""
        self.state.suspend(time.time(), comment)
        await self.save_state()
        self.retainer.wake.set()
        log.warning("stream %s: replay suspended%s", self.name, f": {comment}" if comment else "")

    async def resume(self, comment: str | None) -> str | None:
        """Replay again from where it stopped; clear a replay failure and a copy-level one (persisted).

        Return the copy-level failure cleared, if there was one: the next shipper connection is accepted.
        """
        cleared = self.state.clear_failure() if self.state.role is Role.FAILED else None
        self.state.resume(comment)
        self.replayer.failures = 0
        await self.save_state()
        self.replayer.wake.set()
        # What waited out the truncation lag while the copy was held may go now.
        self.retainer.wake.set()
        note = f": {comment}" if comment else ""
        if cleared is not None:
            log.warning("stream %s: copy failure cleared (%s); shippers are accepted again%s", self.name, cleared, note)
        log.warning("stream %s: replay resumed%s", self.name, note)
        return cleared

    def row(self, now: float, running: bool = True) -> dict[str, Any]:
        row = copy_row(
            self.name,
            self.state,
            self.installed,
            now,
            (self.owner is not None) if running else None,
            self.attached_once,
            self.replayer.settings.lag,
            history_rows(self.store.root),
            self.source_head if running and self.owner is not None else None,
        )
        if self.seed is not None:
            row["seed"] = self.seed.row()
        if running and not self.store.root.exists():
            # The stream's directory was deleted under a running receiver (the data dir is still
            # there, so the receiver goes on): say so, instead of a Disconnected row with no reason.
            row["state"] = "Failed"
            row["failure"] = f"copy directory {self.store.root} is gone (deleted under the receiver); restart it"
        row.update(retention_fields(self.installed, self.base))
        if not running:
            return row
        # Counted since this receiver started (or measured by it): a running one's status and /metrics only.
        return {**row, "resends": self.resends, "disk_bytes": self.retainer.disk_bytes}

    def _on_replayed(self) -> None:
        if self.state.replayed:
            self.retainer.replayed(self.state.replayed, self.state.replayed_at or time.time())
        # Tell the attached shipper at once, so its retention need not wait for the next data ACK.
        att = self.owner
        if att is not None and not att.conn.closing:
            att.conn.send(Ack(self.name, att.acked, att.acked_sealed, self.replayed_position))
