"""The receiver's end of a seed transfer: take a base image over the shipper's connection, durably and
resumably, verify it, install it, and start the copy's chain after it (protocol/seed.py).

``serve_seed()`` runs instead of the segment serve loop on a connection whose WELCOME said ``seed``.
Image bytes are written in batches (one pwritev + fdatasync per batch, then SEED_ACK), so a cut or a
kill -9 of either end resumes at the last acknowledged offset. Once the last byte is durable the whole
image is re-read and checked against the offer's digest, unpacked into ``base/``, the manifest gets its
reseed base (``Base(after, None, now, "reseed")``), and the copy leaves Seeding: copying continues
with the offer's ``first`` segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from protocol.aio import FramedConnection
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.messages import Data, Error, Heartbeat
from protocol.seed import FEATURE, SeedAck, SeedOffer, SeedSink
from receiver.config import ServerConfig
from receiver.copy import StreamCopy
from receiver.manifest import Base
from receiver.seed_files import ImageRefused, SeedFiles
from receiver.state import Role

log = logging.getLogger("receiver")


class InstallFailed(Exception):
    """The seed install command failed on a verified image."""


BATCH = 8 << 20
"""Bytes written per fsync at most (fewer when the connection has nothing more buffered)."""


class Progress:
    """What status shows of a transfer under way: bytes, rate, ETA."""

    def __init__(self, image: str, size: int, start: int) -> None:
        self.image, self.size, self.start, self.durable = image, size, start, start
        self.began = time.monotonic()
        self.state = "receiving"

    def row(self) -> dict[str, Any]:
        elapsed = max(1e-6, time.monotonic() - self.began)
        rate = (self.durable - self.start) / elapsed
        left = self.size - self.durable
        return {
            "image": self.image,
            "state": self.state,
            "bytes": self.durable,
            "size": self.size,
            "rate": round(rate),
            "eta": round(left / rate, 1) if rate > 0 else None,
        }


async def serve_seed(conn: FramedConnection, copy: StreamCopy, config: ServerConfig) -> None:
    """Receive (the rest of) the base image of ``copy``, then install it; return when the connection may close.

    Raises RemoteProtocolError for a peer that breaks the transfer's rules (the caller answers ERROR).
    """
    loop = asyncio.get_running_loop()
    idle_timeout = config.idle_timeout
    files = SeedFiles(copy.store.root)
    held = await loop.run_in_executor(None, files.held)
    sink = SeedSink(copy.name, held)
    conn.send(sink.want())
    await conn.drain()
    offer = await conn.recv(idle_timeout)
    if not isinstance(offer, SeedOffer):
        raise RemoteProtocolError(f"expected SEED_OFFER, got {type(offer).__name__}", code=ErrorCode.BAD_TYPE)
    fresh = sink.on_offer(offer)
    await loop.run_in_executor(None, files.begin, offer, fresh)
    progress = Progress(offer.image, offer.size, offer.start)
    copy.seed = progress
    log.info(
        "stream %s: Seeding: image %s of %d bytes (log continues at %s), %s at %d",
        copy.name,
        offer.image,
        offer.size,
        offer.first,
        "starting" if offer.start == 0 else "resuming",
        offer.start,
    )
    try:
        began = time.monotonic()
        await _receive(conn, files, sink, progress, idle_timeout)
        received = time.monotonic()
        progress.state = "verifying"
        try:
            await loop.run_in_executor(None, files.verify)
            verified = time.monotonic()
            progress.state = "installing"
            if config.seed_install:
                count = await run_install(config.seed_install, copy.name, files)
            else:
                count = await loop.run_in_executor(None, files.install)
            installed = time.monotonic()
        except InstallFailed as e:
            # The image is whole and stays: the next connection installs it again, sending nothing.
            log.error("stream %s: %s; the image is kept and installed again at the next connection", copy.name, e)
            conn.send(Error("seed-install", str(e)))
            return
        except ImageRefused as e:
            where = await loop.run_in_executor(None, files.quarantine, str(e))
            log.error("stream %s: %s; moved to %s; the next connection sends it again", copy.name, e, where)
            conn.send(Error(ErrorCode.BAD_DIGEST, f"seed image refused: {e}"))
            return
        await _seeded(copy, offer, files)
        log.warning(
            "stream %s: SEEDED from image %s (%d bytes, %d files in %s; received in %.2fs, verified in %.2fs, "
            "unpacked in %.2fs); copying continues at %s",
            copy.name,
            offer.image,
            offer.size,
            count,
            files.base,
            received - began,
            verified - received,
            installed - verified,
            offer.first or "the stream's start",
        )
        conn.send(SeedAck(copy.name, offer.image, offer.size, done=True))
        await conn.drain()
    finally:
        files.close()
        copy.seed = None


async def _receive(
    conn: FramedConnection, files: SeedFiles, sink: SeedSink, progress: Progress, idle_timeout: float
) -> None:
    """Take the image's chunks until the last one is durable. One batch is written and fsynced in a
    worker thread while the next one is received (group commit, as the segment store does)."""
    loop = asyncio.get_running_loop()
    assert sink.offer is not None
    image = sink.offer.image
    pending: list[bytes] = []
    pending_at = sink.expected
    pending_bytes = 0
    writing: asyncio.Future[int] | None = None

    async def settle() -> None:
        nonlocal writing
        if writing is not None:
            durable = await writing
            writing = None
            progress.durable = durable
            conn.send(SeedAck(sink.stream, image, durable))

    try:
        while not sink.complete:
            msg = await conn.recv(idle_timeout)
            if isinstance(msg, Data):
                sink.on_data(msg)
                pending.append(msg.payload)
                pending_bytes += len(msg.payload)
            elif isinstance(msg, Heartbeat):
                conn.send(Heartbeat())
                continue
            elif isinstance(msg, Error):
                raise RemoteProtocolError(f"peer reported {msg.code}: {msg.text}", code=ErrorCode.PROTOCOL)
            else:
                raise RemoteProtocolError(f"unexpected {type(msg).__name__} during a seed transfer", code="bad-type")
            # A batch goes once it is large, or the connection has nothing more waiting, or it is the last.
            if pending_bytes >= BATCH or conn.decoder.buffered == 0 or sink.complete:
                if writing is not None and not writing.done() and pending_bytes < BATCH and not sink.complete:
                    continue  # the previous batch is still being written: let this one grow meanwhile
                await settle()
                writing = loop.run_in_executor(None, files.write, pending_at, pending)
                pending_at += pending_bytes
                pending, pending_bytes = [], 0
        await settle()
    finally:
        if writing is not None:
            # Never leave a write running on a file the caller closes next.
            with contextlib.suppress(Exception):
                await writing
    await conn.drain()


async def _seeded(copy: StreamCopy, offer: SeedOffer, files: SeedFiles) -> None:
    """Start the copy's chain after the image and leave Seeding (in this order: a crash in between
    leaves a copy that is still Seeding with its image whole, and the next connection installs it again)."""
    loop = asyncio.get_running_loop()
    now = time.time()
    base = Base(offer.after, None, now, "reseed")
    await loop.run_in_executor(None, copy.store.manifest.rebase, base, [])
    copy.base = base
    copy.installed = []
    copy.state.seeded(offer.after, offer.after_size, now)
    await copy.save_state()
    await loop.run_in_executor(None, files.discard)
    copy.replayer.wake.set()


def resume_point(copy: StreamCopy, last_sealed: str, size: int) -> tuple[str, int]:
    """The last sealed segment a copy's log continues after, and its size: its newest in log/, or, in a
    copy that has none yet (just reseeded), its base's segment. (The session's hook for reseeded copies.)"""
    if last_sealed or copy.base is None or not copy.base.after:
        return last_sealed, size
    state = copy.state
    return copy.base.after, (state.replayed_size or 0) if state.replayed == copy.base.after else 0


def seeding_hello(copy: StreamCopy, features: tuple[str, ...], streams: int) -> bool:
    """Whether this connection is to carry ``copy``'s base image (the WELCOME's ``seed``).

    Raises RemoteProtocolError (code ``seeding``) for a Seeding copy whose shipper cannot send an image
    (no ``seed_command``: it does not list the feature) or that shares its HELLO with other streams.
    """
    if copy.state.role is not Role.SEEDING:
        return False
    if FEATURE not in features:
        raise RemoteProtocolError(
            f"stream {copy.name} is Seeding: its shipper must have a seed_command to send a base image", code="seeding"
        )
    if streams != 1:
        raise RemoteProtocolError(f"stream {copy.name} is Seeding: its image needs a connection of its own", "seeding")
    return True


async def run_install(command: str, stream: str, files: SeedFiles) -> int:
    """Run the receiver's seed install command on the verified image; return 0 (it counts no files).

    Raises InstallFailed when it fails.
    """
    env = {**os.environ, "LOGSHIP_STREAM": stream, "LOGSHIP_SEED_IMAGE": str(files.partial)}
    env["LOGSHIP_BASE"] = str(files.base)
    proc = await asyncio.create_subprocess_shell(
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        text = out.decode(errors="replace").strip()[-500:]
        raise InstallFailed(f"seed install command exited {proc.returncode}: {text or 'no output'}")
    return 0
