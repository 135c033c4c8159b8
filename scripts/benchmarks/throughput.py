"""Benchmark 1: durable throughput on loopback, source to sealed copy, against cp -r + sync and rsync -a."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import psutil
import xxhash

from benchmarks.common import (
    MIB,
    Options,
    Result,
    fresh_dir,
    gbps,
    make_secret,
    median,
    segment_name,
    start_receiver,
    start_shipper,
    timed,
    wait_until,
    write_random_segments,
)

TITLE = "Durable throughput on loopback (source to sealed copy)"
SEGMENT = 16 * MIB


def _digest(path: os.PathLike[str] | str) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(4 * MIB):
            h.update(block)
    return h.hexdigest()


def _logship_once(
    opts: Options, stage: Path, names: list[str], run: int
) -> tuple[float, tuple[float, float], tuple[float, float]]:
    """Ship every segment of ``stage`` once; return seconds from the first rename into the source
    directory to the last segment sealed in the copy's log/, and the CPU seconds the shipper and the
    receiver used meanwhile."""
    work = fresh_dir(opts.work / f"logship-{run}")
    src = fresh_dir(work / "src")
    secret = make_secret(work / "secret")
    receiver, port = start_receiver(work, secret)
    shipper = None
    try:
        shipper = start_shipper(
            work,
            [
                "--stream", "tp", "--source", str(src), "--target", f"127.0.0.1:{port}",
                "--secret-file", str(secret), "--segment-size", str(SEGMENT),
                *os.environ.get("BENCH_SHIPPER_ARGS", "").split(),
            ],
        )  # fmt: skip
        wait_until(lambda: "tp: " in receiver.log_text() and "attached" in receiver.log_text(), 30, what="attach")
        log_dir = work / "receiver" / "tp" / "log"
        last = log_dir / names[-1]
        cpu0 = psutil.Process(shipper.pid).cpu_times(), psutil.Process(receiver.pid).cpu_times()
        start = time.perf_counter()
        # The segments appear in the source directory the way an archiver fills it: by rename, whole.
        for name in names:
            os.rename(stage / name, src / name)
        wait_until(last.exists, 600, interval=0.002, what="the last segment to be sealed in log/")
        elapsed = time.perf_counter() - start
        s1, r1 = psutil.Process(shipper.pid).cpu_times(), psutil.Process(receiver.pid).cpu_times()
        cpu = (s1.user - cpu0[0].user, s1.system - cpu0[0].system), (r1.user - cpu0[1].user, r1.system - cpu0[1].system)
    finally:
        if shipper is not None:
            shipper.stop()
        receiver.stop()
    for name in names:
        os.rename(src / name, stage / name)
    # Byte-identical, checked outside the timing (the receiver checked xxh3_128 itself already).
    for name in (names[0], names[-1]):
        if _digest(stage / name) != _digest(log_dir / name):
            raise AssertionError(f"copy of {name} differs from the source")
    if sorted(os.listdir(log_dir)) != sorted(names):
        raise AssertionError("log/ does not hold exactly the source segments")
    shutil.rmtree(work)
    return elapsed, cpu[0], cpu[1]


def run(opts: Options) -> Result:
    result = Result("throughput", TITLE)
    total = 64 * MIB if opts.quick else 1024 * MIB
    count = total // SEGMENT
    stage = opts.work / "stage"
    print(f"  generating {count} segments of {SEGMENT // MIB} MiB of incompressible bytes", flush=True)
    write_random_segments(stage, count, SEGMENT)
    names = [segment_name(i) for i in range(1, count + 1)]
    dst = opts.work / "dst"
    files = [str(dst / n) for n in names]
    cp_times, rsync_times, ls_times, ship_cpu, recv_cpu = [], [], [], [], []
    for i in range(opts.repeat):
        shutil.rmtree(dst, ignore_errors=True)
        # sync with file arguments fsyncs exactly those files (and the directory), so other writers on
        # the machine do not count against the baseline.
        cp_times.append(timed(f"cp -r {stage} {dst} && sync {' '.join(files)} {dst}", shell=True))
        shutil.rmtree(dst, ignore_errors=True)
        rsync_times.append(timed(["rsync", "-a", f"{stage}/", f"{dst}/"]))
        shutil.rmtree(dst, ignore_errors=True)
        elapsed, s_cpu, r_cpu = _logship_once(opts, stage, names, i)
        ls_times.append(elapsed)
        ship_cpu.append(s_cpu)
        recv_cpu.append(r_cpu)
        print(
            f"  run {i + 1}: cp+sync {gbps(total, cp_times[-1])}, rsync -a {gbps(total, rsync_times[-1])}, "
            f"logship {gbps(total, ls_times[-1])} (CPU user+sys s: shipper {s_cpu[0]:.2f}+{s_cpu[1]:.2f}, "
            f"receiver {r_cpu[0]:.2f}+{r_cpu[1]:.2f})",
            flush=True,
        )
    shutil.rmtree(dst, ignore_errors=True)
    shutil.rmtree(stage, ignore_errors=True)
    cp, rs, ls = median(cp_times), median(rsync_times), median(ls_times)
    result.figure("data", f"{count} segments x {SEGMENT // MIB} MiB = {total // MIB} MiB, incompressible")
    result.figure(
        "runs", f"{opts.repeat} (median shown; every run: logship {', '.join(gbps(total, t) for t in ls_times)})"
    )
    result.figure("logship, source to sealed copy in log/", f"{gbps(total, ls)} ({ls:.2f} s)")
    gib = total / (1 << 30)
    for proc, cpu in (("shipper", ship_cpu), ("receiver", recv_cpu)):
        user, system = median([c[0] for c in cpu]) / gib, median([c[1] for c in cpu]) / gib
        result.figure(
            f"CPU of the {proc} per GiB (median)", f"{user + system:.2f} s (user {user:.2f}, system {system:.2f})"
        )
    result.figure("cp -r + sync (baseline)", f"{gbps(total, cp)} ({cp:.2f} s)")
    result.figure("rsync -a (baseline)", f"{gbps(total, rs)} ({rs:.2f} s)")
    r_cp, r_rs = cp / ls, rs / ls
    result.figure("logship / cp+sync", f"{r_cp:.2f} x")
    result.figure("logship / rsync -a", f"{r_rs:.2f} x")
    result.target(">= 0.8 x cp -r + sync", r_cp >= 0.8, f"{r_cp:.2f} x")
    result.target(">= 2 x rsync -a", r_rs >= 2.0, f"{r_rs:.2f} x")
    result.note(
        "logship: receiver and shipper already running and connected on 127.0.0.1; the clock starts when the "
        "segments are renamed into the shipper's source directory and stops when the last one appears in the "
        "receiver's log/ (every chunk xxh3_64-verified and fdatasynced, every segment xxh3_128-verified, renamed, "
        "directory fsynced). Process start-up is not counted; for cp and rsync it is (a few ms)."
    )
    result.note(
        "cp+sync: `cp -r SRC DST && sync DST/* DST` (fsync of exactly the copied files). rsync: `rsync -a SRC/ DST/` "
        "(no fsync at all, so the data may still be in the page cache when it ends). All three read the source from "
        "the page cache (it was just written) and write to the same filesystem."
    )
    return result
