"""A frame-aware TCP proxy that damages the shipper -> receiver direction on request.

``arm(kind)`` queues one fault; it fires on the next frame it fits and is then counted in ``fired``:

  cut            close both sides at a frame boundary
  truncate       forward only part of the next DATA frame (inside its header or its payload), then close
  stall          hold everything (both directions) for ``stall_seconds``, then go on
  flip_header    flip one bit of a DATA or SEAL header (the length prefix included)
  flip_payload   flip one bit of a DATA payload
  duplicate      send the next DATA or SEAL frame twice

Flips that a correct receiver turns into a resend count against a segment's failure limit (three
failures mark a copy Failed, by design), so the proxy damages no segment more than twice.
"""

from __future__ import annotations

import asyncio
import collections
import random
import struct
import threading

import msgpack

from tests.harness import FrameProxy

KINDS = ("cut", "truncate", "stall", "flip_header", "flip_payload", "duplicate")
_PREFIX = struct.Struct(">I")


class DamagingProxy(FrameProxy):
    def __init__(self, upstream_port: int, seed: int = 1, stall_seconds: tuple[float, float] = (0.5, 4.0)) -> None:
        super().__init__(upstream_port)
        self.rnd = random.Random(seed)
        self.stall_seconds = stall_seconds
        self.armed: collections.deque[str] = collections.deque()
        self.fired: collections.Counter[str] = collections.Counter()
        self.damaged_segments: collections.Counter[str] = collections.Counter()

    def _take(self, kind: str) -> None:
        self.armed.popleft()
        self.fired[kind] += 1

    async def _forward(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            prefix = await r.readexactly(4)
            (hlen,) = _PREFIX.unpack(prefix)
            header_raw = await r.readexactly(hlen)
            header = msgpack.unpackb(header_raw, raw=False)
            kind_of = header.get("t") if isinstance(header, dict) else None
            payload = await r.readexactly(header["len"]) if kind_of == "DATA" else b""
            frame = prefix + header_raw + payload
            seg = str(header.get("seg", "")) if isinstance(header, dict) else ""
            fault = self.armed[0] if self.armed else None
            if fault == "cut":
                self._take(fault)
                return
            if fault == "stall":
                self._take(fault)
                self._open.clear()
                await asyncio.sleep(self.rnd.uniform(*self.stall_seconds))
                self._open.set()
            elif fault == "truncate" and kind_of == "DATA" and payload:
                self._take(fault)
                w.write(frame[: self.rnd.randint(1, len(frame) - 1)])
                await w.drain()
                return
            elif fault == "flip_header" and kind_of in ("DATA", "SEAL") and self.damaged_segments[seg] < 2:
                self._take(fault)
                self.damaged_segments[seg] += 1
                head = bytearray(prefix + header_raw)
                head[self.rnd.randrange(len(head))] ^= 1 << self.rnd.randrange(8)
                frame = bytes(head) + payload
            elif fault == "flip_payload" and kind_of == "DATA" and payload and self.damaged_segments[seg] < 2:
                self._take(fault)
                self.damaged_segments[seg] += 1
                body = bytearray(payload)
                body[self.rnd.randrange(len(body))] ^= 1 << self.rnd.randrange(8)
                frame = prefix + header_raw + bytes(body)
            elif fault == "duplicate" and kind_of in ("DATA", "SEAL"):
                self._take(fault)
                frame = frame + frame
            await self._open.wait()
            w.write(frame)
            await w.drain()


class ProxyInThread:
    """Run a DamagingProxy on its own event loop in a thread, so synchronous tests can steer it."""

    def __init__(self, upstream_port: int, seed: int) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy = asyncio.run_coroutine_threadsafe(self._make(upstream_port, seed), self.loop).result(10)

    async def _make(self, upstream_port: int, seed: int) -> DamagingProxy:
        proxy = DamagingProxy(upstream_port, seed)
        await proxy.start()
        return proxy

    def arm(self, kind: str) -> None:
        self.loop.call_soon_threadsafe(self.proxy.armed.append, kind)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
