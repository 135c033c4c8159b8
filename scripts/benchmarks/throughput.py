"""Benchmark 1: durable throughput on loopback, source to sealed copy (and to replica/), in the default
configuration and with replay deferred, against cp -r + sync, cp -r + sync FILES, dd oflag=direct and rsync -a."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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
    wait_until,
    write_random_segments,
)
from benchmarks.mac_cost import MAC_CHUNK, MacCost, hash_alone, hash_beside_busy, mac_cost

TITLE = "Durable throughput on loopback (source to sealed copy)"
SEGMENT = 16 * MIB

# With --replay-lag 24h the receiver's replay stage (inspection, then replica/) does not run during the
# measurement: the copy path alone. The default configuration replays at once and is the figure.
DEFER_REPLAY = ["--replay-lag", "24h"]


def _digest(path: os.PathLike[str] | str) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(4 * MIB):
            h.update(block)
    return h.hexdigest()


def _timed_cpu(cmd: str) -> tuple[float, float]:
    """Run the shell command ``cmd``; return its wall seconds and the CPU seconds of its processes."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


class Hook(Protocol):
    """Something attached to the daemons for one run (scripts/benchmarks/profile.py: a profiler)."""

    def start(self, shipper: int, receiver: int) -> None:
        """Called with the daemons' pids once the shipper is attached, before the first segment."""

    def stop(self) -> None:
        """Called when the last segment arrived, before the daemons stop."""


@dataclass
class Run:
    to_log: float
    """Seconds from the first rename into the source to the last segment in the copy's log/."""
    to_replica: float | None
    """... to the last segment in replica/ (default configuration only)."""
    shipper_cpu: tuple[float, float]
    receiver_cpu: tuple[float, float]
    """(user, system) seconds, up to the end of the run (the replica's last segment where replayed)."""


def _logship_once(
    opts: Options, stage: Path, names: list[str], run: int, receiver_args: list[str], hook: Hook | None = None
) -> Run:
    """Ship every segment of ``stage`` once, with the receiver given ``receiver_args``."""
    work = fresh_dir(opts.work / f"logship-{run}")
    src = fresh_dir(work / "src")
    secret = make_secret(work / "secret")
    extra = [*receiver_args, *os.environ.get("BENCH_RECEIVER_ARGS", "").split()]
    receiver, port = start_receiver(work, secret, extra=extra)
    # (ab.py passes extra receiver arguments through the environment: a deferred replay may come from there.)
    replay = DEFER_REPLAY[0] not in extra
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
        replica = work / "receiver" / "tp" / "replica"
        last, last_replica = log_dir / names[-1], replica / names[-1]
        sp, rp = psutil.Process(shipper.pid), psutil.Process(receiver.pid)
        if hook is not None:
            hook.start(shipper.pid, receiver.pid)
        cpu0 = sp.cpu_times(), rp.cpu_times()
        start = time.perf_counter()
        # The segments appear in the source directory the way an archiver fills it: by rename, whole.
        for name in names:
            os.rename(stage / name, src / name)
        wait_until(last.exists, 600, interval=0.002, what="the last segment to be sealed in log/")
        to_log = time.perf_counter() - start
        to_replica = None
        if replay:
            wait_until(last_replica.exists, 600, interval=0.002, what="the last segment to be replayed")
            to_replica = time.perf_counter() - start
        s1, r1 = sp.cpu_times(), rp.cpu_times()
        if hook is not None:
            hook.stop()
        s_cpu = (s1.user - cpu0[0].user, s1.system - cpu0[0].system)
        r_cpu = (r1.user - cpu0[1].user, r1.system - cpu0[1].system)
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
        if replay and _digest(stage / name) != _digest(replica / name):
            raise AssertionError(f"replica of {name} differs from the source")
    if sorted(os.listdir(log_dir)) != sorted(names):
        raise AssertionError("log/ does not hold exactly the source segments")
    shutil.rmtree(work)
    return Run(to_log, to_replica, s_cpu, r_cpu)


