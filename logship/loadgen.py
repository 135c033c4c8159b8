"""Write a segmented append-only log, the way a database or Exchange writes its transaction log.

Segments are named like Exchange log generations: E00 + 8 uppercase hex digits + .log
(E0000000001.log, E0000000002.log, ...). Each segment is filled by os.write() on an O_APPEND
descriptor, one --append-size piece at a time; the next segment is created only once the previous
one is complete, so "a later segment exists" really means "this one is sealed".

The content is log-like text (timestamps, transaction ids, key=value records) cut from a pool of
lines made once with random.Random(--seed): the same seed and options give byte-identical segments,
and it compresses about as well as a real text log. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import sys
import time

SEGMENT_RE = re.compile(r"^E00([0-9A-F]{8})\.log$")
POOL_BYTES = 8 * 1024 * 1024
MIB = 1024 * 1024

TABLES = ("orders", "order_lines", "customers", "invoices", "stock", "payments", "mailbox", "folders")
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "mallory", "trent")
WORDS = ("pending", "shipped", "paid", "open", "closed", "retry", "queued", "delivered", "held", "ok")


def segment_name(number: int) -> str:
    """Return the file name of segment number ``number`` (1 -> E0000000001.log)."""
    return f"E00{number:08X}.log"


def highest_segment(directory: str) -> int:
    """Return the highest segment number present in ``directory``, 0 if none."""
    highest = 0
    for name in os.listdir(directory):
        match = SEGMENT_RE.match(name)
        if match:
            highest = max(highest, int(match.group(1), 16))
    return highest


def record_lines(rng: random.Random) -> list[bytes]:
    """Return the lines of one transaction: BEGIN, a few row changes, COMMIT or ABORT."""
    ts = 1_700_000_000.0 + rng.random() * 30_000_000
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1e6) % 1_000_000:06d}Z"
    txn = f"{rng.getrandbits(48):012x}"
    lsn = rng.getrandbits(40)
    lines = [f"{stamp} txn={txn} lsn={lsn:010X} BEGIN user={rng.choice(USERS)} session={rng.getrandbits(24):06x}"]
    for i in range(rng.randint(1, 6)):
        op = rng.choice(("INSERT", "UPDATE", "UPDATE", "DELETE"))
        table = rng.choice(TABLES)
        fields = [f"key={rng.randint(1, 9_999_999)}"]
        if op != "DELETE":
            fields.append(f"status={rng.choice(WORDS)}")
            fields.append(f"amount={rng.randint(0, 999_999) / 100:.2f}")
            fields.append(f"ref={rng.getrandbits(64):016x}")
        lines.append(f"{stamp} txn={txn} lsn={lsn + i + 1:010X} {op} table={table} " + " ".join(fields))
    end = "COMMIT" if rng.random() < 0.97 else "ABORT reason=deadlock"
    lines.append(f"{stamp} txn={txn} lsn={lsn + 99:010X} {end}")
    if rng.random() < 0.01:
        lines.append(f"{stamp} CHECKPOINT redo_lsn={lsn:010X} dirty_pages={rng.randint(0, 50_000)}")
    return [(line + "\n").encode("ascii") for line in lines]


def make_pool(seed: int) -> memoryview:
    """Return POOL_BYTES of log text, twice over, so any slice up to POOL_BYTES never wraps."""
    rng = random.Random(f"logship-loadgen-pool:{seed}")
    transactions = [b"".join(record_lines(rng)) for _ in range(20_000)]
    parts: list[bytes] = []
    size = 0
    while size < POOL_BYTES:
        rng.shuffle(transactions)
        for txn in transactions:
            parts.append(txn)
            size += len(txn)
            if size >= POOL_BYTES:
                break
    pool = b"".join(parts)[:POOL_BYTES]
    return memoryview(pool + pool)


class Pacer:
    """Keep the average write rate at or under ``rate`` bytes per second (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.written = 0

    def wrote(self, n: int) -> None:
        self.written += n
        if self.rate > 0:
            ahead = self.written / self.rate - (time.monotonic() - self.start)
            if ahead > 0:
                time.sleep(ahead)


class Stop:
    """Tell the writer when to stop: a signal, or the --duration deadline."""

    def __init__(self, duration: float | None) -> None:
        self.deadline = time.monotonic() + duration if duration else None
        self.signalled = False

    def signal(self, signum: int, frame: object) -> None:
        self.signalled = True

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


def write_segment(path: str, size: int, pool: memoryview, rng: random.Random, args, pacer, stop) -> tuple[int, bool]:
    """Append ``size`` bytes to a new segment at ``path``; return (bytes written, completed).

    A signal stops it at once. At the --duration deadline it stops at once with --leave-active
    (the segment stays in progress), otherwise it finishes the segment without pacing.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
    written = 0
    paced = True
    try:
        while written < size:
            if stop.signalled:
                return written, False
            if paced and stop.expired():
                if args.leave_active:
                    return written, False
                paced = False
            n = min(args.append_size, size - written)
            piece = 0
            while piece < n:
                take = min(n - piece, POOL_BYTES)
                offset = rng.randrange(POOL_BYTES)
                piece += os.write(fd, pool[offset : offset + take])
            written += n
            if paced:
                pacer.wrote(n)
        return written, True
    finally:
        os.close(fd)


def positive(text: str) -> int:
    value = int(text, 0)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="loadgen",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Stops after --segments, or at --duration, or on SIGINT/SIGTERM, whichever comes first;\n"
            "with neither --segments nor --duration it runs until signalled.\n"
            "examples:\n"
            "  loadgen --dir /tmp/src --segments 20 --rate 8000000 --leave-active\n"
            "  loadgen --dir /tmp/src --duration 60 --min-size 100000 --max-size 4000000 --seed 7"
        ),
    )
    parser.add_argument("--dir", required=True, help="directory to write segments into (created if missing)")
    parser.add_argument("--segments", type=positive, help="write this many segments, then stop")
    parser.add_argument(
        "--duration",
        type=float,
        help="stop after this many seconds; the segment in progress is finished first unless --leave-active",
    )
    parser.add_argument("--segment-size", type=positive, default=MIB, help="bytes per segment (default 1 MiB)")
    parser.add_argument("--min-size", type=positive, help="random segment size: smallest (with --max-size)")
    parser.add_argument("--max-size", type=positive, help="random segment size: largest (with --min-size)")
    parser.add_argument("--rate", type=float, default=0, help="bytes per second, on average (default 0: no limit)")
    parser.add_argument("--append-size", type=positive, default=64 * 1024, help="bytes per write (default 64 KiB)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    parser.add_argument(
        "--leave-active",
        action="store_true",
        help="leave the last segment in progress: with --segments it gets only half its size, at --duration "
        "writing stops mid-segment. Default: the last segment is written to its full size too.",
    )
    parser.add_argument(
        "--start", type=positive, help="number of the first segment (default: one after the highest in --dir)"
    )
    args = parser.parse_args(argv)
    if (args.min_size is None) != (args.max_size is None):
        parser.error("--min-size and --max-size go together")
    if args.min_size is not None and args.min_size > args.max_size:
        parser.error("--min-size must be <= --max-size")
    if args.rate < 0:
        parser.error("--rate must be >= 0")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    first = args.start if args.start is not None else highest_segment(args.dir) + 1
    pool = make_pool(args.seed)
    stop = Stop(args.duration)
    signal.signal(signal.SIGTERM, stop.signal)
    signal.signal(signal.SIGINT, stop.signal)
    pacer = Pacer(args.rate)
    started = time.monotonic()
    segments = total = 0
    number = first
    while not stop.signalled and not stop.expired():
        # One generator per segment: its size and content depend on (seed, number) only.
        rng = random.Random(f"logship-loadgen:{args.seed}:{number}")
        size = args.segment_size if args.min_size is None else rng.randint(args.min_size, args.max_size)
        last = args.segments is not None and segments + 1 == args.segments
        if last and args.leave_active:
            size = max(1, size // 2)
        path = os.path.join(args.dir, segment_name(number))
        try:
            written, completed = write_segment(path, size, pool, rng, args, pacer, stop)
        except FileExistsError:
            print(f"loadgen: {path} exists already; use --start or another --dir", file=sys.stderr)
            return 1
        segments += 1
        total += written
        number += 1
        if last or not completed:
            break
    elapsed = time.monotonic() - started
    rate = total / elapsed / 1e6 if elapsed > 0 else 0.0
    active = " (last one left active)" if args.leave_active else ""
    print(
        f"loadgen: {segments} segments{active}, {total} bytes, "
        f"{segment_name(first)}..{segment_name(first + max(segments, 1) - 1)}, {elapsed:.2f} s, {rate:.1f} MB/s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
