"""Task helpers both daemons use."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(*tasks: asyncio.Task[object]) -> None:
    """Cancel ``tasks`` and wait until each has finished, ignoring how they ended.

    Unlike ``await task`` under ``suppress(CancelledError)``, a cancellation of the caller itself is
    not swallowed: that swallowed a SIGTERM that came while a connection was being torn down, and the
    shipper kept reconnecting for ever instead of exiting.
    """
    for task in tasks:
        task.cancel()
    pending = {t for t in tasks if not t.done()}
    if pending:
        await asyncio.wait(pending)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit
