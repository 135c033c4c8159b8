"""Wire a stream's tailer to one sender per target and run them until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

from shipper.config import StreamConfig
from shipper.sender import SenderConfig, TargetSender
from shipper.tailer import Tailer

log = logging.getLogger("shipper")


class ShipperService:
    """A tailer plus its senders."""

    def __init__(self, stream: StreamConfig, node: str, sender_config: SenderConfig | None = None) -> None:
        self.stream = stream
        self.tailer = Tailer(stream.source, stream.pattern, stream.policy, stream.poll_interval)
        base = sender_config or SenderConfig()
        self.senders = [
            TargetSender(
                stream.name,
                t.address,
                t.secret,
                self.tailer,
                node,
                stream.epoch,
                # Compression and the rate limit are per target.
                dataclasses.replace(base, compression=t.compression, rate_limit=t.rate_limit),
                tls=t.tls,
            )
            for t in stream.targets
        ]

    async def run(self, stop: asyncio.Event) -> None:
        self.tailer.scan()
        tasks = [asyncio.create_task(self.tailer.run(), name="tailer")]
        tasks += [asyncio.create_task(s.run(), name=f"sender-{s.name}") for s in self.senders]
        stopper = asyncio.create_task(stop.wait())
        try:
            senders = set(tasks[1:])
            while senders:
                done, _ = await asyncio.wait(senders | {stopper}, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    break
                for task in done & senders:
                    senders.discard(task)
                    if task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            if not senders:
                log.error("every target of stream %s is fenced; nothing left to ship to", self.stream.name)
        finally:
            for task in [*tasks, stopper]:
                task.cancel()
            for task in [*tasks, stopper]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
