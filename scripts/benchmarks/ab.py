"""A/B runs of the throughput benchmark: the same data shipped by two source trees, interleaved.

    git archive main | tar -x -C /tmp/A
    PYTHONPATH=scripts:. .venv/bin/python -m benchmarks.ab /tmp/A . --repeat 5 [--deferred]
    PYTHONPATH=scripts:. .venv/bin/python -m benchmarks.ab . . --b-shipper-args="--chunk-size 256KiB"

Each round runs tree A then tree B (the order alternates every round), both in the default
configuration (replay into replica/ on) or with ``--deferred`` replay; prints the medians and the ratio
B / A of each figure. Fixes are judged by this ratio, not by absolute figures on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import tests.helpers.procs as procs
from benchmarks import throughput
from benchmarks.common import MIB, Options, median, segment_name, write_random_segments


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="tree A (the baseline)")
    p.add_argument("b", type=Path, help="tree B (the change)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--mib", type=int, default=1024, help="data per run (default 1024 MiB)")
    p.add_argument("--deferred", action="store_true", help="replay deferred (--replay-lag 24h)")
    for side in ("a", "b"):
        # Options instead of a second tree: the same tree with and without a setting (chunk size,
        # --payload-mac, ...), interleaved like two trees.
        p.add_argument(f"--{side}-shipper-args", default="", help=f"extra shipper arguments for {side.upper()}")
        p.add_argument(f"--{side}-receiver-args", default="", help=f"extra receiver arguments for {side.upper()}")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="logship-ab.", dir="/var/tmp"))
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    receiver_args = throughput.DEFER_REPLAY if args.deferred else []
    try:
        count = args.mib * MIB // throughput.SEGMENT
        stage = work / "stage"
        write_random_segments(stage, count, throughput.SEGMENT)
        names = [segment_name(i) for i in range(1, count + 1)]
        opts = Options(False, work, 1, "ab", work)
        runs: dict[str, list[throughput.Run]] = {"A": [], "B": []}
        for i in range(args.repeat):
            for label in ("A", "B") if i % 2 == 0 else ("B", "A"):
                procs.ROOT = trees[label]  # the daemons run from this tree (cwd first on sys.path)
                side = label.lower()
                os.environ["BENCH_SHIPPER_ARGS"] = getattr(args, f"{side}_shipper_args")
                os.environ["BENCH_RECEIVER_ARGS"] = getattr(args, f"{side}_receiver_args")
                r = throughput._logship_once(opts, stage, names, i, receiver_args)
                runs[label].append(r)
                end = r.to_replica or r.to_log
                print(
                    f"  round {i + 1} {label}: to log/ {r.to_log:.2f} s, end {end:.2f} s, "
                    f"CPU shipper {sum(r.shipper_cpu):.2f} s, receiver {sum(r.receiver_cpu):.2f} s",
                    flush=True,
                )
        gib = count * throughput.SEGMENT / (1 << 30)
        figures = {
            "to log/ (s)": lambda r: r.to_log,
            "to the end, replica/ where replayed (s)": lambda r: r.to_replica or r.to_log,
            "shipper CPU per GiB (s)": lambda r: sum(r.shipper_cpu) / gib,
            "receiver CPU per GiB (s)": lambda r: sum(r.receiver_cpu) / gib,
            "receiver system CPU per GiB (s)": lambda r: r.receiver_cpu[1] / gib,
        }
        for what, f in figures.items():
            a, b = median([f(r) for r in runs["A"]]), median([f(r) for r in runs["B"]])
            print(f"{what}: A {a:.2f}, B {b:.2f}, B/A {b / a:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
