"""Wire a stream's tailer to one sender per target and run them until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from shipper.sender import SenderConfig, TargetSender
from shipper.tailer import SealPolicy, Tailer

log = logging.getLogger("shipper")


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """One stream a shipper ships."""

    name: str
    """Stream name, as the receivers know it."""
    source: Path
    """Directory holding the stream's segments."""
    targets: tuple[tuple[str, int], ...]
    """Receivers to ship to, each with its own connection and cursor."""
    secret: bytes
    """Shared secret proven to every target."""
    pattern: re.Pattern[str]
    """Which file names are segments."""
    policy: SealPolicy
    """When a segment is complete."""
    epoch: int = 0
    """Epoch this shipper claims; a target activated at a newer epoch fences it."""
    poll_interval: float = 0.02
    """Seconds between looks at the source directory."""


class ShipperService:
    """A tailer plus its senders."""

    def __init__(self, stream: StreamConfig, node: str, sender_config: SenderConfig | None = None) -> None:
        self.stream = stream
        self.tailer = Tailer(stream.source, stream.pattern, stream.policy, stream.poll_interval)
        self.senders = [
            TargetSender(stream.name, t, stream.secret, self.tailer, node, stream.epoch, sender_config)
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
