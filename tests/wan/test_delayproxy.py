"""The delay proxy on 127.0.0.1 (no namespaces needed): it adds the round trip and does not cap throughput."""

from __future__ import annotations

import asyncio
import os
import time

from tests.helpers.delayproxy import DelayProxy


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(1 << 16):
            w.write(data)
            await w.drain()
        w.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _through_proxy(rtt: float, nbytes: int) -> tuple[float, float, bytes, bytes]:
    server, port = await _echo_server()
    proxy = DelayProxy(("127.0.0.1", 0), ("127.0.0.1", port), rtt / 2)
    _, pport = await proxy.start()
    try:
        async with asyncio.timeout(30):
            r, w = await asyncio.open_connection("127.0.0.1", pport)
            t0 = time.monotonic()
            w.write(b"ping")
            assert await r.readexactly(4) == b"ping"
            round_trip = time.monotonic() - t0
            data = os.urandom(nbytes)
            t0 = time.monotonic()

            async def send() -> None:
                for i in range(0, nbytes, 1 << 16):
                    w.write(data[i : i + (1 << 16)])
                    await w.drain()

            sender = asyncio.create_task(send())
            back = await r.readexactly(nbytes)
            bulk = time.monotonic() - t0
            await sender
            w.close()
            return round_trip, bulk, data, back
    finally:
        await proxy.close()
        server.close()


def test_adds_the_round_trip_and_keeps_order_without_limiting_throughput() -> None:
    rtt = 0.1
    nbytes = 32 << 20
    round_trip, bulk, data, back = asyncio.run(_through_proxy(rtt, nbytes))
    # There and back through the proxy: RTT/2 each way.
    assert rtt <= round_trip < rtt + 1.0, round_trip
    assert back == data
    # The proxy must carry 100 Mbit/s x 50 ms; here each way, with the round trip on top.
    rate_bps = nbytes * 8 / bulk
    print(f"\nfigures: echo round trip {round_trip * 1000:.1f} ms, bulk {rate_bps / 1e6:.0f} Mbit/s each way")
    assert rate_bps > 100e6, f"{rate_bps / 1e6:.0f} Mbit/s"
