"""The base image a shipper sends to a Seeding target: made once by the stream's ``seed_command`` and
spooled in the state dir, so that a transfer cut (or a shipper killed) halfway resumes the same image.

Spool, per stream and target, under ``<state_dir>/seed/<stream>/<target>/``:
  image.tar    the command's stdout, fsynced
  image.json   what the offer says of it: id, size, xxh3_128, the first segment after it and the one
               before that; written last (temp, fsync, rename), so an image without it is not one

Which segment must follow the image (``first``), in this order:
  1. the segment name the command writes into the file named by $LOGSHIP_SEED_FIRST, for recipes
     that know it;
  2. a ``backup_label`` in the tar (pg_basebackup -Ft): its ``START WAL LOCATION ... (file X)``;
  3. the newest segment the source had when the command started (the image may hold part of it, and
     the copy replays it again: the database's own recovery makes that safe, as with a WAL archive).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from logship.files import fsync_dir, write_atomic
from protocol.digest import segment_hasher
from protocol.seed import ImageFacts, SeedDocError
from shipper.handshake import Reconnect
from shipper.tailer import SegmentInfo

log = logging.getLogger("shipper")

_LABEL = re.compile(rb"START WAL LOCATION: .*\(file ([0-9A-F]{24})\)")


class SeedError(Reconnect):
    """No image can be made or sent now (the command failed, the source lost the first segment)."""


def follows(names: Sequence[str], segments: Sequence[SegmentInfo], first: str) -> tuple[str, int]:
    """Return the source segment just before ``first`` and its size (("", 0) when none).

    Raises SeedError if the source no longer holds ``first`` although it holds older names than it
    (retention removed it: the image would be followed by a gap).
    """
    if not first:
        return "", 0
    before = [s for s in segments if s.name < first]
    if first not in names and before and any(s.name > first for s in segments):
        raise SeedError(f"the image needs segment {first}, which the source no longer holds")
    if not before:
        if names and names[0] > first:
            raise SeedError(f"the image needs segment {first}, older than the source's oldest {names[0]}")
        return "", 0
    return before[-1].name, before[-1].size


def label_segment(tar_path: Path) -> str:
    """Return the start WAL segment a pg_basebackup ``backup_label`` in the tar names ("" if none)."""
    try:
        with tarfile.open(tar_path, mode="r:*") as tar:
            for member in tar:
                if member.isfile() and member.name.lstrip("./") == "backup_label" and member.size < 64 * 1024:
                    f = tar.extractfile(member)
                    found = _LABEL.search(f.read()) if f is not None else None
                    return found.group(1).decode() if found else ""
    except (tarfile.TarError, OSError, EOFError):
        return ""
    return ""


class ImageSpool:
    """The spooled image of one stream for one target."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.tar = directory / "image.tar"
        self.meta = directory / "image.json"

    def load(self) -> ImageFacts | None:
        """Return the spooled image's facts (its bytes are ``tar``), or None if there is none whole."""
        try:
            img = ImageFacts.from_doc(self.meta.read_bytes())
            if self.tar.stat().st_size != img.size:
                return None
            return img
        except (OSError, SeedDocError):
            return None

    def drop(self) -> None:
        """Remove the spooled image (sent and installed, or no longer usable)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    async def make(
        self,
        command: str,
        stream: str,
        names: Sequence[str],
        segments_now: Callable[[], Sequence[SegmentInfo]],
        timeout: float | None = None,
    ) -> ImageFacts:
        """Run ``command`` (a shell command; stdout: the image as a tar) and spool its output.

        ``names`` is the source's segment list when it starts; ``segments_now()`` returns the tailer's
        segments once it ended. Raises SeedError.
        """
        self.drop()
        self.dir.mkdir(parents=True, mode=0o700)
        newest = names[-1] if names else ""
        tmp = self.dir / "image.tar.tmp"
        named = self.dir / "first"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        env = {**os.environ, "LOGSHIP_STREAM": stream, "LOGSHIP_SEED_NEWEST": newest}
        env["LOGSHIP_SEED_OLDEST"] = names[0] if names else ""
        env["LOGSHIP_SEED_FIRST"] = str(named)
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_shell(
                command, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.PIPE, env=env
            )
            try:
                async with asyncio.timeout(timeout):
                    _, err = await proc.communicate()
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                raise
            if proc.returncode != 0:
                text = err.decode(errors="replace").strip()[-500:]
                raise SeedError(f"seed_command exited {proc.returncode}: {text or 'no output'}")
            os.fsync(out)
        finally:
            os.close(out)
        try:
            said = named.read_text(errors="replace").strip()
        except FileNotFoundError:
            said = ""
        loop = asyncio.get_running_loop()
        size, digest = await loop.run_in_executor(None, _digest, tmp)
        first = said.split()[0] if said else await loop.run_in_executor(None, label_segment, tmp) or newest
        segments = segments_now()
        after, after_size = follows([s.name for s in segments], segments, first)
        os.rename(tmp, self.tar)
        img = ImageFacts(secrets.token_hex(16), size, digest, first, after, after_size)
        write_atomic(self.meta, json.dumps({**img.to_doc(), "made": time.time()}).encode(), 0o600)
        fsync_dir(self.dir)
        log.warning(
            "stream %s: seed image %s made in %.1fs: %d bytes; the log continues at %s",
            stream,
            img.image,
            time.monotonic() - started,
            size,
            first or "the stream's start",
        )
        return img


def _digest(path: Path) -> tuple[int, bytes]:
    hasher = segment_hasher()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(4 << 20):
            hasher.update(block)
            size += len(block)
    return size, hasher.digest()
