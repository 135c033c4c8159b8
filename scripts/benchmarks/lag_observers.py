"""How the lag benchmark sees frames: a relay in their path (AckTap) or a packet capture on lo beside it
(LoopbackCapture), both timestamping every DATA frame leaving the shipper and every ACK leaving the
receiver, decoded with the protocol's own frame decoder (scripts/benchmarks/lag.py measures with them)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

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

_SO_ATTACH_FILTER = 26
_SKF_AD_PKTTYPE = 0xFFFFF000 + 4
"""Classic BPF's ancillary load of the skb's packet type (SKF_AD_OFF + SKF_AD_PKTTYPE)."""
_BPF_OP = {
    # (class | size | mode) of the instructions below (linux/bpf_common.h, linux/filter.h).
    "ld_w_abs": 0x20, "ld_h_abs": 0x28, "ld_b_abs": 0x30, "ld_h_ind": 0x48, "ld_b_ind": 0x50,
    "ldx_b_msh": 0xB1, "ldx_mem": 0x61, "st": 0x02, "rsh_k": 0x74, "and_k": 0x54, "add_x": 0x0C,
    "jeq_k": 0x15, "jset_k": 0x45, "jgt_x": 0x2D, "ret_k": 0x06,
}  # fmt: skip


def tcp_port_filter(port: int) -> list[tuple[int, int, int, int]]:
    """The classic BPF program (code, jt, jf, k) that keeps, of lo's traffic, only what the capture uses:
    outgoing copies (lo shows every packet twice, out and in) of IPv4 TCP segments to or from ``port``
    that carry a payload or a SYN (the SYN gives the stream's first sequence number). Pure TCP ACKs and
    everything else are dropped in the kernel, before a copy is queued to the socket."""
    # (op, k, jump if true, jump if false): a jump names a label, None goes on to the next instruction.
    source: list[tuple[str, int, str | None, str | None] | str] = [
        ("ld_w_abs", _SKF_AD_PKTTYPE, None, None),
        ("jeq_k", 4, None, "drop"),  # PACKET_OUTGOING
        ("ld_h_abs", 12, None, None),  # ethertype (lo has an Ethernet header of zeros)
        ("jeq_k", 0x0800, None, "drop"),
        ("ld_b_abs", 14 + 9, None, None),  # IP protocol
        ("jeq_k", 6, None, "drop"),
        ("ldx_b_msh", 14, None, None),  # X = IP header length
        ("ld_h_ind", 14, None, None),  # TCP source port
        ("jeq_k", port, "ports", None),
        ("ld_h_ind", 16, None, None),  # TCP destination port
        ("jeq_k", port, None, "drop"),
        "ports",
        ("ld_b_ind", 14 + 13, None, None),  # TCP flags
        ("jset_k", 0x02, "keep", None),  # SYN
        ("ld_b_ind", 14 + 12, None, None),  # TCP data offset, in its top 4 bits
        ("rsh_k", 2, None, None),
        ("and_k", 0x3C, None, None),  # = TCP header length
        ("add_x", 0, None, None),  # + IP header length
        ("st", 0, None, None),
        ("ld_h_abs", 14 + 2, None, None),  # IP total length
        ("ldx_mem", 0, None, None),
        ("jgt_x", 0, "keep", "drop"),  # a payload
        "keep",
        ("ret_k", 0xFFFFFFFF, None, None),  # the whole packet
        "drop",
        ("ret_k", 0, None, None),
    ]
    labels: dict[str, int] = {}
    for item in source:
        if isinstance(item, str):
            labels[item] = sum(1 for i in source[: source.index(item)] if not isinstance(i, str))
    prog = []
    for item in source:
        if isinstance(item, str):
            continue
        op, k, jt, jf = item
        pc = len(prog)
        prog.append(
            (_BPF_OP[op], 0 if jt is None else labels[jt] - pc - 1, 0 if jf is None else labels[jf] - pc - 1, k)
        )
    return prog


def attach_filter(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    """Attach the classic BPF ``prog`` to ``sock`` (SO_ATTACH_FILTER: struct sock_fprog)."""
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
    fprog = struct.pack("HP", len(prog), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)  # the kernel copies the program


class LoopbackCapture:
    """Timestamps DATA frames leaving the shipper and ACKs leaving the receiver, without a hop in their path.

    A raw packet socket on ``lo`` (root only) sees a copy of every TCP segment to or from the receiver's
    port as the sending side's kernel passes it down; the kernel stamps it then (SO_TIMESTAMPNS, on the
    wall clock, which the writer stamps with too). The byte streams are put back together by TCP sequence
    number and decoded with the protocol's own frame decoder. Nothing the shipper and receiver send waits
    for this thread: its own scheduling delays shift no stamp.

    The observer shares the machine's CPUs with what it measures, so it costs as little as it can: a
    classic BPF filter (``tcp_port_filter``) drops in the kernel every packet it would throw away (the
    incoming copy of each, pure TCP ACKs, other ports), and the socket is read in batches, every
    ``BATCH`` seconds. ``filtered=False`` reads every packet of lo and sorts them in
    Python, woken by each (the bench's capture before this; kept to show the two see the same frames).
    """

    BATCH = 0.01
    _PACKET_OUTGOING = 4
    _SO_TIMESTAMPNS = 35
    _TIMESPEC = struct.Struct("qq")

    def __init__(self, port: int, filtered: bool = True) -> None:
        self.port = port
        self.filtered = filtered
        self.acks: Frames = []
        self.data: Frames = []
        self.gaps = 0
        """Segments that did not follow the one before (lost by the capture); the figures are void if any."""
        self.packets = 0
        """Packets read from the socket."""
        self.cpu = 0.0
        """CPU seconds (user + system) the capture's thread used, once stopped."""
        self.wall = 0.0
        """Seconds from start to stop."""
        self._stop = threading.Event()
        # Protocol 0: the socket receives nothing until bound, so no packet is queued before the filter.
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        if filtered:
            attach_filter(self._sock, tcp_port_filter(port))
        self._sock.bind(("lo", _ETH_P_ALL))  # (Python puts the protocol in network order)
        self._sock.setsockopt(socket.SOL_SOCKET, self._SO_TIMESTAMPNS, 1)
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: no drops at 1000 frames/s
        if not filtered:
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
        self.wall = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.wall = time.monotonic() - self.wall
        self._sock.close()

    def _packets(self) -> Iterator[tuple[bytes | memoryview, list[tuple[int, int, bytes]], int]]:
        cmsg_space = socket.CMSG_SPACE(self._TIMESPEC.size)
        sock = self._sock
        if not self.filtered:
            while not self._stop.is_set():
                try:
                    pkt, ancdata, _flags, addr = sock.recvmsg(1 << 17, cmsg_space)
                except TimeoutError:
                    continue
                yield pkt, ancdata, addr[2]
            return
        # In batches: the packets carry the kernel's stamps, so reading them late shifts none. Woken
        # every BATCH seconds instead of at every packet, the thread takes no CPU from the pipeline at
        # each of its sends (a wake-up per packet cost more than the packet itself).
        # Into one buffer: recvmsg() allocated (and the allocator mapped and unmapped) 128 KiB per packet.
        buf = bytearray(1 << 17)
        view = memoryview(buf)
        stopped = False
        while not stopped:
            stopped = self._stop.wait(self.BATCH)  # then one last drain
            while True:
                try:
                    n, ancdata, _flags, addr = sock.recvmsg_into([buf], cmsg_space, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                yield view[:n], ancdata, addr[2]  # (note_frames copies what it keeps)

    def _run(self) -> None:
        try:
            self._read()
        finally:
            self.cpu = time.thread_time()

    def _read(self) -> None:
        streams: dict[tuple[int, int], tuple[int, FrameDecoder]] = {}
        for pkt, ancdata, pkttype in self._packets():
            self.packets += 1
            if pkttype != self._PACKET_OUTGOING or len(pkt) < 14 + 20 or pkt[12:14] != b"\x08\x00":
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
