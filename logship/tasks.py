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


async def first_to_end(*tasks: asyncio.Task[object]) -> None:
    """Wait until one of ``tasks`` ends, cancel and await the rest, then raise the first one's exception.

    Every task is awaited however this ends (one failing, both failing together, the caller being
    cancelled): each exception is retrieved, none is left for "Task exception was never retrieved".
    """
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Shielded: a cancellation of the caller while the others wind down must not leave them
        # unawaited; it is re-raised by the wait above or the shield below all the same.
        await asyncio.shield(cancel_and_wait(*tasks))
    for task in tasks:
        if task in done and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
