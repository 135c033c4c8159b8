"""Standby retention with real processes (receiver/retention.py): 200 segments through a receiver with
``--truncation-lag 2s --keep-min 5`` end with 5 in log/ and replica/, the kept ones byte-identical to the
source and their chain checking from the base; a restart resumes at the right place; activation works
afterwards; a suspended copy keeps everything; kill -9 during trimming leaves a consistent copy.

(tests/integration/test_retention.py is the shipper's retention of its source, not this.)"""

from __future__ import annotations

import json
import os
import random
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

from protocol.digest import segment_digest
from receiver.manifest import chain_problem, parse_base, parse_manifest
from tests.helpers.cli import activate, receiver_cli
from tests.helpers.procs import Proc, ReceiverProc, receiver_proc, shipper_proc
from tests.helpers.source import segment_name, write_segment
from tests.helpers.waiting import wait_until

SIZE = 20_000


def fill(source: Path, first: int, count: int, seed: int) -> None:
    rnd = random.Random(seed)
    for i in range(first, first + count):
        write_segment(source / segment_name(i), rnd.randbytes(SIZE))


def names(directory: Path) -> list[str]:
    if not directory.exists():
        return []
    return sorted(n for n in os.listdir(directory) if not n.startswith(".") and not n.endswith(".partial"))


def copy_status(data: Path) -> dict[str, Any]:
    """The stream's status row (empty before the receiver has a copy of it)."""
    done = receiver_cli("status", "--data-dir", str(data), "--json", timeout=30)
    assert done.stdout, done.stderr
    rows = json.loads(done.stdout)["copies"]
    return rows[0] if rows else {}


def assert_consistent(source: Path, copy: Path) -> tuple[int, int]:
    """Every manifest record's segment is in log/ and byte-identical to the source; nothing else is in
    log/; the chain checks from the base; replica/ holds only replayed segments, identical too.
    Return (segments, bytes) kept in log/."""
    data = (copy / "manifest").read_bytes()
    records, base = parse_manifest(data), parse_base(data)
    assert chain_problem(records, base=base) == "", chain_problem(records, base=base)
    assert names(copy / "log") == [r.name for r in records]
    for r in records:
        kept = (copy / "log" / r.name).read_bytes()
        # Recomputed from the bytes, against the source and the digest recorded at install.
        assert segment_digest(kept) == segment_digest((source / r.name).read_bytes()) == r.digest
    if base is not None and records:
        assert records[0].prev == base.after
    for name in names(copy / "replica"):
        assert (copy / "replica" / name).read_bytes() == (source / name).read_bytes()
    return len(records), sum(r.size for r in records)


