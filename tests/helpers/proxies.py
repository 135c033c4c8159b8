"""TCP proxies on 127.0.0.1 port 0 that the tests own, between a shipper and its receiver.

- ``Relay`` copies bytes as they are; its upstream may be a receiver that is not up yet. ``Throttle``
  is a Relay at a given rate; ``CuttableLink`` one in a thread that a test can cut and mend.
- ``FaultProxy`` understands frames enough to flip a DATA byte or a SEAL digest, or cut mid-frame.
- ``DamagingProxy`` damages either direction on request (below).
- ``ProxyThread`` runs any of them on its own event loop in a thread, so synchronous tests can steer it.

Every proxy binds port 0 in ``start()`` and exposes the bound port as ``port``.

The damaging link: ``arm(kind)`` queues one fault on the shipper -> receiver frames, ``arm(kind, back=True)`` one on the
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
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

import msgpack

from tests.helpers.frames import TagTracker, read_frame
from tests.helpers.procs import Listener

KINDS = ("cut", "truncate", "stall", "flip_header", "flip_payload", "duplicate")
"""What ``DamagingProxy.armed`` (and ``armed_back``) take."""
_ACK_VALUES = ("seg", "off", "sealed", "rseg", "roff")
T = TypeVar("T")


class FrameProxy:
    """A TCP proxy on 127.0.0.1 between shipper and receiver; subclasses decide what ``_forward`` does
    to the shipper->receiver frames and what ``_backward`` does to the receiver->shipper ones (by
    default: copied as they are, held while ``_open`` is cleared, a stall). Either direction ending
    closes the connection on both sides."""

    def __init__(self, upstream: int | Listener) -> None:
        self.upstream = upstream
        """A port, or a receiver (or proxy) whose port is looked up at each connection."""
        self.port = 0
        self.server: asyncio.Server | None = None
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._open = asyncio.Event()
        self._open.set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server:
            self.server.close()
        for w in self._writers:
            w.close()

    async def sever(self) -> None:
        """Cut the link: stop listening (a connect is refused at once) and drop every connection.
        ``mend()`` listens again on the same port."""
        await self.close()
        self._writers.clear()

    async def mend(self) -> None:
        self.server = await asyncio.start_server(self._on_connect, "127.0.0.1", self.port)

    async def _on_connect(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.connections += 1
        port = self.upstream if isinstance(self.upstream, int) else self.upstream.port
        try:
            if not port:
                raise ConnectionRefusedError("the upstream has no port yet")
            ur, uw = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            cw.close()
            return
        self._writers += [cw, uw]
        back = asyncio.create_task(self._back(ur, cw))
        try:
            await self._forward(cr, uw)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            uw.close()
            cw.close()
            back.cancel()

    async def _back(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await self._backward(r, w)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            # Closing the shipper's side ends the connection: the shipper drops it, and _forward then
            # sees its end of stream and closes the receiver's side.
            w.close()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        """Copy bytes as they come, held while ``_open`` is cleared (a stall)."""
        while data := await r.read(65536):
            await self._open.wait()
            w.write(data)
            await w.drain()

    async def _backward(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await self._pipe(r, w)

    async def _forward(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class FaultProxy(FrameProxy):
    """A proxy that understands frames well enough to damage them where a test wants it.

    ``flip_data`` flips one payload byte of the next DATA frame (``flip_data_mid``: of the next one not at
    a segment's start), ``flip_seal`` one byte of the next SEAL's
    digest, ``cut_mid_frame`` forwards half of the next DATA frame and then drops both sides.
    """

    def __init__(self, upstream: int | Listener) -> None:
        super().__init__(upstream)
        self.pending: list[str] = []
        self.done: list[str] = []

    async def _forward(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        tracker = TagTracker(to_receiver=True)
        while True:
            prefix, header_raw, header, payload, tag = await read_frame(r, tracker)
            fault = self.pending[0] if self.pending else None
            # flip_data_mid spares a segment's first chunk (damage there closes the connection instead).
            mid = fault == "flip_data_mid" and header.get("off", 0) > 0
            if (fault == "flip_data" or mid) and header.get("t") == "DATA" and len(payload) > 16:
                self.pending.pop(0)
                self.done.append(fault)
                b = bytearray(payload)
                b[len(b) // 2] ^= 0x5A
                payload = bytes(b)
            elif fault == "flip_seal" and header.get("t") == "SEAL" and header["size"] > 0:
                self.pending.pop(0)
                self.done.append(fault)
                h = bytearray(header_raw)
                h[-1] ^= 0x01  # the digest is the last field of a SEAL header
                header_raw = bytes(h)
            elif fault == "cut_mid_frame" and header.get("t") == "DATA" and len(payload) > 16:
                self.pending.pop(0)
                self.done.append(fault)
                w.write(prefix + header_raw + tag + payload[: len(payload) // 2])
                await w.drain()
                return
            w.write(prefix + header_raw + tag + payload)
            await w.drain()


class Relay(FrameProxy):
    """Copy bytes both ways unchanged. While the upstream has no port yet (a receiver not started), a
    connection is accepted and closed at once, which a shipper takes like a refused one and retries."""

    async def _forward(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await self._pipe(r, w)


class Throttle(Relay):
    """A Relay that forwards the shipper's bytes at most ``rate`` bytes per second (a slow link); the
    receiver's replies pass at once."""

    def __init__(self, upstream: int | Listener, rate: float) -> None:
        super().__init__(upstream)
        self.rate = rate

    async def _forward(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        due = time.monotonic()
        while data := await r.read(65536):
            due = max(due, time.monotonic()) + len(data) / self.rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            w.write(data)
            await w.drain()


class DamagingProxy(FrameProxy):
    """Damage the frames of either direction as ``armed`` / ``armed_back`` ask (see the module)."""

    def __init__(
        self, upstream: int | Listener, seed: int = 1, stall_seconds: tuple[float, float] = (0.5, 4.0)
    ) -> None:
        super().__init__(upstream)
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
        tracker = TagTracker(to_receiver=True)
        while True:
            prefix, header_raw, header, payload, tag = await read_frame(r, tracker)
            kind_of = header.get("t") if isinstance(header, dict) else None
            frame = prefix + header_raw + tag + payload
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
                frame = bytes(head) + tag + payload
            elif fault == "flip_payload" and kind_of == "DATA" and payload and self.damaged_segments[seg] < 2:
                self._take(fault)
                self.damaged_segments[seg] += 1
                body = bytearray(payload)
                body[self.rnd.randrange(len(body))] ^= 1 << self.rnd.randrange(8)
                frame = prefix + header_raw + tag + bytes(body)
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
        tracker = TagTracker(to_receiver=False)
        while True:
            prefix, header_raw, header, _, tag = await read_frame(r, tracker)  # from our receiver: no payloads
            kind_of = str(header.get("t"))
            self._note_receiver_positions(header)
            frame = prefix + header_raw + tag
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
                frame = prefix + self._flip_ack_value(header, header_raw) + tag
            elif fault == "duplicate":
                self._take_back(fault, kind_of)
                frame = frame + frame
            await self._open.wait()
            w.write(frame)
            await w.drain()


class Steerable(Protocol):
    """A proxy ProxyThread can run."""

    port: int

    async def start(self) -> Any: ...

    async def close(self) -> None: ...


P = TypeVar("P", bound=Steerable)


class ProxyThread(Generic[P]):
    """Run ``proxy`` on its own event loop in a thread, so synchronous tests can steer it.

    Started at once; ``close()`` (or leaving the ``with`` block, which yields the proxy) stops it.
    """

    def __init__(self, proxy: P) -> None:
        self.proxy = proxy
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.run(proxy.start())

    def __enter__(self) -> P:
        return self.proxy

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the proxy's loop and return its result (within 10 s)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Call ``fn(*args)`` on the proxy's loop: the proxy's state belongs to that thread."""
        self.loop.call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        self.run(self.proxy.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class CuttableLink(ProxyThread[Relay]):
    """A Relay in a thread that a test can cut (``sever()``: refused, connections dropped) and mend."""

    def __init__(self, upstream: int | Listener) -> None:
        super().__init__(Relay(upstream))

    def sever(self) -> None:
        self.run(self.proxy.sever())

    def mend(self) -> None:
        self.run(self.proxy.mend())

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"


class DamagingLink(ProxyThread[DamagingProxy]):
    """A DamagingProxy in a thread, with the calls a synchronous fault test makes."""

    def __init__(self, upstream: int | Listener, seed: int) -> None:
        super().__init__(DamagingProxy(upstream, seed))

    def arm(self, kind: str, back: bool = False) -> None:
        self.call_soon((self.proxy.armed_back if back else self.proxy.armed).append, kind)

    def armed(self) -> bool:
        """Whether a fault is still waiting for its frame (either direction)."""
        return bool(self.proxy.armed or self.proxy.armed_back)

    def receiver_acked(self) -> set[tuple[str, int, bool]]:
        return self.run(self._copy_acked())

    async def _copy_acked(self) -> set[tuple[str, int, bool]]:
        return set(self.proxy.receiver_acked)
