"""Python paid per DATA frame and per ACK in the codec, without sockets: a low-noise figure of what the
daemons pay per chunk (1 MiB chunks: 1024 DATA frames and about as many ACKs per GiB, so microseconds
per frame x 1024 = microseconds per GiB... x 1e-6 = s/GiB).

    PYTHONPATH=scripts:. .venv/bin/python -m benchmarks.codec [--frames 20000] [--repeat 5] [CASE ...]

Run it from the root of the tree to measure (``cd /tmp/A && PYTHONPATH=scripts:. ...``): ``-m`` puts
the current directory first on sys.path, before PYTHONPATH.

Each case runs ``--frames`` times per round, timed with time.process_time; the best and the median
round are printed in microseconds per frame. Cases, each as the daemons do it:
- ``encode``: the shipper builds a DATA (digest precomputed) and encodes + tags it (encode_parts with a
  FrameSealer), as FramedConnection.send does.
- ``decode``: the receiver's FrameDecoder with an opener and a pool takes the frame as the socket gives
  it (get_buffer/buffer_updated: the head and the payload's first bytes in the scratch buffer, the rest
  in place in four reads that copy nothing, as the kernel's copy is not Python's), and next_message()
  hands out the Data; its buffer goes back to the pool.
- ``decode-cold``: the same with the payload's bytes really written into its buffer (1 MiB per frame,
  as the kernel's copy does), which leaves Python's code and data out of the caches as in the daemon;
  ``copy``: those copies alone. decode-cold - copy is the decoder's Python with cold caches.
- ``ingest``: Ingest.on_data of that Data (xxh3 of 1 MiB included: see ``digests``).
- ``digests``: the two xxh3 passes over 1 MiB that on_data makes (chunk digest, segment hasher), alone.
- ``ack``: the receiver encodes + tags an ACK, the shipper decodes + verifies it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from protocol.auth import TO_RECEIVER, TO_SHIPPER, DirectionKeys, FrameOpener, FrameSealer
from protocol.buffers import BufferPool
from protocol.digest import chunk_digest, segment_hasher
from protocol.framing import NEED_DATA, FrameDecoder, encode_parts
from protocol.messages import Ack, Data, Position
from receiver.ingest import Ingest

CHUNK = 1 << 20
STREAM = "db1"
SEGMENT = "000000010000000000000042"
READS = 4
"""Reads that fill the rest of a payload in place (the receiver counts about 4.8 reads per DATA)."""


def _keys(direction: bytes) -> DirectionKeys:
    return DirectionKeys.derive({STREAM: b"s" * 32}, direction, b"r" * 32, b"n" * 32, "recv", "ship")


def _pair(direction: bytes) -> tuple[FrameSealer, FrameOpener]:
    return FrameSealer(_keys(direction)), FrameOpener(_keys(direction))


def bench_encode(n: int) -> Callable[[], None]:
    sealer, _ = _pair(TO_RECEIVER)
    payload = bytearray(CHUNK)
    digest = chunk_digest(SEGMENT, 0, payload)

    def run() -> None:
        for i in range(n):
            encode_parts(Data(STREAM, SEGMENT, i * CHUNK, digest, payload), None, sealer)  # type: ignore[arg-type]

    return run


def _frames(n: int) -> list[bytes]:
    """The heads (prefix, header, tag) of ``n`` consecutive DATA frames as the shipper seals them."""
    sealer, _ = _pair(TO_RECEIVER)
    payload = bytes(CHUNK)
    return [encode_parts(Data(STREAM, SEGMENT, i * CHUNK, 0, payload), None, sealer)[0] for i in range(n)]


def bench_decode(n: int, cold: bool = False) -> Callable[[], None]:
    heads = _frames(n)
    pool = BufferPool()
    source = memoryview(bytes(range(256)) * (CHUNK // 256))

    def run() -> None:
        _, opener = _pair(TO_RECEIVER)
        decoder = FrameDecoder()
        decoder.pool, decoder.opener = pool, opener
        for head in heads:
            # First read: the head and the payload's first bytes land in the scratch buffer.
            view = decoder.get_buffer()
            first = len(view)
            view[: len(head)] = head
            decoder.buffer_updated(first)
            rest = CHUNK - (first - len(head))
            step = -(-rest // READS)
            while rest:
                buf = decoder.get_buffer()
                take = min(step, len(buf), rest)
                if cold:
                    # The kernel's copy, as recv_into makes it: it evicts what Python had in L1/L2.
                    buf[:take] = source[:take]
                decoder.buffer_updated(take)
                rest -= take
            msg = decoder.next_message()
            assert isinstance(msg, Data), msg
            pool.give(msg.payload)
            assert decoder.next_message() is NEED_DATA

    return run


def bench_copy(n: int) -> Callable[[], None]:
    """The copies ``decode-cold`` makes, alone: subtract it from ``decode-cold``."""
    source = memoryview(bytes(range(256)) * (CHUNK // 256))
    pool = BufferPool()

    def run() -> None:
        for _ in range(n):
            buf = pool.take(CHUNK)
            step = -(-CHUNK // READS)
            for at in range(0, CHUNK, step):
                buf[at : at + step] = source[at : at + step]
            pool.give(buf)

    return run


def bench_ingest(n: int) -> Callable[[], None]:
    payload = bytes(CHUNK)
    msgs = [Data(STREAM, SEGMENT, i * CHUNK, chunk_digest(SEGMENT, i * CHUNK, payload), payload) for i in range(n)]

    def run() -> None:
        ingest = Ingest("", None, 0)
        for msg in msgs:
            ingest.on_data(msg)

    return run


def bench_digests(n: int) -> Callable[[], None]:
    payload = bytes(CHUNK)

    def run() -> None:
        hasher = segment_hasher()
        for i in range(n):
            chunk_digest(SEGMENT, i * CHUNK, payload)
            hasher.update(payload)

    return run


def bench_ack(n: int) -> Callable[[], None]:
    def run() -> None:
        sealer, opener = _pair(TO_SHIPPER)
        decoder = FrameDecoder()
        decoder.opener = opener
        replayed = Position(SEGMENT, 0)
        for i in range(n):
            head, _ = encode_parts(Ack(STREAM, Position(SEGMENT, i * CHUNK), False, replayed), None, sealer)
            decoder.receive_data(head)
            msg = decoder.next_message()
            assert isinstance(msg, Ack), msg

    return run


CASES: dict[str, tuple[Callable[[int], Callable[[], None]], int]] = {
    # name: (factory, divisor of --frames: the digest-bound cases need fewer rounds to be steady)
    "encode": (bench_encode, 1),
    "decode": (bench_decode, 1),
    "decode-cold": (lambda n: bench_decode(n, cold=True), 10),
    "copy": (bench_copy, 10),
    "ingest": (bench_ingest, 10),
    "digests": (bench_digests, 10),
    "ack": (bench_ack, 1),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("cases", nargs="*", default=list(CASES))
    args = p.parse_args()
    print(f"{'case':8} {'best us':>9} {'median us':>10} {'s/GiB (best x1024)':>19}")
    for name in args.cases:
        factory, div = CASES[name]
        n = max(1, args.frames // div)
        run = factory(n)
        run()  # warm: pool slabs, caches
        times = []
        for _ in range(args.repeat):
            t0 = time.process_time()
            run()
            times.append((time.process_time() - t0) / n * 1e6)
        best, med = min(times), statistics.median(times)
        print(f"{name:8} {best:9.2f} {med:10.2f} {best * 1024 / 1e6:19.4f}", flush=True)


if __name__ == "__main__":
    main()
