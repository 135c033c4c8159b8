"""Benchmark 5: many streams on one shipper/receiver pair: convergence, idle CPU, a busy stream's latency.

Each stream's source holds one sealed segment (64 KiB) and an active one (4 KiB). The shipper gets
them all from one --config TOML file. Converged: every copy has the sealed segment in log/ and the
active one's 4 KiB durable in incoming/. Idle CPU: user+system CPU time of each process over a quiet
window, as a share of one core. Busy-stream latency: one stream then gets a 4 KiB append every 50 ms;
each is timed from the write() until the receiver's .idx sidecar holds its record (written just
before the batch's fdatasync: this times the way to the receiver's write, not the ACK). The baseline
is the same run with one stream.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks.common import (
    Options,
    Result,
    cpu_seconds,
    fresh_dir,
    make_secret,
    median,
    percentile,
    segment_name,
    start_receiver,
    start_shipper,
    wait_until,
)

TITLE = "Scale: many streams on one shipper/receiver pair"
SEALED = 64 * 1024
ACTIVE = 4096
IDX_RECORD = 20  # bytes of a chunk record in incoming/<segment>.idx (offset u64, length u32, xxh3_64 u64);
# a small batch's record is followed by its chunk's bytes (receiver/chunk_index.py), so growth is what counts


def _write_config(path: Path, sources: list[Path], secret: Path, port: int) -> None:
    lines = ['node = "bench"', ""]
    for i, src in enumerate(sources):
        lines += [
            "[[stream]]",
            f'name = "s{i:04d}"',
            f'source = "{src}"',
            f'secret_file = "{secret}"',
            "",
            "[[stream.target]]",
            f'address = "127.0.0.1:{port}"',
            "",
        ]
    path.write_text("\n".join(lines))


def _scenario(opts: Options, streams: int, idle_seconds: float, appends: int) -> dict[str, float]:
    work = fresh_dir(opts.work / f"n{streams}")
    secret = make_secret(work / "secret")
    sources = []
    blob = os.urandom(SEALED + ACTIVE)
    for i in range(streams):
        src = work / "src" / f"s{i:04d}"
        src.mkdir(parents=True)
        (src / segment_name(1)).write_bytes(blob[:SEALED])
        (src / segment_name(2)).write_bytes(blob[SEALED:])
        sources.append(src)
    receiver, port = start_receiver(work, secret)
    shipper = None
    copies = work / "receiver"
    try:
        config = work / "shipper.toml"
        _write_config(config, sources, secret, port)
        start = time.monotonic()
        shipper = start_shipper(work, ["--config", str(config)])
        pending = {f"s{i:04d}" for i in range(streams)}

        def converged() -> bool:
            if not shipper.alive():
                raise RuntimeError(f"shipper exited: {shipper.log_text()[-2000:]}")
            for name in list(pending):
                root = copies / name
                try:
                    done = (root / "log" / segment_name(1)).stat().st_size == SEALED and (
                        root / "incoming" / f"{segment_name(2)}.idx"
                    ).stat().st_size >= IDX_RECORD
                except FileNotFoundError:
                    done = False
                if done:
                    pending.discard(name)
            return not pending

        wait_until(converged, 120 + streams * 0.3, interval=0.2, what=f"{streams} streams to converge")
        converge = time.monotonic() - start
        time.sleep(2)  # let start-up work (and its log lines) settle before measuring quiet
        cpu0 = {"shipper": cpu_seconds(shipper.pid), "receiver": cpu_seconds(receiver.pid)}
        t0 = time.monotonic()
        time.sleep(idle_seconds)
        elapsed = time.monotonic() - t0
        idle = {
            "shipper": (cpu_seconds(shipper.pid) - cpu0["shipper"]) / elapsed,
            "receiver": (cpu_seconds(receiver.pid) - cpu0["receiver"]) / elapsed,
        }
        # One stream gets busy while every other stays idle.
        busy = f"s{streams // 2:04d}"
        seg = sources[streams // 2] / segment_name(2)
        idx = copies / busy / "incoming" / f"{segment_name(2)}.idx"
        recorded = idx.stat().st_size
        latencies = []
        fd = os.open(seg, os.O_WRONLY | os.O_APPEND)
        try:
            for _ in range(appends):
                t = time.monotonic()
                os.write(fd, blob[:ACTIVE])
                deadline = t + 30
                while idx.stat().st_size < recorded + IDX_RECORD:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"append to {busy} not recorded in 30 s")
                    time.sleep(0.0002)
                latencies.append(time.monotonic() - t)
                recorded = idx.stat().st_size
                time.sleep(0.05)
        finally:
            os.close(fd)
    finally:
        if shipper is not None:
            shipper.stop()
        receiver.stop()
    lat = sorted(latencies)
    return {
        "converge": converge,
        "idle_shipper": idle["shipper"],
        "idle_receiver": idle["receiver"],
        "idle_seconds": elapsed,
        "busy_p50": median(lat),
        "busy_p99": percentile(lat, 99),
        "busy_max": lat[-1],
    }


def run(opts: Options) -> Result:
    result = Result("scale", TITLE)
    n = 100 if opts.quick else 1000
    idle_seconds = 5.0 if opts.quick else 20.0
    appends = 20 if opts.quick else 100
    print("  baseline: 1 stream", flush=True)
    one = _scenario(opts, 1, idle_seconds, appends)
    print(f"  {n} streams", flush=True)
    many = _scenario(opts, n, idle_seconds, appends)
    result.figure("streams", f"{n} (each: one sealed 64 KiB segment and an active one of 4 KiB)")
    result.figure(f"time until all {n} converged", f"{many['converge']:.1f} s (1 stream: {one['converge']:.1f} s)")
    for proc in ("shipper", "receiver"):
        result.figure(
            f"idle CPU of the {proc}, {n} idle streams",
            f"{many['idle_' + proc] * 100:.2f} % of a core (1 stream: {one['idle_' + proc] * 100:.2f} %), "
            f"over {many['idle_seconds']:.0f} s",
        )
    result.figure(
        f"busy stream append to .idx, p50 / p99 / max, {n - 1} others idle",
        f"{many['busy_p50'] * 1e3:.1f} / {many['busy_p99'] * 1e3:.1f} / {many['busy_max'] * 1e3:.1f} ms",
    )
    result.figure(
        "the same with 1 stream (baseline)",
        f"{one['busy_p50'] * 1e3:.1f} / {one['busy_p99'] * 1e3:.1f} / {one['busy_max'] * 1e3:.1f} ms",
    )
    result.figure(f"busy p50 with {n} streams / with 1", f"{many['busy_p50'] / one['busy_p50']:.2f} x")
    result.target(f"all {n} streams converge", True, f"{many['converge']:.1f} s")
    for proc in ("shipper", "receiver"):
        share = many["idle_" + proc]
        result.target(f"idle CPU of the {proc} < 5 % of a core", share < 0.05, f"{share * 100:.2f} %")
    for note in __doc__.split("\n\n")[1:]:
        result.note(" ".join(note.split()))
    return result
