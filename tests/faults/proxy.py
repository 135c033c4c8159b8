"""A frame-aware TCP proxy that damages either direction of a shipper -> receiver link on request.

``arm(kind)`` queues one fault on the shipper -> receiver frames, ``arm(kind, back=True)`` one on the
receiver -> shipper frames (CHALLENGE, WELCOME, ACK, NACK, HEARTBEAT, ...); it fires on the next
frame it fits and is then counted in ``fired`` (``fired_back``):

  cut            close both sides at a frame boundary
  truncate       forward only part of the next frame (a DATA frame going up; any frame coming back),
                 then close
  stall          hold everything (both directions; coming back: that direction only) for
                 ``stall_seconds``, then go on
  flip_header    flip one bit of a DATA or SEAL header (the length prefix included); coming back, of
                 any frame's prefix or header
  flip_payload   flip one bit of a DATA payload; coming back (where no frame has a payload), one bit
                 of an ACK's positions: the value of its seg, off, sealed, rseg or roff field
  duplicate      send the next DATA or SEAL frame twice; coming back, the next frame of any type

Flips that a correct receiver turns into a resend count against a segment's failure limit (three
failures mark a copy Failed, by design), so the proxy damages no segment more than twice. The
receiver's own ACKs and WELCOME resume positions, as sent (before any damage), are kept in
``receiver_acked``: a shipper may count as acknowledged only what is in there.
"""

from __future__ import annotations

import asyncio
import collections
import random
import threading

import msgpack

from tests.harness import FrameProxy, read_frame

KINDS = ("cut", "truncate", "stall", "flip_header", "flip_payload", "duplicate")
_ACK_VALUES = ("seg", "off", "sealed", "rseg", "roff")


class DamagingProxy(FrameProxy):
    def __init__(self, upstream_port: int, seed: int = 1, stall_seconds: tuple[float, float] = (0.5, 4.0)) -> None:
        super().__init__(upstream_port)
        self.rnd = random.Random(seed)
        self.stall_seconds = stall_seconds
        self.armed: collections.deque[str] = collections.deque()
        self.fired: collections.Counter[str] = collections.Counter()
        self.damaged_segments: collections.Counter[str] = collections.Counter()
        self.armed_back: collections.deque[str] = collections.deque()
        self.fired_back: collections.Counter[str] = collections.Counter()
        self.hit_back: collections.Counter[str] = collections.Counter()
        """Frame types the back faults hit (e.g. ``ACK``, ``WELCOME``)."""
        self.receiver_acked: set[tuple[str, int, bool]] = set()
        """Every (segment, offset, sealed) the receiver acknowledged or resumed at, as it sent them."""

    def _take(self, kind: str) -> None:
        self.armed.popleft()
        self.fired[kind] += 1

    def _take_back(self, kind: str, frame_type: str) -> None:
        self.armed_back.popleft()
        self.fired_back[kind] += 1
        self.hit_back[frame_type] += 1

    async def _forward(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            prefix, header_raw, header, payload = await read_frame(r)
            kind_of = header.get("t") if isinstance(header, dict) else None
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

    def _note_receiver_positions(self, header: dict) -> None:
        if header.get("t") == "ACK":
            self.receiver_acked.add((header["seg"], header["off"], header["sealed"]))
        elif header.get("t") == "WELCOME":
            for s in header.get("streams", []):
                self.receiver_acked.add((s["seg"], s["off"], s["sealed"]))

    def _flip_ack_value(self, header: dict, header_raw: bytes) -> bytes:
        """Flip one bit inside the encoded value of one of the ACK's position fields."""
        field = self.rnd.choice(_ACK_VALUES)
        key = msgpack.packb(field)
        start = header_raw.index(key) + len(key)  # "\xa3off" cannot match inside "\xa4roff"
        end = start + len(msgpack.packb(header[field]))
        raw = bytearray(header_raw)
        raw[self.rnd.randrange(start, end)] ^= 1 << self.rnd.randrange(8)
        return bytes(raw)

    async def _backward(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            prefix, header_raw, header, _ = await read_frame(r)  # from our receiver: no payloads, valid
            kind_of = str(header.get("t"))
            self._note_receiver_positions(header)
            frame = prefix + header_raw
            fault = self.armed_back[0] if self.armed_back else None
            if fault == "cut":
                self._take_back(fault, kind_of)
                return
            if fault == "stall":
                self._take_back(fault, kind_of)
                await asyncio.sleep(self.rnd.uniform(*self.stall_seconds))
            elif fault == "truncate":
                self._take_back(fault, kind_of)
                w.write(frame[: self.rnd.randint(1, len(frame) - 1)])
                await w.drain()
                return
            elif fault == "flip_header":
                self._take_back(fault, kind_of)
                head = bytearray(frame)
                head[self.rnd.randrange(len(head))] ^= 1 << self.rnd.randrange(8)
                frame = bytes(head)
            elif fault == "flip_payload" and kind_of == "ACK":
                self._take_back(fault, kind_of)
                frame = prefix + self._flip_ack_value(header, header_raw)
            elif fault == "duplicate":
                self._take_back(fault, kind_of)
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

    def arm(self, kind: str, back: bool = False) -> None:
        queue = self.proxy.armed_back if back else self.proxy.armed
        self.loop.call_soon_threadsafe(queue.append, kind)

    def armed(self) -> bool:
        """Whether a fault is still waiting for its frame (either direction)."""
        return bool(self.proxy.armed or self.proxy.armed_back)

    def receiver_acked(self) -> set[tuple[str, int, bool]]:
        return asyncio.run_coroutine_threadsafe(self._copy_acked(), self.loop).result(10)

    async def _copy_acked(self) -> set[tuple[str, int, bool]]:
        return set(self.proxy.receiver_acked)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
