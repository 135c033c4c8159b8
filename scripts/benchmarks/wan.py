"""Benchmark 3: throughput across a WAN (scripts/wan: 100 Mbit/s, 50 ms RTT) as a fraction of the link.

The hosts are scripts/wan's namespaces (own names for this run, removed afterwards): dc1 and dc2
joined by a tbf-capped veth pair, our delay proxy in dc2 adding the round trip. The baseline is the
raw link rate measured in the same run: one plain TCP connection blasting random bytes from dc1 to a
sink in dc2 through the same link and proxy, timed at the sink from its first byte to its last.
logship then ships scripts/loadgen's log-like text (a backlog, ``--seal immediate``) with
``scripts/wan ship``'s measurement: at the receiver, from the first byte to the last segment sealed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from benchmarks.common import MIB, ROOT, Options, Result, fresh_dir

TITLE = "WAN throughput (scripts/wan: 100 Mbit/s, 50 ms RTT)"
if TYPE_CHECKING:
    from tests.wan.lab import Wan

RATE = "100mbit"
RTT = "50ms"

SINK = r"""
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
n = 0; first = None
buf = bytearray(1 << 20)
while True:
    k = c.recv_into(buf)
    if not k:
        break
    if first is None:
        first = time.monotonic(); n0 = k
    n += k
    last = time.monotonic()
print(n, n0, first, last, flush=True)
"""

BLAST = r"""
import os, socket, sys
total = int(sys.argv[3])
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
block = os.urandom(1 << 20)
sent = 0
while sent < total:
    c.sendall(block); sent += len(block)
c.shutdown(socket.SHUT_WR)
c.recv(1)
c.close()
"""


def _blast(wan: Wan, total: int) -> float:
    """Send ``total`` bytes over one TCP connection dc1 -> proxy -> dc2; return bits per second."""
    from tests.wan.lab import DC2_ADDR, PROXY_PORT, RECEIVER_PORT

    sink = subprocess.Popen(
        wan.cmd("dc2", [sys.executable, "-c", SINK, str(RECEIVER_PORT)]), stdout=subprocess.PIPE, text=True
    )
    try:
        assert sink.stdout is not None
        assert sink.stdout.readline().strip() == "ready"
        blast = [sys.executable, "-c", BLAST, DC2_ADDR, str(PROXY_PORT), str(total)]
        subprocess.run(wan.cmd("dc1", blast), check=True, timeout=600)
        line = sink.stdout.readline().split()
        sink.wait(30)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait(5)
    n, n0, first, last = int(line[0]), int(line[1]), float(line[2]), float(line[3])
    return (n - n0) * 8 / (last - first)


def _compression_available() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "shipper", "--help"], capture_output=True, text=True, cwd=ROOT, check=False
    ).stdout
    return "--compress" in out


def run(opts: Options) -> Result:
    result = Result("wan", TITLE)
    try:
        from logship.config import parse_rate
        from tests.wan.lab import Wan, parse_duration, unavailable_reason
        from tests.wan.ship import ship
    except ImportError as e:
        result.note(f"not run: scripts/wan is not available in this tree ({e})")
        result.target(">= 0.9 x the link rate without compression", None, "not run")
        return result
    reason = unavailable_reason()
    if reason:
        result.note(f"not run: {reason}")
        result.target(">= 0.9 x the link rate without compression", None, f"not run: {reason}")
        return result
    size = 24 * MIB if opts.quick else 192 * MIB
    wan = Wan(f"b{os.getpid()}-", parse_rate(RATE) * 8, parse_duration(RTT))
    wan.up()
    try:
        print("  baseline: raw TCP through the same link and proxy", flush=True)
        raw = _blast(wan, size)
        figures = {}
        variants = [("plain", None)]
        compress = _compression_available()
        if compress:
            variants.append(("zstd", "zstd"))
        for label, comp in variants:
            print(f"  logship, {label}", flush=True)
            work = fresh_dir(opts.work / label)
            args = argparse.Namespace(
                size=str(size),
                segment_size=str(16 * MIB if not opts.quick else 4 * MIB),
                data="log",
                compress=comp,
                rate_limit=None,
                shipper_args="",
                timeout=600,
            )
            start = time.monotonic()
            figures[label] = ship(wan, work, args)
            print(f"    {figures[label]} ({time.monotonic() - start:.0f} s)", flush=True)
    finally:
        wan.down()
    link = wan.rate_bps
    plain = figures["plain"]["mbit_per_s"] * 1e6  # type: ignore[operator]
    result.figure("link", f"tbf {RATE} each way, delay proxy {RTT} round trip (scripts/wan)")
    result.figure("data", f"{size // MIB} MiB of scripts/loadgen log text, one stream, one connection")
    result.figure("raw TCP through the same link (baseline)", f"{raw / 1e6:.1f} Mbit/s = {raw / link:.3f} x nominal")
    result.figure("logship without compression", f"{plain / 1e6:.1f} Mbit/s")
    result.figure("logship / raw TCP", f"{plain / raw:.3f} x")
    result.figure("logship / nominal link rate", f"{plain / link:.3f} x")
    result.target(
        ">= 0.9 x the link rate without compression", plain / raw >= 0.9, f"{plain / raw:.3f} x the measured link"
    )
    if "zstd" in figures:
        z = figures["zstd"]["mbit_per_s"] * 1e6  # type: ignore[operator]
        result.figure("logship with --compress zstd (effective, uncompressed bytes)", f"{z / 1e6:.1f} Mbit/s")
        result.figure("gain from compression", f"{z / plain:.2f} x")
        result.target("report the gain with compression", None, f"{z / plain:.2f} x ({z / raw:.2f} x the link)")
    else:
        result.target("report the gain with compression", None, "not measured: no --compress in this shipper")
        result.note("Compression was not measured: this tree's shipper has no --compress option yet.")
    for note in __doc__.split("\n\n")[1:]:
        result.note(" ".join(note.split()))
    return result
