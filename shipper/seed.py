"""The shipper's end of a seed transfer (protocol/seed.py): when a target's WELCOME says its copy is
Seeding, send it a base image over that connection instead of segments, then reconnect to ship the log
from the segment that follows the image.

The image is the stream's ``seed_command`` output, spooled once per target (shipper/seed_image.py), so
that a cut or a restart resumes the same image at the receiver's durable offset. Its chunks go out as
DATA frames (checked, compressed, tagged like segments), paced by the target's rate limit, with a
window of unacknowledged bytes freed by SEED_ACKs. While a target seeds, retention keeps every segment
(its position counts as the stream's start); afterwards the target's position is the image's ``after``,
so the segment that must follow the image is kept until the target has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.aio import FramedConnection
from protocol.digest import chunk_digest
from protocol.messages import Data, Error, Heartbeat, Position
from protocol.seed import IMAGE_PREFIX, ImageFacts, SeedAck, SeedOffer, SeedWant, SeedWindow, start_offset
from shipper.handshake import Reconnect
from shipper.pacing import TokenBucket
from shipper.seed_image import ImageSpool, SeedError, follows

log = logging.getLogger("shipper")

WINDOW = 32 << 20
"""Image bytes in flight, unacknowledged, at most."""


@dataclass(frozen=True, slots=True)
class SeedSettings:
    """How a stream's base image is made (the sender's ``config.seed``)."""

    command: str
    """Shell command writing the image (a tar) to stdout; may name the first segment in $LOGSHIP_SEED_FIRST."""
    spool: Path
    """Where the image is spooled for this target (``<state_dir>/seed/<stream>/<target>``)."""
    timeout: float | None = None
    """Seconds the command may run; None: no limit."""


class SeedProgress:
    """What status shows of one target's transfer: bytes, rate, ETA."""

    def __init__(self) -> None:
        self.state = "waiting"
        self.image = ""
        self.size = 0
        self.acked = 0
        self.start = 0
        self.began = time.monotonic()

    def row(self) -> dict[str, Any]:
        elapsed = max(1e-6, time.monotonic() - self.began)
        rate = (self.acked - self.start) / elapsed
        left = self.size - self.acked
        eta = round(left / rate, 1) if rate > 0 and self.state == "sending" else None
        return {
            "state": self.state,
            "image": self.image,
            "bytes": self.acked,
            "size": self.size,
            "rate": round(rate),
            "eta": eta,
        }


async def send_seed(sender: Any, conn: FramedConnection) -> None:
    """Send the base image to a Seeding target over ``conn`` (a ``TargetSender``'s connection); return
    once the target installed it. Raises Reconnect, SeedError, TimeoutError, ConnectionClosed."""
    cfg = sender.config
    settings: SeedSettings | None = cfg.seed
    if settings is None:
        raise Reconnect("the target is Seeding, and this stream has no seed_command")
    stats = sender.stats
    # Retention keeps everything while the target seeds: it holds nothing of the log yet.
    stats.known, stats.acked, stats.acked_sealed, stats.replayed = True, Position("", 0), True, None
    progress = SeedProgress()
    stats.seed = progress
    want = await _expect(conn, SeedWant, cfg.ack_timeout)
    spool = ImageSpool(settings.spool)
    img = spool.load()
    if img is not None:
        try:
            follows(sender.tailer.names, sender.tailer.segments, img.first)
        except SeedError as e:
            log.warning("target %s (stream %s): spooled image no longer usable: %s", sender.name, sender.stream, e)
            spool.drop()
            img = None
    if img is None:
        progress.state = "making"
        img = await _make(sender, conn, spool, settings)
    start = start_offset(want, img.image, img.size)
    progress.image, progress.size, progress.acked, progress.start = img.image, img.size, start, start
    progress.began, progress.state = time.monotonic(), "sending"
    log.warning(
        "target %s (stream %s): Seeding: sending image %s (%d bytes) from %d; the log continues at %s",
        sender.name,
        sender.stream,
        img.image,
        img.size,
        start,
        img.first or "the stream's start",
    )
    conn.send(SeedOffer.of(sender.stream, img, start))
    window = SeedWindow(img.image, img.size, start, WINDOW)
    acked = asyncio.Event()
    reader = asyncio.create_task(_read_acks(conn, window, progress, acked, cfg.ack_timeout), name="seed-acks")
    try:
        await _send_image(sender, conn, img, spool.tar, window, acked, reader)
        async with asyncio.timeout(cfg.ack_timeout * 4):
            await reader
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
        if progress.state == "refused":
            spool.drop()
    progress.state = "installed"
    spool.drop()
    # The next connection ships the log from the image's first segment.
    sender._was_healthy = True
    log.warning(
        "target %s (stream %s): SEEDED: image %s installed there; shipping the log from %s",
        sender.name,
        sender.stream,
        img.image,
        img.first or "the stream's start",
    )


