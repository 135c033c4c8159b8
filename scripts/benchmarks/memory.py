"""Benchmark 4: peak RSS of shipper and receiver while catching up a large backlog.

The backlog (16 MiB segments) is in the source directory before the shipper starts; the receiver's
and the shipper's RSS are sampled with psutil every 50 ms from the shipper's start until the last
segment is sealed in the copy's log/. The baseline is the RSS of an idle pair (one stream, nothing
to ship) measured in the same run.
"""

from __future__ import annotations

import os
import random
import time

from benchmarks.common import (
    GIB,
    MIB,
    Options,
    Result,
    Sampler,
    fresh_dir,
    gbps,
    make_secret,
    segment_name,
    start_receiver,
    start_shipper,
    wait_until,
)

TITLE = "Memory while catching up a backlog"
SEGMENT = 16 * MIB


def _backlog(directory: os.PathLike[str], total: int) -> list[str]:
    """Write ``total`` bytes of 16 MiB segments, each a different (incompressible) byte sequence."""
    rng = random.Random(4)
    block = rng.randbytes(SEGMENT)
    names = []
    for i in range(1, total // SEGMENT + 1):
        name = segment_name(i)
        with open(os.path.join(directory, name), "wb") as f:
            # Rotate the block per segment, so no two segments are equal.
            cut = (i * 7919 * 4096) % SEGMENT
            f.write(block[cut:])
            f.write(block[:cut])
        names.append(name)
    return names


def _pair(opts: Options, tag: str, fill: int) -> tuple[dict[str, int], float, list[tuple[float, dict[str, int]]]]:
    work = fresh_dir(opts.work / tag)
    src = fresh_dir(work / "src")
    secret = make_secret(work / "secret")
    names = _backlog(src, fill) if fill else []
    receiver, port = start_receiver(work, secret)
    shipper = None
    try:
        shipper = start_shipper(
            work,
            ["--stream", "mem", "--source", str(src), "--target", f"127.0.0.1:{port}", "--secret-file", str(secret),
             "--segment-size", str(SEGMENT)],
        )  # fmt: skip
        start = time.monotonic()
        with Sampler({"shipper": shipper.pid, "receiver": receiver.pid}) as sampler:
            if names:
                last = work / "receiver" / "mem" / "log" / names[-1]
                wait_until(last.exists, 1800, interval=0.05, what="the backlog to be copied")
            else:
                wait_until(lambda: "attached" in receiver.log_text(), 30, what="attach")
                time.sleep(3)
        elapsed = time.monotonic() - start
    finally:
        if shipper is not None:
            shipper.stop()
        receiver.stop()
    return sampler.peak_rss, elapsed, sampler.samples


def run(opts: Options) -> Result:
    result = Result("memory", TITLE)
    total = 256 * MIB if opts.quick else 4 * GIB
    idle, _, _ = _pair(opts, "idle", 0)
    print(f"  writing a backlog of {total // MIB} MiB", flush=True)
    peak, elapsed, samples = _pair(opts, "backlog", total)
    result.figure("backlog", f"{total // SEGMENT} segments x 16 MiB = {total / GIB:.2f} GiB, incompressible")
    result.figure("catch-up time", f"{elapsed:.1f} s ({gbps(total, elapsed)})")
    for proc in ("shipper", "receiver"):
        result.figure(
            f"peak RSS of the {proc}",
            f"{peak[proc] / MIB:.1f} MiB (idle pair: {idle[proc] / MIB:.1f} MiB, "
            f"{peak[proc] / max(1, idle[proc]):.2f} x)",
        )
    for proc in ("shipper", "receiver"):
        result.target(f"peak RSS of the {proc} <= 100 MiB", peak[proc] <= 100 * MIB, f"{peak[proc] / MIB:.1f} MiB")
    for note in __doc__.split("\n\n")[1:]:
        result.note(" ".join(note.split()))
    plot = _plot(opts, samples, total)
    if plot:
        result.plots.append(plot)
    return result


def _plot(opts: Options, samples: list[tuple[float, dict[str, int]]], total: int) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.5), dpi=100)
    for proc in ("shipper", "receiver"):
        pts = [(t, row[proc] / MIB) for t, row in samples if proc in row]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=proc)
    ax.axhline(100, color="red", linewidth=0.8, linestyle="--", label="target 100 MiB")
    ax.set_xlabel("seconds since the shipper started")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"logship RSS while catching up a {total / GIB:.2f} GiB backlog")
    ax.legend(loc="upper right")
    fig.tight_layout()
    name = "benchmarks-memory.png"
    fig.savefig(opts.report_dir / name)
    plt.close(fig)
    return name
