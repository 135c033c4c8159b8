"""The shipper's tailer run in a unit test: its loop as a task, and an inotify watcher or a skip."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from shipper.tailer import Tailer
from shipper.watcher import DirectoryWatcher

NEVER = 3600.0
"""A poll or quiet interval the tests would time out long before."""


async def watcher_or_skip() -> DirectoryWatcher:
    """This loop's inotify watcher; the test is skipped where inotify is not available."""
    watcher = DirectoryWatcher.for_loop()
    if watcher is None:
        pytest.skip("inotify is not available here")
    return watcher


@contextlib.asynccontextmanager
async def running(tailer: Tailer):  # type: ignore[no-untyped-def]
    """Run the tailer's loop as a task for the ``with`` block (given a moment to start), then cancel it."""
    task = asyncio.create_task(tailer.run())
    try:
        await asyncio.sleep(0.05)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
