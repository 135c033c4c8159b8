"""scripts/bench: run logship's benchmarks and write docs/benchmarks.md."""

from __future__ import annotations

import argparse
import importlib
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks import report
from benchmarks.common import ROOT, Options, machine, machine_load

BENCHES = {
    "throughput": "1. durable throughput and CPU per GiB on loopback, 1 GiB of 16 MiB segments, vs cp -r + sync "
    "(FILES), dd oflag=direct",
    "lag": "2. lag from a 4 KiB append (1000/s, 30 s) to the receiver's durable ACK: p50, p99, max",
    "wan": "3. throughput across scripts/wan (100 Mbit/s, 50 ms RTT) as a fraction of the raw link, +/- zstd",
    "memory": "4. peak RSS of shipper and receiver while catching up a 4 GiB backlog",
    "scale": "5. 1000 streams on one shipper/receiver pair: convergence, idle CPU, a busy stream's latency",
    "wait": "6. wait: 4 KiB appends at 1000/s each awaited (Python call, CLI) beside append -> ACK",
    "failover": "7. failover on etcd (TTL 3 s): kill -9 of the primary -> standby promoted (RTO), loss, switchover",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Run logship's benchmarks. Each prints its figures and ratios against baselines measured "
        "in the same run and writes them to docs/benchmarks.md (plots to docs/*.png).",
        epilog="benchmarks:\n" + "\n".join(f"  {k:11} {v}" for k, v in BENCHES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and short runs (a smoke test); the report then goes to a temp dir unless --report-dir",
    )
    p.add_argument("--repeat", type=int, help="repetitions of throughput measurements (default 3, quick 1)")
    p.add_argument(
        "--lag-observer",
        choices=("auto", "capture", "tap"),
        default="auto",
        help="lag: see the frames with a packet socket on lo (capture: root only, no hop in their path), "
        "through a relay in their path (tap: one extra hop each way, counted against logship), or capture "
        "where it can (auto, the default)",
    )
    p.add_argument("--kills", type=int, help="failover: kills of the primary per dial (default 3, quick 1)")
    p.add_argument("--work-dir", type=Path, help="scratch directory (default: a new one under /var/tmp)")
    p.add_argument("--report-dir", type=Path, help="where benchmarks.md/.json and plots go (default docs/)")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.names or list(BENCHES)
    command = " ".join(["scripts/bench", shlex.join(sys.argv[1:] if argv is None else argv)]).rstrip()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="logship-bench.", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    report_dir = args.report_dir or (
        Path(tempfile.gettempdir()) / "logship-bench-quick" if args.quick else ROOT / "docs"
    )
    repeat = args.repeat or (1 if args.quick else 3)
    info = machine()
    failed = []
    try:
        for name in names:
            print(f"== {name}: {BENCHES[name]}", flush=True)
            load = machine_load()
            opts = Options(
                args.quick, work / name, repeat, command, report_dir.resolve(), args.lag_observer, args.kills
            )
            opts.work.mkdir(parents=True, exist_ok=True)
            report_dir.mkdir(parents=True, exist_ok=True)
            start = time.monotonic()
            try:
                result = importlib.import_module(f"benchmarks.{name}").run(opts)
            except Exception:  # noqa: BLE001 - one failed benchmark must not hide the others' figures
                traceback.print_exc()
                print(f"FAILED: {name}", file=sys.stderr, flush=True)
                failed.append(name)
                continue
            finally:
                shutil.rmtree(opts.work, ignore_errors=True)
            meta = {
                "command": command,
                "quick": args.quick,
                "when": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                "took": time.monotonic() - start,
                "machine": info,
                "load": load,
            }
            md = report.save(report_dir, result, meta, list(BENCHES))
            print(f"  -> {md}", flush=True)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