def metric(port: int, name: str) -> float | None:
    """The value of logship_receiver_NAME for stream db1 at /metrics (None: absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(rf'^logship_receiver_{name}\{{stream="db1"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def test_200_segments_trimmed_to_keep_min_then_restart_and_activation(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    source = tmp_path / "primary"
    source.mkdir()
    fill(source, 1, 200, seed=1)
    receiver = receiver_proc(
        tmp_path, secret, name="standby", extra=["--truncation-lag", "2s", "--keep-min", "5", "--admin", "127.0.0.1:0"]
    )
    procs.append(receiver.start())
    admin = receiver.admin_port()
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret, ["--seal", "immediate"])
    procs.append(shipper.start())
    copy = tmp_path / "standby" / "db1"
    last = segment_name(200)
    wait_until(lambda: copy_status(tmp_path / "standby").get("last_replayed") == last, 90, what="all 200 replayed")
    replayed_at = time.monotonic()
    # While the lag runs, at most keep_min + what the lag covers is kept; once past it, keep_min exactly.
    during = len(names(copy / "log"))
    assert 5 <= during <= 200
    wait_until(lambda: len(names(copy / "log")) == 5, 2 + 10, what="log/ trimmed to keep_min")
    trimmed_after = time.monotonic() - replayed_at
    wait_until(lambda: len(names(copy / "replica")) == 5, 10, what="replica/ trimmed with it")
    assert names(copy / "log") == [segment_name(i) for i in range(196, 201)] == names(copy / "replica")
    kept, kept_bytes = assert_consistent(source, copy)
    row = wait_until(lambda: (r := copy_status(tmp_path / "standby"))["removed_segments"] == 195 and r, 10)
    assert (row["kept_segments"], row["kept_bytes"], row["oldest_kept"]) == (5, 5 * SIZE, segment_name(196))
    assert row["removed_bytes"] == 195 * SIZE and kept_bytes == 5 * SIZE
    # log/ and replica/ share the inodes: counted once.
    wait_until(lambda: metric(admin, "disk_bytes") == 5 * SIZE, 10, what="disk use in /metrics")
    assert metric(admin, "retention_removed_bytes_total") == 195 * SIZE
    assert metric(admin, "kept_segments") == 5
    print(
        f"figure: kept {kept} segments ({kept_bytes} bytes), removed 195 ({195 * SIZE} bytes); "
        f"log/ reached keep_min {trimmed_after:.1f}s after the last replay (lag 2s); "
        f"{during} segments in log/ right after the last replay"
    )

    # A restart after trimming resumes where the copy ends: the shipper is welcomed at 200's end, not
    # at the start, and nothing removed comes back.
    assert receiver.stop() == 0
    fill(source, 201, 10, seed=2)
    procs.append(receiver.start())
    wait_until(
        lambda: copy_status(tmp_path / "standby").get("last_replayed") == segment_name(210), 60, what="replayed after"
    )
    wait_until(lambda: names(copy / "log") == [segment_name(i) for i in range(206, 211)], 15, what="trimmed again")
    log_text = receiver.log_text()
    assert log_text.count(f"sealed {segment_name(1)} ") == 1 and log_text.count(f"sealed {segment_name(200)} ") == 1
    assert "diverged" not in log_text and "chain is broken" not in log_text
    assert "Failed" not in copy_status(tmp_path / "standby")["state"]
    assert_consistent(source, copy)

    # Activation of the trimmed copy: nothing acknowledged is missing, the replica holds the tail.
    shipper.stop()
    rc, report = activate(tmp_path / "standby", "db1", "--yes")
    assert rc == 0 and report["ok"] and report["missing_acknowledged"] == [], report
    assert report["last_replayed"] == segment_name(210)
    # An activated copy keeps everything from now on: the new primary's replica is not trimmed.
    before = names(copy / "replica")
    time.sleep(3)
    assert names(copy / "replica") == before


def test_a_suspended_copy_keeps_everything(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source = tmp_path / "primary"
    source.mkdir()
    fill(source, 1, 30, seed=3)
    receiver = receiver_proc(tmp_path, secret, name="standby", extra=["--truncation-lag", "5s", "--keep-min", "2"])
    procs.append(receiver.start())
    procs.append(shipper_proc(tmp_path, "db1", source, [receiver], secret, ["--seal", "immediate"]).start())
    data, copy = tmp_path / "standby", tmp_path / "standby" / "db1"
    wait_until(lambda: copy_status(data).get("last_replayed") == segment_name(30), 30, what="all replayed")
    # Within the 5s lag: suspend. Nothing may go while it is suspended, long past the lag.
    assert receiver_cli("suspend", "--data-dir", str(data), "--stream", "db1", "--comment", "looking").returncode == 0
    assert len(names(copy / "log")) == 30, "trimmed before the lag"
    time.sleep(7)
    assert len(names(copy / "log")) == 30 and len(names(copy / "replica")) == 30
    assert copy_status(data)["removed_segments"] == 0
    # Resumed, it trims at once (the lag has long passed).
    assert receiver_cli("resume", "--data-dir", str(data), "--stream", "db1").returncode == 0
    wait_until(lambda: len(names(copy / "log")) == 2, 10, what="trimmed after resume")
    assert assert_consistent(source, copy) == (2, 2 * SIZE)


def test_kill9_during_trimming_leaves_a_consistent_copy(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source = tmp_path / "primary"
    source.mkdir()
    receiver: ReceiverProc = receiver_proc(
        tmp_path, secret, name="standby", extra=["--truncation-lag", "0", "--keep-min", "3"]
    )
    procs.append(receiver.start())
    procs.append(shipper_proc(tmp_path, "db1", source, [receiver], secret, ["--seal", "immediate"]).start())
    data, copy = tmp_path / "standby", tmp_path / "standby" / "db1"
    rnd = random.Random(5)
    written = 0
    left_over = cut_installs = 0
    for round_ in range(4):
        # Segments arrive and are replayed and trimmed one after the other; kill -9 lands in the middle.
        fill(source, written + 1, 60, seed=10 + round_)
        # This round's segments are arriving: its fourth is in log/. (Counting log/ raced the trimming,
        # which keeps it at keep_min: a whole round could be shipped and trimmed between two looks.)
        fourth = segment_name(written + 4)
        written += 60
        wait_until(lambda f=fourth: names(copy / "log")[-1:] >= [f], 30, what=fourth)
        time.sleep(rnd.uniform(0.05, 0.6))
        receiver.kill9()
        # What the kill left: every record has its segment, but for an install cut between its record
        # and its rename (store.py writes the record first; the shipper sends the segment again), which
        # is newer than everything in log/. A segment without a record, at or before the base, is
        # retention's one allowed leftover: the next start removes it.
        raw = (copy / "manifest").read_bytes()
        records, base = parse_manifest(raw), parse_base(raw)
        assert chain_problem(records, base=base) == ""
        in_log = names(copy / "log")
        unrenamed = {r.name for r in records} - set(in_log)
        assert all(n > in_log[-1] for n in unrenamed), (unrenamed, in_log[-3:])
        cut_installs += bool(unrenamed)
        leftovers = set(names(copy / "log")) - {r.name for r in records}
        assert all(base is not None and n <= base.after for n in leftovers), (leftovers, base)
        left_over += bool(leftovers)
        procs.append(receiver.start())
    last = segment_name(written)
    wait_until(lambda: copy_status(data).get("last_replayed") == last, 60, what="all replayed after the kills")
    wait_until(lambda: len(names(copy / "log")) == 3, 15, what="trimmed to keep_min")
    assert assert_consistent(source, copy) == (3, 3 * SIZE)
    row = copy_status(data)
    assert row["removed_segments"] == written - 3, (row["removed_segments"], written)
    assert row["state"] in ("Healthy", "Disconnected", "Initializing"), row["state"]
    log_text = receiver.log_text()
    assert "diverged" not in log_text and "Failed" not in log_text
    print(
        f"figure: 4 kill -9 during trimming ({written} segments); {left_over} left segments outside the chain "
        f"(removed at the next start); {cut_installs} cut an install between its record and its rename"
    )


def test_offline_activation_of_a_replica_its_consumer_pruned(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source = tmp_path / "primary"
    source.mkdir()
    fill(source, 1, 20, seed=7)
    extra = ["--truncation-lag", "0", "--keep-min", "8", "--replica-keep", "consumer"]
    receiver = receiver_proc(tmp_path, secret, name="standby", extra=extra)
    procs.append(receiver.start())
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret, ["--seal", "immediate"])
    procs.append(shipper.start())
    data, copy = tmp_path / "standby", tmp_path / "standby" / "db1"
    wait_until(lambda: copy_status(data).get("last_replayed") == segment_name(20), 30, what="all replayed")
    wait_until(lambda: len(names(copy / "log")) == 8, 10, what="log/ trimmed")
    # The receiver left replica/ whole; the database prunes it itself (like pg_archivecleanup ... %r).
    assert len(names(copy / "replica")) == 20
    for i in range(1, 16):
        os.unlink(copy / "replica" / segment_name(i))
    shipper.stop()
    assert receiver.stop() == 0
    # Offline, the activation must be told (or read from --config) that the consumer prunes replica/.
    # Without it the report says missing (the copy is activated all the same; activating again is
    # idempotent and reports afresh).
    rc, report = activate(data, "db1", "--yes")
    assert rc != 0 and f"{segment_name(13)}: replayed but not in replica/" in report["missing_acknowledged"]
    rc, report = activate(data, "db1", "--yes", "--replica-keep", "consumer")
    assert rc == 0 and report["ok"] and report["missing_acknowledged"] == [], report
