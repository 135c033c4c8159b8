"""6. ``wait``: what waiting for durability costs on top of the ACK.

One receiver process; the shipper runs in this process (``shipper.daemon.Shipper`` on uvloop), so that
an application's ``await shipper.wait_durable(...)`` can be timed beside the ACK it waits for. 4 KiB
appends at 1000/s (absolute schedule, each from the event loop, like an application logging a commit),
each followed by its own ``wait_durable(segment, offset)`` task: append -> ACK is when the shipper
processed the first ACK covering the append (the senders' progress hook, the same moment that wakes the
waiters); append -> wait returned is when the awaiting task resumed. Then the CLI: appends one after
another, each followed by ``python -m shipper wait --offset`` as a subprocess; its process start-up is
timed apart, as a wait for bytes already durable.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import uvloop

from benchmarks.common import ROOT, Options, Result, fresh_dir, make_secret, percentile, segment_name, start_receiver
from benchmarks.wait_pg import commits_per_second
from shipper.config import from_doc
from shipper.daemon import Shipper
from shipper.state import StateDir

RATE = 1000
APPEND = 4096


def run(opts: Options) -> Result:
    result = Result("wait", "wait: append -> durable at the required targets, beside append -> ACK")
    work = fresh_dir(opts.work)
    secret = make_secret(work / "secret")
    seconds = 3 if opts.quick else 20
    cli_count = 10 if opts.quick else 100
    receiver, port = start_receiver(work, secret)
    try:
        figures = uvloop.run(_measure(work, secret, port, seconds, cli_count))
    finally:
        receiver.stop()
    acks, waits, cli, startup, count, span = figures
    a50, a99, w50, w99 = (percentile(v, p) for v, p in ((acks, 50), (acks, 99), (waits, 50), (waits, 99)))
    result.figure("appends", f"{count} x {APPEND} B in {span:.1f} s ({count / span:.0f}/s), each awaited")
    result.figure("append -> ACK processed by the shipper, p50 / p99", f"{a50 * 1e3:.2f} ms / {a99 * 1e3:.2f} ms")
    result.figure("append -> wait_durable() returned, p50 / p99", f"{w50 * 1e3:.2f} ms / {w99 * 1e3:.2f} ms")
    added = [w - a for w, a in zip(waits, acks, strict=True)]
    added.sort()
    d50, d99 = percentile(added, 50), percentile(added, 99)
    result.figure("added by the Python call over its ACK, p50 / p99", f"{d50 * 1e3:.3f} ms / {d99 * 1e3:.3f} ms")
    result.target("the Python call adds <= 0.5 ms p50 to the ACK", d50 <= 0.0005, f"{d50 * 1e3:.3f} ms")
    c50, c99, s50 = percentile(cli, 50), percentile(cli, 99), percentile(startup, 50)
    result.figure(
        f"CLI: append -> `python -m shipper wait --offset` exited ({len(cli)}, one after another), p50 / p99",
        f"{c50 * 1e3:.1f} ms / {c99 * 1e3:.1f} ms",
    )
    result.figure("CLI start-up (a wait for bytes already durable), p50", f"{s50 * 1e3:.1f} ms")
    pg_rows, why = commits_per_second(5 if opts.quick else 20)
    for what, value in pg_rows:
        result.figure(what, value)
    if why is not None:
        result.note(f"PostgreSQL figure skipped: {why}")
    result.note(
        "Shipper in the benchmark's own process (uvloop), receiver a separate process on 127.0.0.1; the ACK time "
        "is taken where the shipper handles the ACK, so the network and the receiver's fdatasync are in both "
        "figures and the difference is the waiter alone (wake-up, policy check, task resumption). The machine "
        "is shared: figures are indicative."
    )
    result.note(
        "PostgreSQL: pgbench -c 1 with a one-INSERT script, archive_timeout 1 s, 1 MiB WAL segments; the same "
        "cluster, shipper and receiver, first with the recipe's plain atomic archive_command, then with the one "
        "that also waits (--sealed --timeout 60) until the receiver holds each file. Commits do not wait for the "
        "archiver, so the two should be close; the figure shows what the archiver's extra work costs them."
    )
    return result


async def _measure(
    work: Path, secret: Path, port: int, seconds: int, cli_count: int
) -> tuple[list[float], list[float], list[float], list[float], int, float]:
    source = fresh_dir(work / "src")
    state = work / "state"
    doc = {"name": "bench", "source": str(source), "secret_file": str(secret)}
    config = from_doc(
        {"node": "bench", "state_dir": str(state), "stream": [{**doc, "target": [{"address": f"127.0.0.1:{port}"}]}]}
    )
    state_dir = StateDir(state)
    state_dir.create()
    shipper = Shipper(config, state_dir)
    service = shipper.services["bench"]
    sender = service.senders[0]
    segment = segment_name(1)
    path = source / segment
    path.write_bytes(b"")
    acked_at: list[tuple[float, int]] = []
    previous = sender.on_progress

    def progress() -> None:
        acked_at.append((time.perf_counter(), sender.stats.acked.offset))
        if previous is not None:
            previous()

    sender.on_progress = progress
    stop = asyncio.Event()
    from logship.daemon import Surfaces

    surfaces = Surfaces("shipper")
    await surfaces.open_control(state_dir.control_socket, shipper.control, required=True)
    running = asyncio.create_task(service.run(stop))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        async with asyncio.timeout(60):
            while not sender.stats.known:  # noqa: ASYNC110 - no event tells; bounded by the timeout
                await asyncio.sleep(0.05)
        count = seconds * RATE
        appended: list[float] = []
        returned: list[float] = [0.0] * count
        tasks = []
        block = os.urandom(APPEND)

        async def waiter(i: int) -> None:
            result = await shipper.wait_durable("bench", segment, (i + 1) * APPEND, timeout=60)
            returned[i] = time.perf_counter()
            assert result["outcome"] == "satisfied", result

        start = time.perf_counter()
        for i in range(count):
            delay = start + i / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            appended.append(time.perf_counter())
            os.write(fd, block)
            service.tailer.notify()  # what inotify does a moment later; the lag benchmark has that path
            tasks.append(asyncio.create_task(waiter(i)))
        await asyncio.gather(*tasks)
        span = appended[-1] - appended[0]
        acks, waits = [], []
        j = 0
        for i, t in enumerate(appended):
            end = (i + 1) * APPEND
            while acked_at[j][1] < end or acked_at[j][0] < t:
                j += 1
            acks.append(acked_at[j][0] - t)
            waits.append(returned[i] - t)
        cli, startup = await _cli(state, fd, block, segment, cli_count, count * APPEND)
        return sorted(acks), sorted(waits), sorted(cli), sorted(startup), count, span
    finally:
        os.close(fd)
        stop.set()
        await running
        await surfaces.close()
        state_dir.unlock()


async def _cli(
    state: Path, fd: int, block: bytes, segment: str, count: int, size: int
) -> tuple[list[float], list[float]]:
    argv = [sys.executable, "-m", "shipper", "wait", "--state-dir", str(state), "--stream", "bench"]
    argv += ["--segment", segment, "--timeout", "60", "--offset"]
    cli, startup = [], []
    for _ in range(count):
        t = time.perf_counter()
        os.write(fd, block)
        size += len(block)
        proc = await asyncio.create_subprocess_exec(*argv, str(size), cwd=ROOT, stdout=asyncio.subprocess.DEVNULL)
        assert await proc.wait() == 0
        cli.append(time.perf_counter() - t)
        t = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(*argv, str(size), cwd=ROOT, stdout=asyncio.subprocess.DEVNULL)
        assert await proc.wait() == 0
        startup.append(time.perf_counter() - t)
    return cli, startup
