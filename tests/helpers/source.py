"""The source side of a test: segment names, a log that grows like a database's, scripts/loadgen, secrets."""

from __future__ import annotations

import os
import random
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

ROOT = Path(__file__).resolve().parents[2]


def make_secret(path: Path) -> Path:
    """Write a fresh stream secret to ``path`` (mode 0600, as the daemons insist); return the path."""
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    return path


def segment_name(i: int) -> str:
    return f"E00{i:08X}.log"


def write_segment(path: Path, data: bytes) -> None:
    """Put a whole segment into a source directory at once, as an application renames a finished one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.rename(path)


def write_segments(source: Path, first: int, count: int, size: int = 200_000) -> list[str]:
    """Write segments ``first`` to ``first + count - 1`` of random bytes into ``source``; return their names."""
    names = []
    for i in range(first, first + count):
        (source / segment_name(i)).write_bytes(os.urandom(size))
        names.append(segment_name(i))
    return names


def write_recorded(source: Path, digests: dict[str, str], first: int, count: int, size: int = 150_000) -> None:
    """Write segments ``first`` .. ``first + count - 1`` of random bytes, each whole at once (renamed into
    place), recording each one's xxh3_128 hex digest in ``digests`` by name."""
    for i in range(first, first + count):
        data = os.urandom(size)
        tmp = source / f".{segment_name(i)}.tmp"
        tmp.write_bytes(data)
        tmp.rename(source / segment_name(i))
        digests[segment_name(i)] = xxhash.xxh3_128(data).hexdigest()


def sealed_in_source(source: Path) -> list[str]:
    """Segments the `next` policy considers sealed: every one but the newest."""
    names = sorted(n for n in os.listdir(source) if not n.startswith("."))
    return names[:-1]


def run_loadgen(source: Path, segments: int, size: int, *extra: str) -> list[str]:
    """Fill ``source`` with ``segments`` log-like segments of ``size`` bytes by scripts/loadgen; return
    the names in it. Raises CalledProcessError."""
    argv = [sys.executable, str(ROOT / "scripts" / "loadgen"), "--dir", str(source)]
    argv += ["--segments", str(segments), "--segment-size", str(size), *extra]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return sorted(os.listdir(source))


@dataclass
class SourceWriter:
    """Write a segmented log like a database would: append to the newest segment, then start the next.

    Runs in a thread. ``sizes`` are the final sizes of the segments written in full; after them one
    more (active) segment keeps growing by ``tail_append`` bytes every ``tail_every`` seconds until
    ``stop()``.
    """

    source: Path
    sizes: list[int]
    rate: float = 8e6
    append: int = 64 * 1024
    seed: int = 1
    tail_append: int = 3000
    tail_every: float = 0.05
    written: int = 0
    done_full: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SourceWriter:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        rnd = random.Random(self.seed)
        t0 = time.monotonic()
        for i, size in enumerate(self.sizes, start=1):
            if self._stop.is_set():
                return
            fd = os.open(self.source / segment_name(i), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                left = size
                while left and not self._stop.is_set():
                    n = min(left, self.append)
                    os.write(fd, rnd.randbytes(n))
                    left -= n
                    self.written += n
                    if self.rate:
                        ahead = self.written / self.rate - (time.monotonic() - t0)
                        if ahead > 0:
                            time.sleep(ahead)
            finally:
                os.close(fd)
        self.done_full.set()
        active = self.source / segment_name(len(self.sizes) + 1)
        fd = os.open(active, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            while not self._stop.wait(self.tail_every):
                os.write(fd, rnd.randbytes(self.tail_append))
                self.written += self.tail_append
        finally:
            os.close(fd)
