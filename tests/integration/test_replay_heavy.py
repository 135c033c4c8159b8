"""Replay throughput against a plain copy + fsync of the same files, measured in the same run.

Heavy: runs only with LOGSHIP_HEAVY=1 (writes and replays 256 MiB by default; LOGSHIP_REPLAY_MIB).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from logship.files import fsync_dir
from protocol.digest import chunk_digest, segment_digest
from receiver.config import ReplaySettings
from receiver.copy import StreamCopy
from receiver.ops import Install, Write
from receiver.replayer import Idle
from receiver.store import SegmentStore

pytestmark = pytest.mark.skipif(os.environ.get("LOGSHIP_HEAVY") != "1", reason="heavy: set LOGSHIP_HEAVY=1")

SEGMENT = 16 << 20


def baseline_copy(src: Path, dst: Path) -> None:
    """What a careful `cp` does: copy each file, fsync it, fsync the directory."""
    dst.mkdir()
    for name in sorted(os.listdir(src)):
        with open(src / name, "rb") as f, open(dst / name, "wb") as out:
            while block := f.read(4 << 20):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        fsync_dir(dst)


async def test_replay_throughput_against_copy_and_fsync(tmp_path: Path) -> None:
    total_mib = int(os.environ.get("LOGSHIP_REPLAY_MIB", "256"))
    store = SegmentStore(tmp_path / "db1")
    copy = StreamCopy("db1", store, ReplaySettings())
    prev = ""
    data = os.urandom(SEGMENT)
    for i in range(total_mib * (1 << 20) // SEGMENT):
        name = f"E{i:010X}.log"
        records = store.apply(
            [Write(name, 0, data, chunk_digest(name, 0, data)), Install(name, SEGMENT, segment_digest(data), prev)]
        )
        copy.on_installed(records)
        prev = name
    t0 = time.perf_counter()
    assert isinstance(await copy.replayer.catch_up(), Idle)
    replay_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    baseline_copy(store.log_dir, tmp_path / "baseline")
    copy_s = time.perf_counter() - t0
    store.close_manifest()
    nbytes = len(copy.installed) * SEGMENT
    print(
        f"\nfigures: replay {nbytes / replay_s / 1e6:.0f} MB/s (inspect: re-read + xxh3_128; install: copy, fsync, "
        f"rename, fsync dir), copy+fsync baseline {nbytes / copy_s / 1e6:.0f} MB/s, ratio {copy_s / replay_s:.2f}"
    )
