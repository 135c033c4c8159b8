"""A TCP proxy that delays every byte by a fixed time in each direction: our stand-in for netem.

Each direction is a queue of (due time, chunk): the reader stamps a chunk with ``now + delay`` as it
arrives and keeps reading; the writer sends each chunk, in order, once it is due. So the proxy adds
latency without limiting throughput (bandwidth is capped elsewhere, by tc tbf on the veth pair). A
queue holds at most ``max_queued`` bytes (then the reader pauses), which bounds memory whatever the
peers do. End of stream is delayed like data; when either direction ends, both sides are closed.

    python -m tests.helpers.delayproxy --listen 198.18.0.2:7400 --connect 127.0.0.1:7401 --delay 0.025
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import signal
import sys

log = logging.getLogger("delayproxy")

READ_SIZE = 256 * 1024


class DelayedPipe:
    """Copy one direction of a connection, each chunk held ``delay`` seconds, order preserved."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        delay: float,
        max_queued: int,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.delay = delay
        self.max_queued = max_queued
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued = 0
        self.arrived = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.bytes = 0
        """Bytes delivered so far."""

    async def run(self) -> None:
        """Copy until end of stream or an error on either side."""
        reading = asyncio.create_task(self._read())
        try:
            await self._write()
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.room.wait()
                data = await self.reader.read(READ_SIZE)
                self.queue.append((loop.time() + self.delay, data or None))
                self.arrived.set()
                if not data:
                    return
                self.queued += len(data)
                if self.queued >= self.max_queued:
                    self.room.clear()
        except (ConnectionError, OSError):
            self.queue.append((loop.time(), None))
            self.arrived.set()

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                self.arrived.clear()
                await self.arrived.wait()
                continue
            due, data = self.queue[0]
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self.queue.popleft()
            if data is None:
                with contextlib.suppress(OSError, RuntimeError):
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                return
            self.queued -= len(data)
            if self.queued < self.max_queued:
                self.room.set()
            self.writer.write(data)
            self.bytes += len(data)
            if self.writer.transport.get_write_buffer_size() > 4 * READ_SIZE:
                await self.writer.drain()


class DelayProxy:
    """Accept on ``listen``, connect each client to ``upstream``, delay both directions."""

    def __init__(
        self,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        delay: float,
        max_queued: int = 256 * 1024 * 1024,
    ) -> None:
        self.listen = listen
        self.upstream = upstream
        self.delay = delay
        self.max_queued = max_queued
        self.server: asyncio.Server | None = None
        self.port = 0
        """The bound port, once started (``listen`` may ask for port 0)."""
        self.connections = 0
        self.pipes: list[DelayedPipe] = []
        """Every direction of every connection, client->upstream first; ``bytes_up`` sums those."""
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._on_connect, self.listen[0], self.listen[1])
        host, self.port = self.server.sockets[0].getsockname()[:2]
        return host, self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_connect(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        peer = cw.get_extra_info("peername")
        try:
            try:
                ur, uw = await asyncio.wait_for(asyncio.open_connection(*self.upstream), 10)
            except (OSError, TimeoutError) as e:
                log.warning("%s: cannot reach %s:%d: %s", peer, *self.upstream, e)
                return
            try:
                up = DelayedPipe(cr, uw, self.delay, self.max_queued)
                down = DelayedPipe(ur, cw, self.delay, self.max_queued)
                self.pipes += [up, down]
                pipes = [asyncio.create_task(up.run()), asyncio.create_task(down.run())]
                # Our protocol never half-closes: once one direction ended (its end of stream delivered,
                # delayed like data) or failed, the connection is over; close both sides.
                _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
            finally:
                uw.close()
        except asyncio.CancelledError:
            pass  # the proxy is closing
        finally:
            cw.close()
            self._tasks.discard(task)


def bytes_up(proxy: DelayProxy) -> int:
    """Bytes the proxy delivered from clients to the upstream, over all connections."""
    return sum(p.bytes for p in proxy.pipes[0::2])


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _serve(args: argparse.Namespace) -> None:
    proxy = DelayProxy(_address(args.listen), _address(args.connect), args.delay)
    host, port = await proxy.start()
    log.info("delaying %s:%d -> %s by %.1f ms each way", host, port, args.connect, args.delay * 1000)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await proxy.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="delayproxy", description="TCP proxy adding a fixed delay in each direction")
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--connect", required=True, metavar="HOST:PORT")
    p.add_argument("--delay", type=float, required=True, metavar="SECONDS", help="one-way delay (half the RTT)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s delayproxy[%(process)d] %(message)s")
    try:
        import uvloop

        uvloop.run(_serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
