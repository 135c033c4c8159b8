"""logship.files.from_the_disk: recovery must read what the disk holds, not clean pages in the cache."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from logship.files import from_the_disk

pytestmark = pytest.mark.skipif(shutil.which("fincore") is None, reason="fincore (util-linux) is not installed")


def resident_pages(path: Path) -> int:
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "PAGES", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return int(out.stdout.split()[0])


def test_clean_pages_are_dropped_and_the_bytes_read_again_are_the_same(tmp_path: Path) -> None:
    path = tmp_path / "E01.partial"
    data = os.urandom(1 << 20)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    assert path.read_bytes() == data
    if resident_pages(path) == 0:
        pytest.skip("this file system keeps no pages cached (nothing to drop)")
    with open(path, "rb") as f:
        from_the_disk(f.fileno())
        assert resident_pages(path) == 0
        assert f.read() == data
