"""A watched directory: deleted, replaced by another, or turned into a file is noticed; untouched is not."""

from __future__ import annotations

import asyncio
from pathlib import Path

from logship.dirwatch import dir_identity, vanished_reason, watch_dir


def test_vanished_reason(tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    identity = dir_identity(d)
    # Made while the first still exists, so the file system cannot hand it the same inode.
    (tmp_path / "other").mkdir()
    (d / "file").write_bytes(b"x")
    assert vanished_reason(d, identity) is None
    (d / "file").unlink()
    d.rmdir()
    assert vanished_reason(d, identity) == "was deleted"
    (tmp_path / "other").rename(d)
    assert vanished_reason(d, identity) == "was replaced by another directory"
    d.rmdir()
    d.write_bytes(b"")
    assert vanished_reason(d, identity) == "is no longer a directory"


def test_watch_dir_returns_once_the_dir_is_gone(tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()

    async def run() -> str:
        watch = asyncio.create_task(watch_dir(d, interval=0.01))
        await asyncio.sleep(0.05)
        assert not watch.done()
        d.rmdir()
        return await asyncio.wait_for(watch, 5)

    assert asyncio.run(run()) == "was deleted"


def test_watch_dir_of_a_dir_already_gone_returns_at_once(tmp_path: Path) -> None:
    assert asyncio.run(asyncio.wait_for(watch_dir(tmp_path / "none"), 5)) == "was deleted"