def _with_shipper_args(opts: Options, stage: Path, names: list[str], run: int, args: str) -> Run:
    """Ship the segments once in the default configuration with ``args`` added to the shipper's."""
    before = os.environ.get("BENCH_SHIPPER_ARGS", "")
    os.environ["BENCH_SHIPPER_ARGS"] = f"{before} {args}"
    try:
        return _logship_once(opts, stage, names, run, [])
    finally:
        os.environ["BENCH_SHIPPER_ARGS"] = before


def _with_payload_mac(opts: Options, stage: Path, names: list[str], run: int) -> Run:
    """Ship the segments once in the default configuration with the payload MAC on (``--payload-mac``)."""
    return _with_shipper_args(opts, stage, names, run, "--payload-mac")


def _paced_like(opts: Options, stage: Path, names: list[str], run: int, total: int, like: Run) -> Run:
    """Ship the segments once in the default configuration, without the payload MAC, at the pace the
    run ``like`` had (``--rate-limit``: its bytes over its time to log/).

    Why: CPU per GiB depends on the pace, not only on the work. A run that takes longer pays the
    pipeline's per-batch and per-wake-up costs more often (one run paced at the payload MAC run's
    0.56 GB/s: receiver 1.25 s/GiB against 0.73 at full speed, fdatasync and context switches per GiB
    up 2-3x). The MAC's extra CPU over a full-speed run charges it with that too; over a run at its own
    pace, only with its own work."""
    return _with_shipper_args(opts, stage, names, run, f"--rate-limit {int(total / like.to_log)}")


def _cpu_per_gib(runs: list[Run], gib: float) -> tuple[float, float, float, float]:
    """Medians per GiB: shipper user, shipper system, receiver user, receiver system."""
    return (
        median([r.shipper_cpu[0] for r in runs]) / gib,
        median([r.shipper_cpu[1] for r in runs]) / gib,
        median([r.receiver_cpu[0] for r in runs]) / gib,
        median([r.receiver_cpu[1] for r in runs]) / gib,
    )


