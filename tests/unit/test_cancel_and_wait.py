"""cancel_and_wait never swallows a cancellation of its caller."""

from __future__ import annotations

import asyncio

import pytest

from logship.tasks import cancel_and_wait
from protocol.aio import FramedConnection


async def _slow_to_cancel(hold: float) -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        # A task that needs a moment to wind down (e.g. closing its connection) after cancel().
        await asyncio.sleep(hold)
        raise


async def _failing() -> None:
    raise ValueError("boom")


async def test_the_caller_cancelled_meanwhile_stays_cancelled() -> None:
    child = asyncio.create_task(_slow_to_cancel(0.3))
    await asyncio.sleep(0)
    finished_normally = False

    async def caller() -> None:
        nonlocal finished_normally
        await cancel_and_wait(child)
        finished_normally = True

    outer = asyncio.create_task(caller())
    await asyncio.sleep(0.05)  # the caller is now waiting for the child to wind down
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert outer.cancelled()
    assert not finished_normally
    await asyncio.wait({child}, timeout=2)
    assert child.cancelled()


async def test_waits_for_every_task_and_ignores_how_they_ended() -> None:
    slow = asyncio.create_task(_slow_to_cancel(0.1))
    failed = asyncio.create_task(_failing())
    finished = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    await cancel_and_wait(slow, failed, finished)
    assert slow.done() and failed.done() and finished.done()
    assert slow.cancelled()
    assert isinstance(failed.exception(), ValueError)


class _ClosingWriter:
    """Just enough of a StreamWriter for FramedConnection.close: wait_closed() ends when told."""

    def __init__(self) -> None:
        self.closed = asyncio.get_running_loop().create_future()

    def get_extra_info(self, name: str) -> None:
        return None

    def is_closing(self) -> bool:
        return True

    async def wait_closed(self) -> None:
        await self.closed


async def test_close_cancelled_as_the_socket_finishes_closing_stays_cancelled() -> None:
    # The cancel and the end of wait_closed() land in the same loop turn. asyncio.wait_for on Python
    # 3.11 then returned normally (CPython gh-86296), and the shipper's loop reconnected instead of
    # stopping on SIGTERM.
    writer = _ClosingWriter()
    conn = FramedConnection(None, writer)  # type: ignore[arg-type]
    task = asyncio.create_task(conn.close())
    await asyncio.sleep(0.01)
    writer.closed.set_result(None)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _fail(delay: float, text: str) -> None:
    await asyncio.sleep(delay)
    raise RuntimeError(text)


def test_first_to_end_retrieves_both_when_both_fail_together() -> None:
    from logship.tasks import first_to_end

    async def main() -> list[asyncio.Task[None]]:
        tasks = [asyncio.create_task(_fail(0, "a")), asyncio.create_task(_fail(0, "b"))]
        with pytest.raises(RuntimeError):
            await first_to_end(*tasks)
        return tasks

    tasks = asyncio.run(main())
    assert all(t.done() for t in tasks)
    assert all(t._log_traceback is False for t in tasks)  # retrieved: nothing logged at collection


def test_first_to_end_awaits_every_task_when_the_caller_is_cancelled() -> None:
    from logship.tasks import first_to_end

    async def main() -> list[asyncio.Task[None]]:
        tasks = [asyncio.create_task(asyncio.sleep(10)), asyncio.create_task(asyncio.sleep(10))]
        outer = asyncio.create_task(first_to_end(*tasks))
        await asyncio.sleep(0.01)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        return tasks

    tasks = asyncio.run(main())
    assert all(t.cancelled() for t in tasks)
