"""Checks of a receiver's copy against the source: digests, convergence, partials as true prefixes."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import xxhash

from tests.helpers.waiting import wait_until


def digest_file(path: Path, size: int | None = None) -> str:
    """The xxh3_128 of the file, or of its first ``size`` bytes."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        if size is None:
            while block := f.read(1 << 22):
                h.update(block)
        else:
            h.update(f.read(size))
    return h.hexdigest()


def assert_copy_converged(source: Path, copy_root: Path, expect: list[str]) -> int:
    """Assert log/ holds exactly ``expect``, each byte-identical to the source; return bytes compared."""
    log_dir = copy_root / "log"
    have = sorted(os.listdir(log_dir))
    assert have == sorted(expect), f"log/ holds {len(have)} segments, expected {len(expect)}"
    total = 0
    for name in have:
        src, dst = source / name, log_dir / name
        assert src.stat().st_size == dst.stat().st_size, f"{name}: size differs"
        assert digest_file(src) == digest_file(dst), f"{name}: digest differs"
        total += dst.stat().st_size
    return total


def check_no_corrupt(source: Path, copy_root: Path, seen: dict[str, str]) -> None:
    """Verify every segment in log/ not yet checked; raise AssertionError on any corrupt one."""
    log_dir = copy_root / "log"
    if not log_dir.exists():
        return
    for name in os.listdir(log_dir):
        if name in seen:
            continue
        dst = log_dir / name
        d = digest_file(dst)
        src_d = digest_file(source / name)
        assert d == src_d, f"corrupt segment installed: {name}"
        seen[name] = d


def wait_converged(source: Path, copy_root: Path, expect: list[str], seen: dict[str, str], timeout: float) -> None:
    """Wait until log/ holds exactly ``expect``, checking every newly installed segment on the way."""

    def converged() -> bool:
        check_no_corrupt(source, copy_root, seen)
        return sorted(seen) == sorted(expect)

    wait_until(converged, timeout, what=f"all {len(expect)} sealed segments in log/")


def partial_matches_prefix(source: Path, copy_root: Path) -> bool:
    """The copy's partial (if any) holds a prefix of the source's segment of the same name."""
    inc = copy_root / "incoming"
    for p in inc.glob("*.partial"):
        name = p.name[: -len(".partial")]
        size = p.stat().st_size
        # Both digests over the same ``size`` bytes: the partial may grow while we read it.
        if digest_file(source / name, size) != digest_file(p, size):
            return False
    return True


def remove_under_a_writer(path: Path, timeout: float = 10.0) -> None:
    """Delete ``path`` while a running daemon may still create files in it, as an operator's
    ``rm -rf`` would: one ``rmtree`` can meet a file made after it listed the directory (ENOTEMPTY)."""
    deadline = time.monotonic() + timeout
    while path.exists():
        shutil.rmtree(path, ignore_errors=True)
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} could not be removed within {timeout:g}s")
        time.sleep(0.01)


def log_names(copy: Path) -> list[str]:
    """The sealed segments of a copy (``copy/log``), sorted; none while it does not exist."""
    d = copy / "log"
    return sorted(os.listdir(d)) if d.exists() else []
