"""What every benchmark uses: real daemon processes, generated segments, timing, sampling, the machine."""

from __future__ import annotations

import math
import os
import platform
import random
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.helpers.procs import Proc as HarnessProc
from tests.helpers.procs import ReceiverProc
from tests.helpers.source import make_secret as make_secret
from tests.helpers.source import segment_name as segment_name
from tests.helpers.waiting import wait_until as wait_until

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass
class Options:
    """How the benchmarks run, from the command line."""

    quick: bool
    """Small sizes and short durations: a smoke test, not figures for the record."""
    work: Path
    """Scratch directory; everything the benchmarks write goes under it and is removed afterwards."""
    repeat: int
    """How many times a throughput measurement is repeated (the median is reported)."""
    command: str
    """The command line that is running, for the report."""
    report_dir: Path
    """Where benchmarks.md, benchmarks.json and the plots go (docs/ for the record)."""
    lag_observer: str = "auto"
    """How the lag benchmark sees DATA and ACK frames: ``capture`` (a packet socket on lo, root only),
    ``tap`` (a relay in their path), ``auto`` (capture where it can)."""
    kills: int | None = None
    """failover: kill -9 of the primary per dial (None: the benchmark's default)."""


@dataclass
class Result:
    """One benchmark's outcome, as printed and written to docs/benchmarks.md."""

    name: str
    title: str
    figures: list[tuple[str, str]] = field(default_factory=list)
    """(what, value) rows, in the order they should be shown."""
    targets: list[tuple[str, str, str]] = field(default_factory=list)
    """(target, "met" | "missed" | "n/a", the figure it was judged on)."""
    notes: list[str] = field(default_factory=list)
    """How it was measured, and anything a reader needs to judge the figures."""
    plots: list[str] = field(default_factory=list)
    """PNG files (relative to docs/) that belong to this benchmark."""

    def figure(self, what: str, value: str) -> None:
        self.figures.append((what, value))
        print(f"  {what}: {value}", flush=True)

    def target(self, text: str, met: bool | None, figure: str) -> None:
        status = "n/a" if met is None else ("met" if met else "missed")
        self.targets.append((text, status, figure))
        print(f"  target {text}: {status.upper()} ({figure})", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)


class Proc(HarnessProc):
    """A real ``python -m receiver|shipper`` process, started at once (the tests' wrapper)."""

    def __init__(self, module: str, args: list[str], log_path: Path) -> None:
        super().__init__(module, args, log_path)
        self.start()

    def stop(self, timeout: float = 15) -> int | None:
        return super().stop(timeout)


class Receiver(ReceiverProc):
    """The tests' receiver on 127.0.0.1 port 0, given the benchmarks' longer stop (it may hold GiBs)."""

    def stop(self, timeout: float = 15) -> int | None:
        return super().stop(timeout)


def start_receiver(
    work: Path, secret: Path, name: str = "receiver", extra: list[str] | None = None
) -> tuple[Receiver, int]:
    """Start a receiver on 127.0.0.1 (port 0: the kernel picks it, the receiver reports it); return it
    and its port."""
    data = work / name
    data.mkdir(parents=True, exist_ok=True)
    args = ["--data-dir", str(data), "--secret-file", str(secret), "--log-level", "INFO"]
    proc = Receiver(args + (extra or []), work / f"{name}.log")
    proc.start()
    return proc, proc.port


def start_shipper(work: Path, args: list[str], name: str = "shipper") -> Proc:
    return Proc("shipper", [*args, "--log-level", "WARNING"], work / f"{name}.log")


def write_random_segments(directory: Path, count: int, size: int, seed: int = 1, first: int = 1) -> list[Path]:
    """Write ``count`` segments of ``size`` incompressible (pseudo-random) bytes; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for i in range(first, first + count):
        path = directory / segment_name(i)
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, 4 * MIB)
                f.write(rng.randbytes(n))
                left -= n
        paths.append(path)
    return paths


def dir_bytes(directory: Path) -> int:
    return sum(e.stat().st_size for e in os.scandir(directory) if e.is_file())


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def timed(cmd: list[str] | str, shell: bool = False) -> float:
    """Run ``cmd`` to completion; return its wall time in seconds. Raises CalledProcessError."""
    start = time.perf_counter()
    subprocess.run(cmd, shell=shell, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


class Sampler:
    """Sample RSS and CPU time of some processes every ``interval`` seconds in a thread."""

    def __init__(self, pids: dict[str, int], interval: float = 0.05) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.interval = interval
        self.peak_rss = dict.fromkeys(pids, 0)
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            row = {}
            for name, proc in self.procs.items():
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                row[name] = rss
                self.peak_rss[name] = max(self.peak_rss[name], rss)
            self.samples.append((time.monotonic() - start, row))
            self._stop.wait(self.interval)


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def machine() -> dict[str, str]:
    """Describe the machine the figures come from."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / GIB
    fs = ""
    try:
        best = ""
        for part in psutil.disk_partitions(all=True):
            if str(ROOT).startswith(part.mountpoint) and len(part.mountpoint) > len(best):
                best, fs = part.mountpoint, f"{part.fstype} on {part.device}"
    except OSError:
        pass
    return {
        "cpu": f"{os.cpu_count()} x {model}",
        "memory": f"{mem:.0f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "filesystem": fs,
    }


def machine_load(seconds: float = 1.0) -> str:
    """How busy the machine is with everything else: load average and CPU busy over ``seconds``."""
    busy = psutil.cpu_percent(interval=seconds)
    la = os.getloadavg()
    return (
        f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}, CPU {busy:.0f} % busy over {seconds:.0f} s before the run"
    )


def gbps(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e9:.2f} GB/s"
