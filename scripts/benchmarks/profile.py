"""Profile one default-configuration copy (the throughput benchmark's run) with a tool attached to the
running daemons, so what the profile shows is what the benchmark measures.

    PYTHONPATH=scripts:. .venv/bin/python -m benchmarks.profile strace   # syscall counts and times
    PYTHONPATH=scripts:. .venv/bin/python -m benchmarks.profile perf     # perf record -g, both daemons
    PYTHONPATH=scripts:. .venv/bin/python -m benchmarks.profile py-spy   # py-spy --native, both daemons
    PYTHONPATH=scripts:. .venv/bin/python -m benchmarks.profile threads  # CPU of each thread / the wall
    PYTHONPATH=scripts:. .venv/bin/python -m benchmarks.profile counts   # syscalls, switches, faults
    ... [--tree DIR] [--mib 1024] [--deferred] [--out DIR]

The tool attaches after the shipper is connected and before the first segment is renamed into the
source, and stops when the last segment is in replica/ (or log/ with --deferred). Its output goes to
--out (default /var/tmp/logship-profile): strace-<daemon>.txt, perf-<daemon>.data (read them with
``perf report -i FILE --no-children``), py-spy-<daemon>.txt (collapsed stacks), counts-<daemon>.txt
(``perf stat`` of syscall tracepoints, context switches and page faults: counts as strace -c gives
them, without its slowdown, which changes how work batches up). perf record and strace slow the
daemons down: read shares of the profile, not the run's time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tests.helpers.procs as procs
from benchmarks import throughput
from benchmarks.common import MIB, Options, segment_name, write_random_segments

TOOLS = ("strace", "perf", "py-spy", "threads", "counts")
COUNTED = (
    "context-switches", "page-faults",
    *(f"syscalls:sys_enter_{name}" for name in (
        "read", "write", "writev", "preadv2", "pwritev2", "pread64", "pwrite64", "fdatasync", "fsync",
        "futex", "epoll_pwait", "epoll_wait", "io_uring_enter", "getpid", "sync_file_range",
    )),
)  # fmt: skip
"""What ``counts`` counts: per GiB, these are what a change of batching or of wake-ups moves."""


def _command(tool: str, pid: int, out: Path, daemon: str) -> list[str]:
    if tool == "strace":
        return ["strace", "-c", "-f", "-o", str(out / f"strace-{daemon}.txt"), "-p", str(pid)]
    if tool == "counts":
        events = ",".join(COUNTED)
        return ["perf", "stat", "-e", events, "-o", str(out / f"counts-{daemon}.txt"), "-p", str(pid)]
    if tool == "perf":
        return ["perf", "record", "-g", "-F", "999", "-o", str(out / f"perf-{daemon}.data"), "-p", str(pid)]
    # py-spy comes with the bench extras, into the venv this runs from.
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return [
        spy, "record", "--native", "--threads", "-r", "250", "-f", "raw",
        "-o", str(out / f"py-spy-{daemon}.txt"), "-p", str(pid),
    ]  # fmt: skip


def _thread_cpu(pid: int) -> dict[str, tuple[float, float]]:
    """Return, for each thread of ``pid`` by tid, its seconds on a CPU and its seconds runnable but
    waiting for one (/proc/PID/task/TID/schedstat: the wait is what other processes' load costs it)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                on_cpu, waiting, _ = f.read().split()
        except (FileNotFoundError, ValueError):
            continue
        out[tid] = (int(on_cpu) / 1e9, int(waiting) / 1e9)
    return out


class ThreadClock:
    """A throughput.Hook that reads each daemon thread's CPU at the start and the end: a thread near
    1.0 s of CPU per second of wall is a core's worth, the wall no other change moves."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.before: dict[str, dict[str, tuple[float, float]]] = {}
        self.start_wall = 0.0
        self.report: list[str] = []

    def start(self, shipper: int, receiver: int) -> None:
        self.pids = {"shipper": shipper, "receiver": receiver}
        self.before = {d: _thread_cpu(pid) for d, pid in self.pids.items()}
        self.start_wall = time.perf_counter()

    def stop(self) -> None:
        if not self.pids:
            return
        wall = time.perf_counter() - self.start_wall
        for daemon, pid in self.pids.items():
            after = _thread_cpu(pid)
            before = self.before[daemon]
            used = {
                t: (c - before.get(t, (0.0, 0.0))[0], w - before.get(t, (0.0, 0.0))[1]) for t, (c, w) in after.items()
            }
            total = sum(c for c, _ in used.values())
            busy = sorted(used.items(), key=lambda x: -x[1][0])
            parts = ", ".join(f"{t} {c:.2f} (waited {w:.2f})" for t, (c, w) in busy if c >= 0.01)
            self.report.append(
                f"{daemon}: {total:.2f} s on CPU in {wall:.2f} s wall ({total / wall:.2f} cores); "
                f"threads, s on CPU (s runnable, waiting for a CPU): {parts}"
            )
        self.pids = {}


class Attached:
    """A throughput.Hook that runs ``tool`` on both daemons; ``stop()`` ends the tools with SIGINT, which
    makes each write its report."""

    def __init__(self, tool: str, out: Path) -> None:
        self.tool = tool
        self.out = out
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, shipper: int, receiver: int) -> None:
        for daemon, pid in (("shipper", shipper), ("receiver", receiver)):
            cmd = _command(self.tool, pid, self.out, daemon)
            self.running.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # let them attach before the first segment

    def stop(self) -> None:
        for p in self.running:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.running:
            try:
                p.wait(120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.running = []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tool", choices=TOOLS)
    p.add_argument("--tree", type=Path, default=Path("."), help="source tree the daemons run from")
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--deferred", action="store_true", help="replay deferred (--replay-lag 24h)")
    p.add_argument("--out", type=Path, default=Path("/var/tmp/logship-profile"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    procs.ROOT = args.tree.resolve()
    work = Path(tempfile.mkdtemp(prefix="logship-profile.", dir="/var/tmp"))
    try:
        count = args.mib * MIB // throughput.SEGMENT
        stage = work / "stage"
        write_random_segments(stage, count, throughput.SEGMENT)
        os.sync()  # the staged bytes are not written back during the profile
        names = [segment_name(i) for i in range(1, count + 1)]
        opts = Options(False, work, 1, "profile", work)
        hook: Attached | ThreadClock = ThreadClock() if args.tool == "threads" else Attached(args.tool, args.out)
        try:
            r = throughput._logship_once(
                opts, stage, names, 0, throughput.DEFER_REPLAY if args.deferred else [], hook=hook
            )
        finally:
            hook.stop()
        gib = count * throughput.SEGMENT / (1 << 30)
        print(
            f"to log/ {r.to_log:.2f} s, end {(r.to_replica or r.to_log):.2f} s; CPU per GiB: shipper "
            f"{sum(r.shipper_cpu) / gib:.2f} (user {r.shipper_cpu[0] / gib:.2f}), receiver "
            f"{sum(r.receiver_cpu) / gib:.2f} (user {r.receiver_cpu[0] / gib:.2f}) [under {args.tool}]"
        )
        if isinstance(hook, ThreadClock):
            print("\n".join(hook.report))
        else:
            print(f"output in {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
