"""A Seeding copy's image on disk: the partial image, the offer it belongs to, its durable offset, and the
installation into ``base/``. Blocking; the server calls these from a worker thread.

Layout under the stream directory:
  seed/image.partial   the image bytes received so far
  seed/offer.json      the SEED_OFFER they belong to and how many of them are fsynced (``durable``):
                       rewritten (temp, fsync, rename, fsync dir) after every fsync of the partial, so a
                       restart resumes exactly there and cuts whatever was written after it
  base/                the installed image (a tar unpacked safely); written as base.tmp/, then renamed
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tarfile
import time
from pathlib import Path

from logship.files import fsync_dir, write_atomic
from protocol.digest import segment_hasher
from protocol.seed import Held, SeedDocError, SeedOffer

READ_BLOCK = 4 << 20


class ImageRefused(Exception):
    """The image cannot be installed: its digest does not match, or it is not a tar that unpacks safely."""


class SeedFiles:
    """The image of one Seeding copy under ``root`` (DIR/<stream>)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "seed"
        self.partial = self.dir / "image.partial"
        self.meta = self.dir / "offer.json"
        self.base = root / "base"
        self._fd = -1
        self.offer: SeedOffer | None = None
        self.durable = 0
        self.hasher = segment_hasher()
        """xxh3_128 of the partial's first ``durable`` bytes, kept as they are written (no second read)."""

    def held(self) -> Held | None:
        """Return what survives on disk of an earlier transfer (the partial cut to its durable bytes)."""
        try:
            held = Held.from_doc(self.meta.read_bytes())
            if not self.partial.exists():
                return None
        except (OSError, SeedDocError):
            return None
        offer, durable = held.offer, held.durable
        if self.partial.stat().st_size > durable:
            # Written after the last fsync that was recorded: not known to be whole.
            os.truncate(self.partial, durable)
        elif self.partial.stat().st_size < durable:
            return None
        # Resuming: the digest of what is already here, read once (the rest is hashed as it arrives).
        self.hasher = segment_hasher()
        with open(self.partial, "rb") as f:
            while block := f.read(READ_BLOCK):
                self.hasher.update(block)
        self.offer, self.durable = offer, durable
        return held

    def begin(self, offer: SeedOffer, fresh: bool) -> None:
        """Open the partial for ``offer``; ``fresh``: a new image, whatever was held is dropped."""
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self.close()
        if fresh:
            self.durable = 0
            self.hasher = segment_hasher()
            with open(self.partial, "wb"):
                pass
            self.offer = offer
            self._save()
        self.offer = offer
        self._fd = os.open(self.partial, os.O_WRONLY)

    def write(self, offset: int, chunks: list[bytes]) -> int:
        """Write ``chunks`` from ``offset``, fsync, record them durable; return the new durable offset."""
        if offset != self.durable:
            raise ValueError(f"image write at {offset}, durable {self.durable}")
        for chunk in chunks:
            self.hasher.update(chunk)
        os.pwritev(self._fd, chunks, offset)
        os.fdatasync(self._fd)
        self.durable = offset + sum(len(c) for c in chunks)
        self._save()
        return self.durable

    def _save(self) -> None:
        assert self.offer is not None
        write_atomic(self.meta, Held(self.offer, self.durable).to_doc(), 0o600)

    def verify(self) -> None:
        """Check the whole image (every byte written, as it was written) against the offer's digest;
        raises ImageRefused."""
        o = self.offer
        assert o is not None
        size = self.partial.stat().st_size
        if size != o.size or self.durable != o.size or self.hasher.digest() != o.digest:
            raise ImageRefused(
                f"image {o.image}: {size} bytes with digest {self.hasher.hexdigest()}, offered {o.size} bytes "
                f"with {o.digest.hex()}"
            )

    def install(self) -> int:
        """Unpack the verified image into base/ (replacing one an earlier attempt left); return its files."""
        tmp = self.root / "base.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()  # the umask's mode: a database's own user may need to read base/
        count = unpack_tar(self.partial, tmp)
        if self.base.exists():
            shutil.rmtree(self.base)
        os.rename(tmp, self.base)
        fsync_dir(self.root)
        return count

    def quarantine(self, reason: str) -> Path:
        """Move the partial image to quarantine/ with a reason file; return where it went."""
        self.close()
        dest = self.root / "quarantine" / f"seed-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        dest.mkdir(parents=True, exist_ok=True)
        os.rename(self.dir, dest / "seed")
        (dest / "reason").write_text(reason + "\n")
        fsync_dir(dest)
        fsync_dir(self.root)
        self.offer, self.durable = None, 0
        return dest

    def discard(self) -> None:
        """Remove the image once installed and recorded."""
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        fsync_dir(self.root)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _check_member(member: tarfile.TarInfo) -> None:
    """Refuse absolute names and links, and ``..`` in names, outright: tarfile's filter would quietly
    strip a leading ``/``. (A relative link with ``..`` is the filter's to judge: it stays if it
    resolves inside base/.)"""
    link = member.linkname if member.issym() or member.islnk() else ""
    if member.name.startswith("/") or ".." in Path(member.name).parts or link.startswith("/"):
        raise ImageRefused(f"image member {member.name!r} ({link or 'no link'}) would land outside base/")


def unpack_tar(image: Path, dest: Path) -> int:
    """Unpack the tar ``image`` into ``dest``, refusing anything that would land outside it; fsync every
    file and directory; return the members unpacked. Raises ImageRefused.

    tarfile's ``data`` filter refuses absolute names, ``..``, links that point outside, devices and
    other special files, and drops set-uid bits; a member it refuses refuses the whole image.
    """
    count = 0
    try:
        with tarfile.open(image, mode="r:*") as tar:
            for member in tar:
                _check_member(member)
                try:
                    tar.extract(member, dest, filter="data")
                except tarfile.FilterError as e:
                    raise ImageRefused(f"image member {member.name!r} refused: {e}") from None
                count += 1
    except (tarfile.TarError, EOFError) as e:
        raise ImageRefused(f"image is not a readable tar: {e}") from None
    _sync_tree(dest)
    return count


_LIBC = ctypes.CDLL(None, use_errno=True)


def _sync_tree(dest: Path) -> None:
    """Make every file and directory under ``dest`` durable: one syncfs() of its file system (an image
    of a thousand files took seconds fsynced one by one), or, where syncfs fails, each one."""
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _LIBC.syncfs(fd) == 0:
            return
    finally:
        os.close(fd)
    for dirpath, _dirs, files in os.walk(dest):
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                file_fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(file_fd)
                finally:
                    os.close(file_fd)
        fsync_dir(Path(dirpath))