def run(opts: Options) -> Result:
    result = Result("throughput", TITLE)
    total = 64 * MIB if opts.quick else 1024 * MIB
    count = total // SEGMENT
    stage = opts.work / "stage"
    print(f"  generating {count} segments of {SEGMENT // MIB} MiB of incompressible bytes", flush=True)
    write_random_segments(stage, count, SEGMENT)
    names = [segment_name(i) for i in range(1, count + 1)]
    dst = opts.work / "dst"
    files = " ".join(str(dst / n) for n in names)
    srcs = " ".join(str(stage / n) for n in names)
    baselines = {
        # sync with file arguments fsyncs exactly those files (and the directory), one after the other.
        "cp -r + sync FILES": f"cp -r {stage} {dst} && sync {files} {dst}",
        # a plain sync flushes the whole machine (other writers count against it) but lets the kernel
        # write everything at once.
        "cp -r + sync": f"cp -r {stage} {dst} && sync",
        # the device itself: one stream of O_DIRECT writes, no page cache, one fsync at the end.
        "dd oflag=direct": f"mkdir {dst} && cat {srcs} | dd of={dst}/all bs=16M iflag=fullblock oflag=direct "
        "conv=fsync status=none",
        "rsync -a (no fsync)": f"rsync -a {stage}/ {dst}/",
    }
    walls: dict[str, list[float]] = {k: [] for k in baselines}
    cpus: dict[str, list[float]] = {k: [] for k in baselines}
    default_runs: list[Run] = []
    deferred_runs: list[Run] = []
    mac_runs: list[Run] = []
    paced_runs: list[Run] = []
    hashes: list[tuple[float, float, float]] = []
    hash_busy: list[float] = []
    codec: MacCost | None = None
    for i in range(opts.repeat):
        parts = []
        for label, cmd in baselines.items():
            shutil.rmtree(dst, ignore_errors=True)
            wall, cpu = _timed_cpu(cmd)
            walls[label].append(wall)
            cpus[label].append(cpu)
            parts.append(f"{label} {gbps(total, wall)}")
        shutil.rmtree(dst, ignore_errors=True)
        d = _logship_once(opts, stage, names, 2 * i, [])
        default_runs.append(d)
        f = _logship_once(opts, stage, names, 2 * i + 1, DEFER_REPLAY)
        deferred_runs.append(f)
        # Target 5: the payload MAC's cost against its hash alone, both measured in this round.
        mac_runs.append(_with_payload_mac(opts, stage, names, 1000 + i))
        paced_runs.append(_paced_like(opts, stage, names, 2000 + i, total, mac_runs[-1]))
        hashes.append(hash_alone(total))
        hash_busy.append(hash_beside_busy(total))
        # The MAC's own cost in each side's DATA codec path, in this process: the daemons have stopped.
        cost = mac_cost(256 if opts.quick else 512, 5)
        codec = cost if codec is None else codec + cost
        assert d.to_replica is not None
        print(
            f"  run {i + 1}: {', '.join(parts)}; logship default {gbps(total, d.to_log)} to log/, "
            f"{gbps(total, d.to_replica)} to replica/ (CPU s: shipper {sum(d.shipper_cpu):.2f}, receiver "
            f"{sum(d.receiver_cpu):.2f}); replay deferred {gbps(total, f.to_log)} (CPU s: shipper "
            f"{sum(f.shipper_cpu):.2f}, receiver {sum(f.receiver_cpu):.2f}); payload MAC on: CPU s shipper "
            f"{sum(mac_runs[-1].shipper_cpu):.2f}, receiver {sum(mac_runs[-1].receiver_cpu):.2f}; without it at that "
            f"pace {gbps(total, paced_runs[-1].to_log)}: CPU s shipper {sum(paced_runs[-1].shipper_cpu):.2f}, "
            f"receiver {sum(paced_runs[-1].receiver_cpu):.2f}; GMAC alone {hashes[-1][0]:.2f} "
            f"(other core busy {hash_busy[-1]:.2f}), HMAC-SHA256 alone {hashes[-1][1]:.2f}; in process, "
            f"MAC on - off per GiB of DATA: shipper {cost.shipper:.3f}, receiver {cost.receiver:.3f}, "
            f"GMAC over the same bytes {median(cost.gmac):.3f}",
            flush=True,
        )
    shutil.rmtree(dst, ignore_errors=True)
    shutil.rmtree(stage, ignore_errors=True)
    gib = total / (1 << 30)
    med = {k: median(v) for k, v in walls.items()}
    to_log = median([r.to_log for r in default_runs])
    to_replica = median([r.to_replica or 0.0 for r in default_runs])
    deferred = median([r.to_log for r in deferred_runs])
    result.figure("data", f"{count} segments x {SEGMENT // MIB} MiB = {total // MIB} MiB, incompressible")
    result.figure(
        "runs",
        f"{opts.repeat}, interleaved (medians shown; every run, default configuration to log/: "
        f"{', '.join(gbps(total, r.to_log) for r in default_runs)})",
    )
    result.figure(
        "logship, default configuration, source to last segment in log/", f"{gbps(total, to_log)} ({to_log:.2f} s)"
    )
    result.figure(
        "logship, default configuration, source to last segment in replica/",
        f"{gbps(total, to_replica)} ({to_replica:.2f} s)",
    )
    result.figure("logship, replay deferred (--replay-lag 24h), to log/", f"{gbps(total, deferred)} ({deferred:.2f} s)")
    for label in baselines:
        result.figure(f"{label} (baseline)", f"{gbps(total, med[label])} ({med[label]:.2f} s)")
    su, ss, ru, rs = _cpu_per_gib(default_runs, gib)
    cpu_default = su + ss + ru + rs
    result.figure(
        "CPU per GiB, default configuration (median)",
        f"{cpu_default:.2f} s: shipper {su + ss:.2f} (user {su:.2f}, system {ss:.2f}), "
        f"receiver {ru + rs:.2f} (user {ru:.2f}, system {rs:.2f})",
    )
    su, ss, ru, rs = _cpu_per_gib(deferred_runs, gib)
    result.figure(
        "CPU per GiB, replay deferred (median)",
        f"{su + ss + ru + rs:.2f} s: shipper {su + ss:.2f}, receiver {ru + rs:.2f}",
    )
    for label in ("cp -r + sync FILES", "cp -r + sync", "dd oflag=direct"):
        result.figure(f"CPU per GiB, {label} (its own processes)", f"{median(cpus[label]) / gib:.2f} s")
    d_su, d_ss, d_ru, d_rs = _cpu_per_gib(default_runs, gib)
    m_su, m_ss, m_ru, m_rs = _cpu_per_gib(mac_runs, gib)
    extra_shipper, extra_receiver = m_su + m_ss - d_su - d_ss, m_ru + m_rs - d_ru - d_rs
    p_su, p_ss, p_ru, p_rs = _cpu_per_gib(paced_runs, gib)
    paced_shipper, paced_receiver = m_su + m_ss - p_su - p_ss, m_ru + m_rs - p_ru - p_rs
    gmac_alone = median([h[0] for h in hashes]) / gib
    hmac_alone = median([h[1] for h in hashes]) / gib
    blake_alone = median([h[2] for h in hashes]) / gib
    gmac_busy = median(hash_busy) / gib
    mac_to_log = median([r.to_log for r in mac_runs])
    paced_to_log = median([r.to_log for r in paced_runs])
    result.figure(
        "payload MAC (--payload-mac), default configuration",
        f"{gbps(total, mac_to_log)} to log/ ({mac_to_log:.2f} s); CPU per GiB {m_su + m_ss + m_ru + m_rs:.2f} s: "
        f"shipper {extra_shipper:+.2f}, receiver {extra_receiver:+.2f} over the run without it",
    )
    result.figure(
        "default configuration without the MAC, paced to the MAC run's throughput (--rate-limit)",
        f"{gbps(total, paced_to_log)} to log/ ({paced_to_log:.2f} s); CPU per GiB {p_su + p_ss + p_ru + p_rs:.2f} s "
        f"(shipper {p_su + p_ss:.2f}, receiver {p_ru + p_rs:.2f}): the MAC run is shipper {paced_shipper:+.2f}, "
        f"receiver {paced_receiver:+.2f} over it",
    )
    result.figure(
        "payload MAC's hash alone, one core (same rounds)",
        f"GMAC (AES-256-GCM, negotiated) {gmac_alone:.3f} s per GiB ({gmac_busy:.3f} with the other core busy "
        f"hashing too); HMAC-SHA256 (peers without pmac-gmac) {hmac_alone:.2f}; keyed BLAKE2b {blake_alone:.2f} "
        "(comparison only)",
    )
    assert codec is not None
    gmac_same = median(codec.gmac)
    result.figure(
        f"payload MAC's own cost in the codec path, in process ({MAC_CHUNK >> 20} MiB DATA frames, MAC on - off)",
        f"shipper seal {codec.side(codec.seal_on, codec.seal_off)}; receiver open "
        f"{codec.side(codec.open_on, codec.open_off)}; GMAC alone over the same bytes {gmac_same:.3f} s/GiB",
    )
    codec_ratio = max(codec.shipper_ratio, codec.receiver_ratio)
    mac_ratio = max(extra_shipper, extra_receiver) / gmac_same
    paced_ratio = max(paced_shipper, paced_receiver) / gmac_same
    best_cp = min(med["cp -r + sync"], med["cp -r + sync FILES"])
    ratio = best_cp / to_log
    result.figure("default configuration / the faster cp", f"{ratio:.2f} x")
    result.figure("default configuration to replica/ / the faster cp", f"{best_cp / to_replica:.2f} x")
    result.figure("default configuration / dd oflag=direct (the device)", f"{med['dd oflag=direct'] / to_log:.2f} x")
    result.target(">= 0.8 x the faster of cp -r + sync and cp -r + sync FILES", ratio >= 0.8, f"{ratio:.2f} x")
    result.target("CPU per GiB, shipper + receiver, <= 1.0 s", cpu_default <= 1.0, f"{cpu_default:.2f} s")
    result.figure(
        "whole daemons: payload MAC's extra CPU / GMAC over the same bytes, over the full-speed run (upper bound), "
        "over the run at its pace (lower bound); each within about +-0.1 s/GiB of noise",
        f"{mac_ratio:.2f} x, {paced_ratio:.2f} x",
    )
    result.target(
        "payload MAC costs at most its hash's time (each side's codec path, MAC on - off, / GMAC over the same bytes)",
        codec_ratio <= 1.0,
        f"{codec_ratio:.2f} x (shipper {codec.shipper_ratio:.2f} x, receiver {codec.receiver_ratio:.2f} x, GMAC "
        f"{gmac_same:.3f} s/GiB; whole daemons {mac_ratio:.2f} x at full speed, {paced_ratio:.2f} x paced: shipper "
        f"{extra_shipper:+.2f}, receiver {extra_receiver:+.2f} s/GiB at full speed)",
    )
    result.note(
        "logship: receiver and shipper already running and connected on 127.0.0.1; the clock starts when the "
        "segments are renamed into the shipper's source directory and stops when the last one appears in the "
        "receiver's log/ (every chunk xxh3_64-verified and fdatasynced, every segment xxh3_128-verified, renamed, "
        "directory fsynced). The default configuration replays each segment into replica/ as soon as it is "
        "installed (inspection, then replica/); its time to the last segment in replica/ is shown too, and its CPU "
        "is counted up to then. Process start-up is not counted; for the baselines it is (a few ms). Each run "
        "measures every baseline and both logship configurations back to back, so the ratios compare figures "
        "taken within seconds of each other on this shared machine."
    )
    result.note(
        "Payload MAC (target 5), three measures. (1) In process, after each round's daemons stopped "
        "(scripts/benchmarks/mac_cost.py): the code each daemon runs per 4 MiB DATA frame, MAC on and off over the "
        "same bytes (shipper: segment hasher, chunk digest, encode + seal, the socket's copy as a memcpy; receiver: "
        "the socket's copy into the pooled buffer, decode + tag and MAC check, the ingest's two digests), 5 "
        "interleaved repetitions a round, pooled over the rounds; on - off, per repetition, over GMAC alone over "
        "the same payloads in the same repetition. This is the target's figure: it resolves a few ms per GiB, but "
        "leaves out what a whole run adds around the codec. (2) Whole daemons: each round ships the same bytes "
        "with `--payload-mac`, and once more without it at the MAC run's own throughput (`--rate-limit`). CPU per "
        "GiB grows as a run slows (more group commits, ACKs and wake-ups per GiB): the full-speed comparison "
        "charges the MAC with that too (an upper bound), the paced one does not and its receiver idles between "
        "chunks where the MAC run's hashes (a lower bound). Both are differences of whole-process CPU, whose noise "
        "between runs of one tree (about 0.1 s/GiB per side) is as large as the hash itself. (3) The hash alone on "
        "one core over one 1 MiB payload (and again beside a busy core), with HMAC-SHA256 (peers without "
        "pmac-gmac) and keyed BLAKE2b for comparison."
    )
    result.note(
        "Baselines: `cp -r SRC DST && sync DST/* DST` (fsync of exactly the copied files, one after the other); "
        "`cp -r SRC DST && sync` (one sync of the whole machine); `cat SRC/* | dd of=DST/all bs=16M oflag=direct "
        "conv=fsync` (the device: no page cache); `rsync -a` (no fsync at all). All read the source from the page "
        "cache (it was just written) and write to the same filesystem. Their CPU is that of their own processes "
        "(writeback done by kernel threads is not counted, for them or for logship)."
    )
    return result
