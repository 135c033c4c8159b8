"""How the lag benchmark sees frames: a relay in their path (AckTap) or a packet capture on lo beside it
(LoopbackCapture), both timestamping every DATA frame leaving the shipper and every ACK leaving the
receiver, decoded with the protocol's own frame decoder (scripts/benchmarks/lag.py measures with them)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
import time

import uvloop

from protocol.framing import NEED_DATA, FrameDecoder
from protocol.messages import Ack, Data, Hello, Welcome
from tests.helpers.frames import TagSkipper

Frames = list[tuple[float, str, int]]
"""(time seen, segment, end offset) of every ACK, or of every DATA frame."""


def note_frames(decoder: FrameDecoder, data: bytes, stamp: float, acks: Frames, sent: Frames) -> None:
    """Feed ``data`` to ``decoder`` and note, at ``stamp``, every ACK and DATA frame it completes."""
    decoder.receive_data(data)
    while (msg := decoder.next_message()) is not NEED_DATA:
        if isinstance(msg, Hello | Welcome):
            # The last untagged frame of its direction (protocol v3): the tags after it are skipped.
            decoder.opener = TagSkipper()  # type: ignore[assignment]
        if isinstance(msg, Ack):
            acks.append((stamp, msg.position.segment, msg.position.offset))
        elif isinstance(msg, Data):
            sent.append((stamp, msg.segment, msg.offset + len(msg.payload)))


class AckTap:
    """A TCP relay on 127.0.0.1 that timestamps every ACK coming back from the receiver."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.acks: Frames = []
        self.data: Frames = []
        self.port = 0
        self._loop = uvloop.new_event_loop()  # the relay hop costs as little as our own processes'
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __enter__(self) -> AckTap:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._on_connect, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _on_connect(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream)
        up = asyncio.ensure_future(self._pipe(cr, uw, FrameDecoder(64 << 20)))
        down = asyncio.ensure_future(self._pipe(ur, cw, FrameDecoder(64 << 20)))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass  # closing the tap: end quietly (asyncio's server callback would log the cancellation)
        finally:
            for t in (up, down):
                t.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            cw.close()
            uw.close()
            self._tasks.discard(task)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, decoder: FrameDecoder) -> None:
        while data := await r.read(1 << 20):
            w.write(data)
            now = time.time()
            note_frames(decoder, data, now, self.acks, self.data)
            await w.drain()


_ETH_P_ALL = 0x0003
"""Every protocol: the packet socket sees all of lo's traffic."""


class LoopbackCapture:
    """Timestamps DATA frames leaving the shipper and ACKs leaving the receiver, without a hop in their path.

    A raw packet socket on ``lo`` (root only) sees a copy of every TCP segment to or from the receiver's
    port as the sending side's kernel passes it down; the kernel stamps it then (SO_TIMESTAMPNS, on the
    wall clock, which the writer stamps with too). The byte streams are put back together by TCP sequence
    number and decoded with the protocol's own frame decoder. Nothing the shipper and receiver send waits
    for this thread: its own scheduling delays shift no stamp.
    """

    _PACKET_OUTGOING = 4
    _SO_TIMESTAMPNS = 35
    _TIMESPEC = struct.Struct("qq")

    def __init__(self, port: int) -> None:
        self.port = port
        self.acks: Frames = []
        self.data: Frames = []
        self.gaps = 0
        """Segments that did not follow the one before (lost by the capture); the figures are void if any."""
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._sock.setsockopt(socket.SOL_SOCKET, self._SO_TIMESTAMPNS, 1)
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: no drops at 1000 frames/s
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)

    @classmethod
    def available(cls) -> str | None:
        """None if a capture can run here, else why not."""
        if os.geteuid() != 0:
            return "not root"
        try:
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL)).close()
        except OSError as e:
            return f"no packet socket: {e.strerror}"
        return None

    def __enter__(self) -> LoopbackCapture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._sock.close()

    def _run(self) -> None:
        streams: dict[tuple[int, int], tuple[int, FrameDecoder]] = {}
        cmsg_space = socket.CMSG_SPACE(self._TIMESPEC.size)
        while not self._stop.is_set():
            try:
                pkt, ancdata, _flags, addr = self._sock.recvmsg(1 << 17, cmsg_space)
            except TimeoutError:
                continue
            if addr[2] != self._PACKET_OUTGOING or len(pkt) < 14 + 20 or pkt[12:14] != b"\x08\x00":
                continue
            ip = 14
            ihl = (pkt[ip] & 0x0F) * 4
            if pkt[ip + 9] != 6:
                continue
            total = int.from_bytes(pkt[ip + 2 : ip + 4], "big")
            tcp = ip + ihl
            sport, dport, seq = struct.unpack_from(">HHI", pkt, tcp)
            if self.port not in (sport, dport):
                continue
            flags = pkt[tcp + 13]
            payload = pkt[tcp + (pkt[tcp + 12] >> 4) * 4 : ip + total]
            key = (sport, dport)
            if flags & 0x02:  # SYN: the stream starts at seq + 1
                streams[key] = ((seq + 1) & 0xFFFFFFFF, FrameDecoder(64 << 20))
                continue
            if not payload or key not in streams:
                continue
            expected, decoder = streams[key]
            skip = (expected - seq) & 0xFFFFFFFF
            if skip >= 1 << 31:  # a hole before this segment: frames after it cannot be trusted
                self.gaps += 1
                del streams[key]
                continue
            if skip >= len(payload):
                continue  # a retransmission of bytes already seen
            payload = payload[skip:]
            streams[key] = ((expected + len(payload)) & 0xFFFFFFFF, decoder)
            stamp = time.time()
            for level, kind, value in ancdata:
                if level == socket.SOL_SOCKET and kind == self._SO_TIMESTAMPNS:
                    sec, nsec = self._TIMESPEC.unpack_from(value)
                    stamp = sec + nsec * 1e-9
            note_frames(decoder, payload, stamp, self.acks, self.data)
