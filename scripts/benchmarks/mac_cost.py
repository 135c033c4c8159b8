"""The payload MAC's own cost (issue 19 target 5) in the code the daemons run, in process.

    PYTHONPATH=scripts:. .venv/bin/python -m benchmarks.mac_cost [--mib 256] [--repeat 9]

Run it from the root of the tree to measure (``-m`` puts the current directory first on sys.path).

The throughput bench's daemon-level figures compare whole runs with and without ``--payload-mac``:
their noise (about 0.1 s/GiB of CPU per side between runs of one tree) is as large as the MAC's hash
(GMAC: 0.05-0.15 s/GiB, by CPU), so they bound the MAC's cost but cannot resolve it. Here each side's
per-frame work for DATA frames of the default chunk size runs with the MAC on and off over the same
bytes, many times, interleaved, and the difference is set against GMAC alone over those bytes. What
this leaves out is what a whole run adds around the codec: a slower run pays the pipeline's
per-batch and per-wake-up costs more often (the daemon-level figures include that).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from benchmarks.common import MIB
from protocol.auth import TO_RECEIVER, DirectionKeys, FrameOpener, FrameSealer, gmac_key, payload_gmac, payload_mac
from protocol.buffers import BufferPool
from protocol.digest import chunk_digest, segment_hasher
from protocol.framing import FrameDecoder, encode_parts
from protocol.messages import Data
from shipper.config_values import auto_chunk_size
from shipper.settings import DEFAULT_WINDOW_MIN
from shipper.source import MADV_POPULATE_READ

STREAM = "db1"
SEGMENT = "000000010000000000000042"

MAC_CHUNK = auto_chunk_size(DEFAULT_WINDOW_MIN)
"""The chunk the shipper sends with the default window settings (4 MiB)."""
MAC_PAYLOADS = 16
"""Distinct payloads the frames cycle through: 64 MiB at 4 MiB chunks, twice this machine's L3, so
that each frame's bytes come from DRAM, as the shipper's page cache and the receiver's socket do
(``_segment_views``: a file's pages, mapped)."""
RECV_STEP = 256 * 1024
"""Bytes per read as the receiver's socket fills a payload in place (the kernel's copy, as a memcpy)."""


@dataclass(frozen=True)
class MacCost:
    """CPU seconds per GiB of each repetition (interleaved), for each way of handling the same frames."""

    seal_on: list[float]
    """The shipper per frame, in DataSender.send's order for a mapped chunk: with GMAC on, the MAC made
    ahead (FrameSealer.premac, the pass that reads the pages from memory), the segment hasher and the
    chunk digest over the chunk (SegmentReader.view), encode_parts with that FrameSealer, and the
    socket's copy of the payload (a memcpy, as tcp_sendmsg makes it)."""
    seal_off: list[float]
    """The same with the payload MAC off."""
    open_on: list[float]
    """The receiver per frame: the socket's copy into the decoder's pooled buffer (get_buffer /
    buffer_updated, RECV_STEP a read), next_message() with a FrameOpener with GMAC on (tag and payload
    MAC checked), then the two digests Ingest.on_data makes, and the buffer back to the pool."""
    open_off: list[float]
    """The same with the payload MAC off."""
    gmac: list[float]
    """protocol.auth.payload_gmac alone over the same payloads (the mapped file) in the same order."""
    gmac_hot: list[float]
    """payload_gmac alone over one 1 MiB payload again and again (from L2: what the throughput bench
    called 'GMAC alone' before)."""

    def __add__(self, other: MacCost) -> MacCost:
        """Both measurements' repetitions together (the throughput bench pools those of its rounds)."""
        return MacCost(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def _extra(self, on: list[float], off: list[float]) -> list[float]:
        return [a - b for a, b in zip(on, off, strict=True)]

    @property
    def shipper(self) -> float:
        """Median of the repetitions' extra CPU s/GiB of the shipper's frames with the MAC on."""
        return statistics.median(self._extra(self.seal_on, self.seal_off))

    @property
    def receiver(self) -> float:
        """Median of the repetitions' extra CPU s/GiB of the receiver's frames with the MAC on."""
        return statistics.median(self._extra(self.open_on, self.open_off))

    def ratios(self, on: list[float], off: list[float]) -> list[float]:
        """Each repetition's extra CPU over GMAC alone over the same bytes, in that repetition."""
        return sorted(e / g for e, g in zip(self._extra(on, off), self.gmac, strict=True))

    def side(self, on: list[float], off: list[float]) -> str:
        """One side's figure: its extra s/GiB, its ratio to GMAC (median, quartiles of the repetitions)."""
        r = self.ratios(on, off)
        q1, _, q3 = statistics.quantiles(r, n=4) if len(r) > 1 else (r[0], 0.0, r[0])
        extra = statistics.median(self._extra(on, off))
        return (
            f"+{extra:.3f} s/GiB, {statistics.median(r):.2f} x GMAC (quartiles {q1:.2f}-{q3:.2f}, {len(r)} repetitions)"
        )

    @property
    def shipper_ratio(self) -> float:
        return statistics.median(self.ratios(self.seal_on, self.seal_off))

    @property
    def receiver_ratio(self) -> float:
        return statistics.median(self.ratios(self.open_on, self.open_off))


def _mac_keys(direction: bytes, mac: bool) -> tuple[FrameSealer, FrameOpener]:
    keys = DirectionKeys.derive({STREAM: b"s" * 32}, direction, b"r" * 32, b"n" * 32, "recv", "ship")
    return FrameSealer(keys, mac, mac), FrameOpener(keys, mac, mac)


def _ship(sealer: FrameSealer, payloads: list[memoryview], frames: int, sink: memoryview) -> None:
    hasher = segment_hasher()
    for i in range(frames):
        view = payloads[i % len(payloads)]
        if sealer.payload_mac:
            sealer.premac(STREAM, view)  # as DataSender.send does before the digests of a mapped chunk
        hasher.update(view)
        digest = chunk_digest(SEGMENT, i * MAC_CHUNK, view)
        _, payload = encode_parts(Data(STREAM, SEGMENT, i * MAC_CHUNK, digest, view), None, sealer)  # type: ignore[arg-type]
        sink[:] = payload


def _receive(opener: FrameOpener, heads: list[bytes], payloads: list[memoryview], pool: BufferPool) -> None:
    decoder = FrameDecoder(max_payload=MAC_CHUNK)
    decoder.pool, decoder.opener = pool, opener
    hasher = segment_hasher()
    for i, head in enumerate(heads):
        source = payloads[i % len(payloads)]
        # First read: the head and the payload's first bytes land in the scratch buffer.
        view = decoder.get_buffer()
        at = min(len(view) - len(head), MAC_CHUNK)
        view[: len(head)] = head
        view[len(head) : len(head) + at] = source[:at]
        decoder.buffer_updated(len(head) + at)
        while at < MAC_CHUNK:
            buf = decoder.get_buffer()
            take = min(RECV_STEP, len(buf), MAC_CHUNK - at)
            buf[:take] = source[at : at + take]
            decoder.buffer_updated(take)
            at += take
        msg = decoder.next_message()
        assert isinstance(msg, Data), msg
        if chunk_digest(msg.segment, msg.offset, msg.payload) != msg.digest:
            raise AssertionError("chunk digest mismatch")
        hasher.update(msg.payload)
        pool.give(msg.payload)


def _segment_views() -> list[memoryview]:
    """MAC_PAYLOADS chunks of a file in the page cache, mapped as SegmentReader.view maps a sealed
    segment's chunk (MAP_SHARED, read only, page tables filled at once): 4 KiB pages, as the shipper's
    digests and MAC read them, not an anonymous mapping's huge pages."""
    with tempfile.TemporaryFile(dir="/var/tmp") as f:
        f.write(os.urandom(MAC_PAYLOADS * MAC_CHUNK))
        f.flush()
        block = mmap.mmap(f.fileno(), MAC_PAYLOADS * MAC_CHUNK, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    with contextlib.suppress(OSError):  # a kernel before 5.14: the pages fault in at the warm-up instead
        block.madvise(MADV_POPULATE_READ)
    return [memoryview(block)[i * MAC_CHUNK : (i + 1) * MAC_CHUNK] for i in range(MAC_PAYLOADS)]


def _heads(sealer: FrameSealer, payloads: list[memoryview], frames: int) -> list[bytes]:
    """The heads (prefix, header with digest and MAC, tag) of ``frames`` DATA frames as ``sealer`` seals them."""
    heads = []
    for i in range(frames):
        p = payloads[i % len(payloads)]
        data = Data(STREAM, SEGMENT, i * MAC_CHUNK, chunk_digest(SEGMENT, i * MAC_CHUNK, p), p)  # type: ignore[arg-type]
        heads.append(encode_parts(data, None, sealer)[0])
    return heads


class _Gmac:
    """payload_gmac alone, every call under a nonce of its own (as the sealer makes them)."""

    def __init__(self) -> None:
        self.aead = AESGCM(gmac_key(b"k" * 32))
        self.sequence = 0

    def over(self, payloads: list[memoryview], frames: int) -> None:
        for i in range(frames):
            payload_gmac(self.aead, self.sequence, payloads[i % len(payloads)])
            self.sequence += 1


def mac_cost(mib: int = 256, repeat: int = 9) -> MacCost:
    """Measure the payload MAC's cost on each side over ``mib`` MiB of DATA frames per repetition.

    Each repetition runs every variant once, in an order that rotates, so that drift of the machine
    (the other core's load, frequency) falls on all of them alike; CPU is time.process_time.
    """
    frames = max(1, mib * MIB // MAC_CHUNK)
    payloads = _segment_views()
    hot = [memoryview(os.urandom(MIB))]
    sink = memoryview(bytearray(MAC_CHUNK))
    sealers = {mac: _mac_keys(TO_RECEIVER, mac)[0] for mac in (True, False)}
    heads = {mac: _heads(_mac_keys(TO_RECEIVER, mac)[0], payloads, frames) for mac in (True, False)}
    pool = BufferPool()
    gmac = _Gmac()
    variants: dict[str, Callable[[], None]] = {
        "seal_on": lambda: _ship(sealers[True], payloads, frames, sink),
        "seal_off": lambda: _ship(sealers[False], payloads, frames, sink),
        "open_on": lambda: _receive(_mac_keys(TO_RECEIVER, True)[1], heads[True], payloads, pool),
        "open_off": lambda: _receive(_mac_keys(TO_RECEIVER, False)[1], heads[False], payloads, pool),
        "gmac": lambda: gmac.over(payloads, frames),
        "gmac_hot": lambda: gmac.over(hot, frames * MAC_CHUNK // MIB),
    }
    gib = frames * MAC_CHUNK / (1 << 30)
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for name in names:
        variants[name]()  # warm: the pool's slabs, the payloads' pages, the code
    for rep in range(repeat):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            t0 = time.process_time()
            variants[name]()
            times[name].append((time.process_time() - t0) / gib)
    return MacCost(**times)


def print_mac_cost(mib: int, repeat: int) -> None:
    cost = mac_cost(mib, repeat)
    gmac, hot = statistics.median(cost.gmac), statistics.median(cost.gmac_hot)
    print(f"payload MAC, {MAC_CHUNK >> 20} MiB DATA frames, {mib} MiB x {repeat} interleaved repetitions, CPU s/GiB")
    print(f"GMAC alone over the same bytes {gmac:.3f} (one hot 1 MiB payload: {hot:.3f})")
    for side, on, off in (
        ("shipper seal", cost.seal_on, cost.seal_off),
        ("receiver open", cost.open_on, cost.open_off),
    ):
        print(f"{side:14} on {statistics.median(on):.3f}, off {statistics.median(off):.3f}: {cost.side(on, off)}")


def hash_alone(total: int) -> tuple[float, float, float]:
    """Return the CPU seconds of one core over ``total`` bytes in 1 MiB payloads for the payload MAC the
    runs negotiate (protocol.auth.payload_gmac: GMAC, a fresh nonce each), for HMAC-SHA256 (what a peer
    without ``pmac-gmac`` gets) and for a keyed BLAKE2b (comparison only: the protocol does not offer it)."""
    block = os.urandom(MIB)
    key = os.urandom(32)
    aead = AESGCM(gmac_key(key))
    times = []
    for mac in (
        lambda b, n: payload_gmac(aead, n, b),
        lambda b, n: payload_mac(key, b),
        lambda b, n: hashlib.blake2b(b, key=key, digest_size=16).digest(),
    ):
        start = time.process_time()
        for n in range(total // MIB):
            mac(block, n)
        times.append(time.process_time() - start)
    return times[0], times[1], times[2]


def hash_beside_busy(total: int) -> float:
    """Return the CPU seconds of the payload MAC's hash alone over ``total`` bytes while another
    process keeps the other core busy hashing too: whether a hash slows down when both cores work, as
    they do during a run (on this machine HMAC-SHA256 does not: 0.60-0.63 s per GiB either way)."""
    busy = subprocess.Popen(
        [sys.executable, "-c", "import hashlib,os\nb=os.urandom(1<<20)\nwhile True: hashlib.sha256(b).digest()"]
    )
    try:
        time.sleep(0.2)
        return hash_alone(total)[0]
    finally:
        busy.kill()
        busy.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mib", type=int, default=256, help="MiB of DATA frames per repetition")
    p.add_argument("--repeat", type=int, default=9)
    args = p.parse_args()
    print_mac_cost(args.mib, args.repeat)


if __name__ == "__main__":
    main()
