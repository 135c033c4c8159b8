"""Wire a stream's tailer to one sender per target (and its retainer) and run them until told to stop.

Each target has its own task, connection, cursor and window, so a dead, slow or suspended target
never holds up another. Suspending a target ends its task (and connection); resuming starts a new
one, which continues from the target's durable position like any reconnect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import time
from collections.abc import Iterable, Mapping
from typing import Any

from logship.tasks import cancel_and_wait
from logship.tls import client_tls_context
from shipper.retainer import Retainer, TargetView, retainable
from shipper.seed_config import floor_file, keep_floor, seed_settings
from shipper.sender import TargetSender, TargetState
from shipper.settings import SenderConfig, StreamConfig, TargetConfig, TlsFiles
from shipper.state import Suspension
from shipper.status import LagTracker, copy_queue, end_key, replay_queue
from shipper.status_state import shown, shown_acked
from shipper.tailer import Tailer

log = logging.getLogger("shipper")


def tls_contexts(streams: Iterable[StreamConfig]) -> dict[TlsFiles, ssl.SSLContext]:
    """Build one client TLS context per distinct TLS setting of the streams' targets.

    Raises ConfigError if a certificate, key or CA cannot be loaded.
    """
    contexts: dict[TlsFiles, ssl.SSLContext] = {}
    for stream in streams:
        for files in (t.tls for t in stream.targets):
            if files is not None and files not in contexts:
                contexts[files] = client_tls_context(files.cert, files.key, files.ca)
    return contexts


class ShipperService:
    """A tailer, its senders, and optionally its retainer."""

    def __init__(
        self,
        stream: StreamConfig,
        node: str,
        sender_config: SenderConfig | None = None,
        suspended: dict[str, Suspension] | None = None,
        tls: Mapping[TlsFiles, ssl.SSLContext] | None = None,
    ) -> None:
        """Wire ``stream``; ``tls`` holds the contexts its targets' TLS files name (built here if None).

        Raises ConfigError if ``tls`` is None and a TLS file cannot be loaded.
        """
        self.stream = stream
        contexts = tls_contexts([stream]) if tls is None else tls
        self.tailer = Tailer(stream.source, stream.pattern, stream.policy, stream.poll_interval)
        keep_floor(self.tailer, floor_file(stream))  # issue 17: "needs reseed" survives a restart
        self.targets: dict[str, TargetConfig] = {t.name: t for t in stream.targets}
        self.senders = [
            TargetSender(
                stream.name,
                t.address,
                t.secret,
                self.tailer,
                node,
                stream.epoch,
                # Compression and the rate limit are per target.
                dataclasses.replace(
                    t.sender or sender_config or SenderConfig(),
                    compression=t.compression,
                    rate_limit=t.rate_limit,
                    payload_mac=t.payload_mac,
                    history=stream.history,
                    seed=seed_settings(stream, t),  # issue 17
                ),
                tls=contexts[t.tls] if t.tls is not None else None,
            )
            for t in stream.targets
        ]
        self.by_name = {s.name: s for s in self.senders}
        self.suspended: dict[str, Suspension] = dict(suspended or {})
        self.lag = {s.name: LagTracker() for s in self.senders}
        self.retainer: Retainer | None = None
        if stream.retain:
            self.retainer = Retainer(
                stream.name,
                stream.source,
                lambda: self.tailer.segments,
                self.target_views,
                stream.truncation_lag,
                stream.archive_dir,
            )
            for sender in self.senders:
                sender.on_progress = self.retainer.wake.set
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._changed = self.tailer.subscribe()
        self._wake = asyncio.Event()
        self._fenced_reported = False

    # -- control ---------------------------------------------------------------------------------

    def suspend(self, target: str, suspension: Suspension) -> None:
        """Stop shipping to ``target`` (its connection closes); the others go on."""
        self.suspended[target] = suspension
        task = self._tasks.pop(target, None)
        if task is not None:
            task.cancel()
        self.by_name[target].state = TargetState.SUSPENDED
        log.warning(
            "stream %s: target %s suspended%s",
            self.stream.name,
            target,
            f": {suspension.comment}" if suspension.comment else "",
        )

    def resume(self, target: str) -> None:
        """Ship to ``target`` again, from its durable position."""
        self.suspended.pop(target, None)
        sender = self.by_name[target]
        if sender.state is TargetState.SUSPENDED:
            sender.state = TargetState.INITIALIZING
        self._start(sender)
        log.warning("stream %s: target %s resumed", self.stream.name, target)

    def _start(self, sender: TargetSender) -> None:
        if sender.name in self._tasks or sender.name in self.suspended:
            return
        self._tasks[sender.name] = asyncio.create_task(sender.run(), name=f"sender-{self.stream.name}-{sender.name}")
        self._tasks[sender.name].add_done_callback(lambda _: self._wake.set())

    # -- status ----------------------------------------------------------------------------------

    def _record_source(self) -> None:
        now = time.time()
        end = end_key(self.tailer.segments)
        for tracker in self.lag.values():
            tracker.seed(self.tailer.segments, now)
            tracker.record(end, now)

    def target_views(self) -> list[TargetView]:
        return [
            TargetView(
                s.name,
                s.state.value,
                (s.stats.acked, s.stats.acked_sealed) if s.stats.known else None,
                s.stats.replayed,
                self.targets[s.name].wait_for_replay,
            )
            for s in self.senders
        ]

    def behind(self) -> bool:
        """Whether a target has a copy queue, as its status row would show it: what the progress log
        asks before it builds every row (with 1000 idle streams the rows were most of its cost)."""
        segments, names = self.tailer.segments, self.tailer.names
        for s in self.senders:
            acked = shown_acked(s.stats)
            if acked is not None and copy_queue(segments, names, acked) != (0, 0):
                return True
        return False

    def rows(self, now: float | None = None) -> list[dict[str, Any]]:
        """Return one status row per target (the shape admin/ and ``status`` show)."""
        now = time.time() if now is None else now
        segments, names = self.tailer.segments, self.tailer.names
        holders: dict[str, str] = {}
        if self.retainer is not None:
            # Decide afresh for the display: a target may have been fenced since the retainer last ran.
            holders = retainable(
                segments, self.target_views(), now, self.retainer.lag, self.retainer.last.covered_since
            ).holders
        out = []
        for s in self.senders:
            st = s.stats
            # This run's proven positions, else the previous run's (shipper/status_state.py): display only.
            view = shown(st, names)
            acked = view.acked
            cq = copy_queue(segments, names, acked) if acked is not None else (None, None)
            rq = (
                replay_queue(segments, names, acked, view.replayed)
                if acked is not None and view.replayed is not None
                else (None, None)
            )
            suspension = self.suspended.get(s.name)
            failure = None
            if s.state is not TargetState.HEALTHY and s.state is not TargetState.SUSPENDED:
                failure = st.last_error or None
            if st.stuck:
                failure = f"stuck: {st.stuck}"
            state = s.state.value
            if self.tailer.error is not None and s.state not in (TargetState.FENCED, TargetState.SUSPENDED):
                # Nothing new can be shipped while the source is gone: as loud as a failed copy, until it is back.
                state, failure = TargetState.FAILED.value, self.tailer.error
            # A fenced target will never catch up: a lag growing forever would page someone forever.
            fenced = s.state is TargetState.FENCED
            lag = None if fenced else round(self.lag[s.name].lag(acked, now, consume=view.proven), 3)
            if self.retainer is None:
                retention = "off"
            elif s.name in holders:
                retention = f"holds: {holders[s.name]}"
            elif self.retainer.error:
                retention = f"error: {self.retainer.error}"
            else:
                retention = "ok"
            out.append(
                {
                    "stream": self.stream.name,
                    "target": s.name,
                    "epoch": s.epoch,
                    "history": self.stream.history.to_json(),
                    "seed": st.seed.row() if st.seed is not None else None,
                    "state": state,
                    "copy_queue_segments": cq[0],
                    "copy_queue_bytes": cq[1],
                    "replay_queue_segments": rq[0],
                    "replay_queue_bytes": rq[1],
                    "acked": f"{acked[0]}{' (sealed)' if acked[1] else ''}" if acked is not None else None,
                    "acked_proven": view.proven,
                    "last_copied": view.last_copied or None,
                    "last_copied_at": view.last_copied_at,
                    "last_replayed": (view.replayed.segment or None) if view.replayed is not None else None,
                    "lag_seconds": lag,
                    "copy_lag_seconds": lag,
                    "failure": failure,
                    "suspended": suspension is not None,
                    "comment": suspension.comment if suspension else None,
                    "suspended_at": suspension.since if suspension else None,
                    "retention": retention,
                    "holds_retention": int(s.name in holders),
                    "retention_removed": self.retainer.removed if self.retainer is not None else 0,
                    "connects": st.connects,
                    "resends": st.resends,
                    "bytes_sent": st.bytes_sent,
                    "bytes_wire": st.bytes_wire,
                    "window_bytes": s.window.window,
                    "rtt_ms": round(s.window.rtt * 1000, 1),
                    "delivery_rate_bytes": int(s.window.rate),
                    "compression": str(s.config.compression) if s.config.compression else None,
                    "rate_limit_bytes": int(s.config.rate_limit) if s.config.rate_limit else None,
                }
            )
        return out

    # -- the loop --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self.tailer.scan()
        self._record_source()
        helpers = [
            asyncio.create_task(self.tailer.run(), name=f"tailer-{self.stream.name}"),
            asyncio.create_task(self._monitor(), name=f"monitor-{self.stream.name}"),
        ]
        if self.retainer is not None:
            helpers.append(asyncio.create_task(self.retainer.run(), name=f"retainer-{self.stream.name}"))
        for sender in self.senders:
            if sender.name in self.suspended:
                sender.state = TargetState.SUSPENDED
            else:
                self._start(sender)
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self._wake.clear()
                for name, task in list(self._tasks.items()):
                    if task.done():
                        del self._tasks[name]
                        if not task.cancelled() and task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
                for task in helpers:
                    if task.done():
                        exc = None if task.cancelled() else task.exception()
                        raise exc or RuntimeError(f"{task.get_name()} ended")
                if all(s.state is TargetState.FENCED for s in self.senders) and not self._fenced_reported:
                    self._fenced_reported = True
                    log.error("every target of stream %s is fenced; nothing left to ship to", self.stream.name)
                waker = asyncio.create_task(self._wake.wait())
                await asyncio.wait([stopper, waker, *helpers], return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
        finally:
            await cancel_and_wait(*self._tasks.values(), *helpers, stopper)
            self._tasks.clear()

    async def _monitor(self) -> None:
        """Sample the source's end for the lag trackers whenever the tailer sees a change."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            self._record_source()
            if self.retainer is not None:
                self.retainer.wake.set()