async def _expect(conn: FramedConnection, kind: type, timeout: float) -> Any:
    while True:
        msg = await conn.recv(timeout)
        if isinstance(msg, kind):
            return msg
        if isinstance(msg, Error):
            raise Reconnect(f"target reported {msg.code}: {msg.text}")
        if not isinstance(msg, Heartbeat):
            raise Reconnect(f"unexpected {type(msg).__name__} from a Seeding target")


async def _make(sender: Any, conn: FramedConnection, spool: ImageSpool, settings: SeedSettings) -> ImageFacts:
    """Run the seed command, heartbeating the target meanwhile (it waits for the offer)."""
    tailer = sender.tailer
    task = asyncio.create_task(
        spool.make(settings.command, sender.stream, list(tailer.names), lambda: tailer.segments, settings.timeout)
    )
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=sender.config.heartbeat)
            if done:
                return task.result()
            conn.send(Heartbeat())
            await conn.drain()
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def _read_acks(
    conn: FramedConnection, window: SeedWindow, progress: SeedProgress, acked: asyncio.Event, timeout: float
) -> None:
    while not window.done:
        msg = await conn.recv(timeout)
        if isinstance(msg, SeedAck):
            window.on_ack(msg)
            progress.acked = window.acked
            acked.set()
        elif isinstance(msg, Error):
            if msg.code == "bad-digest":
                # The target refused the whole image: make a new one next time rather than resend this one.
                progress.state = "refused"
            raise Reconnect(f"target reported {msg.code}: {msg.text}")
        elif not isinstance(msg, Heartbeat):
            raise Reconnect(f"unexpected {type(msg).__name__} during the seed transfer")


async def _send_image(
    sender: Any,
    conn: FramedConnection,
    img: ImageFacts,
    path: Path,
    window: SeedWindow,
    acked: asyncio.Event,
    reader: asyncio.Task[None],
) -> None:
    cfg = sender.config
    chunk = cfg.chunk_size
    bucket = TokenBucket(cfg.rate_limit, max(64 * 1024, cfg.rate_limit * 0.02)) if cfg.rate_limit else None
    segment = IMAGE_PREFIX + img.image
    last = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        while window.sent < img.size:
            if reader.done():
                reader.result()  # its error, or a receiver that ended early
                raise Reconnect("the target stopped acknowledging the image")
            room = window.room
            if room == 0:
                acked.clear()
                await conn.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(cfg.heartbeat):
                        await acked.wait()
                if time.monotonic() - last >= cfg.heartbeat:
                    conn.send(Heartbeat())
                    last = time.monotonic()
                continue
            offset = window.sent
            payload = os.pread(fd, min(chunk, room), offset)
            if not payload:
                raise SeedError(f"spooled image {path} is shorter than {img.size} bytes")
            wire = conn.send(Data(sender.stream, segment, offset, chunk_digest(segment, offset, payload), payload))
            window.on_sent(len(payload))
            sender.stats.bytes_wire += wire
            last = time.monotonic()
            if conn.writer.transport.get_write_buffer_size() > chunk * 2:
                await conn.drain()
            if bucket is not None:
                pause = bucket.reserve(wire, time.monotonic())
                if pause > 0:
                    await asyncio.sleep(pause)
        await conn.drain()
    finally:
        os.close(fd)
