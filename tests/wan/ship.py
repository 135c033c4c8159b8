"""scripts/wan ship: generate a log, ship it dc1 -> dc2 across the link, verify it, report the rate.

The source is written before the shipper starts (``--seal immediate``: every segment is complete on
sight), so what is measured is how fast one connection moves a backlog across the link. The rate is
taken at the receiver, from the first byte that arrived to the last segment sealed in log/, by
polling the copy's size every 50 ms; the time to start the processes and to connect is left out and
reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from logship.config import parse_size
from tests.helpers.copies import digest_file
from tests.helpers.source import make_secret, run_loadgen, segment_name
from tests.wan.lab import RECEIVER_LISTEN, TARGET, NsProc, Wan, parse_duration


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", default="100mbit", help="link rate (default 100mbit)")
    p.add_argument("--rtt", default="50ms", help="round trip (default 50ms)")
    p.add_argument("--size", default="128MiB", help="bytes to ship (default 128MiB)")
    p.add_argument("--segment-size", default="16MiB", help="segment size (default 16MiB)")
    p.add_argument(
        "--data", choices=["random", "log"], default="random", help="random (incompressible) or log-like text"
    )
    p.add_argument("--compress", help="shipper --compress, e.g. zstd or zstd:3")
    p.add_argument("--rate-limit", help="shipper --rate-limit, e.g. 50mbit")
    p.add_argument("--shipper-args", default="", help="more shipper flags, one string (e.g. '--window 4MiB')")
    p.add_argument(
        "--keep-up", action="store_true", help="leave dc1/dc2 up afterwards (default: down, unless up before)"
    )
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line too")
    p.add_argument("--timeout", type=float, default=600, help="give up after this many seconds (default 600)")


def _generate(source: Path, total: int, segment: int, data: str) -> list[int]:
    sizes = []
    left = total
    if data == "log":
        count = max(1, -(-total // segment))
        run_loadgen(source, count, segment, "--seed", "5")
        return [p.stat().st_size for p in sorted(source.iterdir())]
    i = 1
    while left > 0:
        n = min(segment, left)
        with open(source / segment_name(i), "wb") as f:
            done = 0
            while done < n:
                block = os.urandom(min(4 << 20, n - done))
                f.write(block)
                done += len(block)
        sizes.append(n)
        left -= n
        i += 1
    return sizes


def _received(copy: Path) -> int:
    total = 0
    for sub in ("log", "incoming"):
        d = copy / sub
        if d.is_dir():
            for p in d.iterdir():
                if sub == "log" or p.name.endswith(".partial"):
                    try:
                        total += p.stat().st_size
                    except FileNotFoundError:
                        pass
    return total


def _sealed(copy: Path) -> int:
    d = copy / "log"
    return len(os.listdir(d)) if d.is_dir() else 0


def ship(wan: Wan, work: Path, args: argparse.Namespace) -> dict[str, float | int | str]:
    """Run one transfer in ``wan`` (which must be up); return its figures. Raises AssertionError."""
    source = work / "src"
    source.mkdir()
    sizes = _generate(source, parse_size(args.size), parse_size(args.segment_size), args.data)
    total = sum(sizes)
    secret = make_secret(work / "secret")
    copy_root = work / "copy"
    stream = "wan"
    recv_argv = ["--listen", RECEIVER_LISTEN, "--data-dir", str(copy_root), "--secret-file", str(secret)]
    ship_argv = ["--stream", stream, "--source", str(source), "--target", TARGET, "--secret-file", str(secret)]
    ship_argv += ["--seal", "immediate"]
    if args.compress:
        ship_argv += ["--compress", args.compress]
    if args.rate_limit:
        ship_argv += ["--rate-limit", args.rate_limit]
    ship_argv += shlex.split(args.shipper_args)
    receiver = NsProc(wan, "dc2", "receiver", recv_argv, work / "receiver.log").start()
    shipper = None
    try:
        receiver.listen_port()  # up before the clock starts (its port is fixed: dc2 is this run's alone)
        t_start = time.monotonic()
        shipper = NsProc(wan, "dc1", "shipper", ship_argv, work / "shipper.log").start()
        copy = copy_root / stream
        t_first = None
        deadline = t_start + args.timeout
        while True:
            now = time.monotonic()
            got = _received(copy)
            if t_first is None and got > 0:
                t_first, got_first = now, got
            if _sealed(copy) >= len(sizes):
                t_end = now
                break
            if now > deadline:
                raise AssertionError(f"only {got} of {total} bytes arrived in {args.timeout:.0f}s; see {work}")
            if not shipper.alive() or not receiver.alive():
                raise AssertionError(f"a process exited early; see {work}/*.log")
            time.sleep(0.05)
    finally:
        for proc in (shipper, receiver):
            if proc is not None:
                proc.stop()
    for i, size in enumerate(sizes, start=1):
        name = segment_name(i) if args.data == "random" else sorted(os.listdir(source))[i - 1]
        dst = copy / "log" / name
        assert dst.stat().st_size == size and digest_file(dst) == digest_file(source / name), f"{name} differs"
    assert t_first is not None
    seconds = max(t_end - t_first, 1e-6)
    rate_bps = (total - got_first) * 8 / seconds
    return {
        "bytes": total,
        "segments": len(sizes),
        "data": args.data,
        "compress": args.compress or "",
        "rate_limit": args.rate_limit or "",
        "link_mbit": wan.rate_bps / 1e6,
        "rtt_ms": wan.rtt * 1000,
        "seconds": round(seconds, 3),
        "startup_seconds": round(t_first - t_start, 3),
        "mbit_per_s": round(rate_bps / 1e6, 2),
        "fraction_of_link": round(rate_bps / wan.rate_bps, 3),
    }


def run_ship(args: argparse.Namespace) -> int:
    from logship.config import parse_rate

    wan = Wan(args.name, parse_rate(args.rate) * 8, parse_duration(args.rtt))
    was_up = wan.is_up()
    wan.up()
    try:
        with tempfile.TemporaryDirectory(prefix="logship-wan-") as tmp:
            try:
                figures = ship(wan, Path(tmp), args)
            except AssertionError as e:
                for name in ("shipper.log", "receiver.log"):
                    print(f"--- {name} (last lines)", file=sys.stderr)
                    lines = (Path(tmp) / name).read_text(errors="replace").splitlines()
                    print("\n".join(lines[-15:]), file=sys.stderr)
                print(f"scripts/wan ship: FAILED: {e}", file=sys.stderr)
                return 1
    finally:
        if not args.keep_up and not was_up:
            wan.down()
    print(
        f"shipped {figures['bytes']} bytes ({figures['segments']} segments, {figures['data']} data"
        f"{', compress ' + str(figures['compress']) if figures['compress'] else ''}) across "
        f"{figures['link_mbit']:g} Mbit/s, {figures['rtt_ms']:g} ms RTT in {figures['seconds']} s "
        f"(+{figures['startup_seconds']} s to start and connect): {figures['mbit_per_s']} Mbit/s = "
        f"{figures['fraction_of_link']} x the link rate; every segment verified"
    )
    if args.json:
        print(json.dumps(figures))
    return 0
