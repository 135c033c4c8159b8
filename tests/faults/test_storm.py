"""A storm of hostile connections against a real receiver while a real shipper ships through it.

Random-byte connections, oversize length prefixes, slow drips (a byte at a time) and floods of silent
connections beyond --max-unauthenticated. The shipper keeps making progress during the storm and
converges; the receiver's memory stays bounded (RSS measured with psutil).
LOGSHIP_FAULT_STORM scales the storm (default 1; LOGSHIP_HEAVY=1: 5).
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import re
import struct
import threading
import time
from pathlib import Path

import psutil

from tests.faults.common import HEAVY, DiskChecker, FaultFigures, highest_acked, record
from tests.helpers.copies import assert_copy_converged
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.source import SourceWriter, sealed_in_source
from tests.helpers.waiting import wait_until

SCALE = int(os.environ.get("LOGSHIP_FAULT_STORM") or (5 if HEAVY else 1))
CAP = 16
MiB = 1 << 20


class Storm:
    """Hostile clients on their own event loop in a thread."""

    def __init__(self, port: int, seed: int) -> None:
        self.port = port
        self.rnd = random.Random(seed)
        self.counts: collections.Counter[str] = collections.Counter()
        self.closed_by_receiver: collections.Counter[str] = collections.Counter()

    async def _drain_until_closed(self, kind: str, r: asyncio.StreamReader, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                while await r.read(65536):
                    pass
            self.closed_by_receiver[kind] += 1
        except ConnectionError:
            self.closed_by_receiver[kind] += 1
        except TimeoutError:
            pass

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            return await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return None

    async def random_bytes(self) -> None:
        conn = await self._connect()
        if conn is None:
            return
        r, w = conn
        self.counts["random bytes"] += 1
        try:
            w.write(self.rnd.randbytes(self.rnd.randint(1, 64 * 1024)))
            await w.drain()
            await self._drain_until_closed("random bytes", r, 10)
        except ConnectionError:
            self.closed_by_receiver["random bytes"] += 1
        finally:
            w.close()

    async def oversize(self) -> None:
        conn = await self._connect()
        if conn is None:
            return
        r, w = conn
        self.counts["oversize length prefix"] += 1
        try:
            w.write(struct.pack(">I", self.rnd.choice([0xFFFFFFFF, 64 * 1024 + 1, 1 << 30])) + b"\x81" * 100)
            await w.drain()
            await self._drain_until_closed("oversize length prefix", r, 10)
        except ConnectionError:
            self.closed_by_receiver["oversize length prefix"] += 1
        finally:
            w.close()

    async def slow_drip(self) -> None:
        conn = await self._connect()
        if conn is None:
            return
        r, w = conn
        self.counts["slow drip"] += 1
        frame = struct.pack(">I", 200) + b"\x80" * 200
        try:
            for b in frame[:40]:
                if r.at_eof():
                    break
                w.write(bytes([b]))
                await w.drain()
                await asyncio.sleep(0.25)
            await self._drain_until_closed("slow drip", r, 10)
        except ConnectionError:
            self.closed_by_receiver["slow drip"] += 1
        finally:
            w.close()

    async def flood(self, n: int) -> None:
        conns = [c for c in await asyncio.gather(*(self._connect() for _ in range(n))) if c is not None]
        self.counts["silent flood over the cap"] += len(conns)
        await asyncio.gather(*(self._drain_until_closed("silent flood over the cap", r, 10) for r, _ in conns))
        for _, w in conns:
            w.close()

    async def run(self) -> None:
        jobs = []
        for _ in range(SCALE):
            jobs += [self.random_bytes() for _ in range(120)]
            jobs += [self.oversize() for _ in range(60)]
            jobs += [self.slow_drip() for _ in range(25)]
            jobs += [self.flood(40) for _ in range(2)]
        self.rnd.shuffle(jobs)
        limit = asyncio.Semaphore(48)

        async def bounded(job: object) -> None:
            async with limit:
                await job  # type: ignore[misc]

        await asyncio.gather(*(bounded(j) for j in jobs))


def test_storm_of_hostile_connections(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    t0 = time.monotonic()
    source = tmp_path / "src"
    source.mkdir()
    receiver = receiver_proc(tmp_path, secret, extra=["--max-unauthenticated", str(CAP), "--handshake-timeout", "2"])
    shipper = shipper_proc(
        tmp_path, "storm", source, [receiver], secret, ["--log-level", "DEBUG", "--chunk-size", "256k"]
    )
    procs += [receiver.start(), shipper.start()]
    copy = tmp_path / "receiver" / "storm"
    disk = DiskChecker(source, copy)
    rnd = random.Random(41)
    sizes = [rnd.randint(100_000, 1_000_000) for _ in range(4000)]
    writer = SourceWriter(source, sizes, rate=2e6, seed=43).start()
    try:
        wait_until(lambda: highest_acked(shipper.log_text()) is not None, 60, what="the shipper's first ACK")
        rproc = psutil.Process(receiver.pid)
        time.sleep(1)
        rss_before = rproc.memory_info().rss
        acked_before = disk.check_acked(shipper.log_text())
        storm = Storm(receiver.port, seed=47)
        peak = rss_before
        thread = threading.Thread(target=lambda: asyncio.run(storm.run()), daemon=True)
        thread.start()
        while thread.is_alive():
            peak = max(peak, rproc.memory_info().rss)
            thread.join(0.2)
            assert time.monotonic() - t0 < 240, "the storm did not end"
        acked_after = disk.check_acked(shipper.log_text())
        rss_after = rproc.memory_info().rss
        writer.stop()
        disk.wait_converged(90, "convergence after the storm")
        total = assert_copy_converged(source, copy, sealed_in_source(source))
    finally:
        writer.stop()
    storm_seconds = time.monotonic() - t0
    # The real shipper was never stalled: its copy moved on while the storm raged.
    assert acked_after - acked_before >= MiB, (acked_before, acked_after)
    assert receiver.alive() and receiver.starts == 1
    # Memory stays bounded: generous, but far below what buffering the hostile bytes would cost.
    assert peak - rss_before < 64 * MiB, (rss_before, peak)
    assert rss_after - rss_before < 32 * MiB, (rss_before, rss_after)
    # The receiver logs the running count of refusals at powers of two: the last one is a lower bound.
    refused = max((int(m) for m in re.findall(r"refused (\d+) so far", receiver.log_text())), default=0)
    assert refused >= 1, "the cap on unauthenticated connections never refused anyone"
    notes = {
        "rss_before_mib": round(rss_before / MiB),
        "rss_peak_mib": round(peak / MiB),
        "rss_after_mib": round(rss_after / MiB),
        "shipper_progress_bytes_during_storm": acked_after - acked_before,
        "refused_at_cap_at_least": refused,
    }
    seconds = round(storm_seconds, 1)
    rows = [
        FaultFigures(f"storm: {kind}", n, total, 0, 0, seconds, {"closed_by_receiver": storm.closed_by_receiver[kind]})
        for kind, n in sorted(storm.counts.items())
    ]
    rows[0].notes.update(notes)
    record("storm", rows)
    print(f"\nfigures: {dict(storm.counts)} closed={dict(storm.closed_by_receiver)} {notes} bytes={total} s={seconds}")
    # Every kind of hostile connection was made, and the receiver closed (nearly) all of them itself.
    for kind, n in storm.counts.items():
        assert n > 0 and storm.closed_by_receiver[kind] >= n * 0.9, (kind, n, storm.closed_by_receiver[kind])
