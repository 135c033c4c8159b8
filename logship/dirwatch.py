"""Notice a directory a daemon depends on vanishing under it (deleted, replaced, unmounted).

A daemon whose data dir is gone cannot store anything: without this it kept accepting connections that
each died in a FileNotFoundError while status looked merely Disconnected (issue 13).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


def dir_identity(path: Path) -> tuple[int, int]:
    """Return (device, inode) of ``path``. Raises OSError if it cannot be read."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def vanished_reason(path: Path, identity: tuple[int, int]) -> str | None:
    """Why ``path`` is no longer the directory of ``identity``; None while it still is."""
    try:
        now = dir_identity(path)
    except FileNotFoundError:
        return "was deleted"
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if not os.path.isdir(path):
        return "is no longer a directory"
    # A directory deleted and made again at once may get the same inode back: that one passes as the same.
    return None if now == identity else "was replaced by another directory"


async def watch_dir(path: Path, interval: float = 1.0) -> str:
    """Return the reason once ``path`` vanished or was replaced; runs until then (cancel it to stop)."""
    try:
        identity = dir_identity(path)
    except FileNotFoundError:
        return "was deleted"
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        # In a thread: a stat of a hung mount must not stall the event loop.
        reason = await loop.run_in_executor(None, vanished_reason, path, identity)
        if reason is not None:
            return reason
