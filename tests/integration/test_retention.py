"""Retention on the source with real processes: a segment leaves the source only once every target
holds it durably; a stopped or fenced target holds everything after its position."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import xxhash

from tests.helpers.cli import row, shipper_cli, state_of
from tests.helpers.copies import log_names
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.source import segment_name, write_recorded
from tests.helpers.waiting import wait_until


class SourceWatch:
    """Watch the source in a thread; whenever a segment leaves it, check every copy already holds it."""

    def __init__(self, source: Path, copies: list[Path], digests: dict[str, str]) -> None:
        self.source = source
        self.copies = copies
        self.digests = digests
        self.gone: list[str] = []
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SourceWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._check()  # what went after the thread's last look

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self._check()

    def _check(self) -> None:
        # Names first, then the listing: a name is recorded only after its rename into the source
        # (write_recorded()), so every name taken here was in the source before the listing was made and
        # is missing from it only if it really left. (The other order saw a segment written between the
        # two as gone, a false violation.)
        names = sorted(self.digests)
        present = set(os.listdir(self.source))
        for name in names:
            if name in present or name in self.gone:
                continue
            self.gone.append(name)
            for copy in self.copies:
                path = copy / "log" / name
                if not path.exists() or xxhash.xxh3_128(path.read_bytes()).hexdigest() != self.digests[name]:
                    self.violations.append(f"{name} left the source before {copy} held it")


def test_segments_leave_the_source_only_when_every_target_holds_them(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    a = receiver_proc(tmp_path, secret, name="a").start()
    b = receiver_proc(tmp_path, secret, name="b").start()
    procs += [a, b]
    # B is killed and restarted below: it comes back on the port its first start reported.
    ports = [a.port, b.port]
    source, archive, state_dir = tmp_path / "src", tmp_path / "archive", tmp_path / "state"
    source.mkdir()
    archive.mkdir()
    copies = [tmp_path / "a" / "db1", tmp_path / "b" / "db1"]
    digests: dict[str, str] = {}
    extra = ["--state-dir", str(state_dir), "--retain", "--archive-dir", str(archive), "--retain-until", "durable"]
    shipper = shipper_proc(tmp_path, "db1", source, ports, secret, extra)
    procs.append(shipper.start())
    target_b = f"127.0.0.1:{ports[1]}"
    with SourceWatch(source, copies, digests) as watch:
        write_recorded(source, digests, 1, 6)
        # Everything but the newest (active) segment goes, into the archive.
        wait_until(lambda: sorted(os.listdir(source)) == [segment_name(6)], 30, what="retention of 1..5")
        # B stops: what it does not hold stays on the source, though A has it.
        b.kill9()
        write_recorded(source, digests, 7, 4)
        wait_until(lambda: log_names(copies[0])[-1:] == [segment_name(9)], 30, what="A to get 7..9")
        wait_until(lambda: state_of(state_dir, "db1", target_b) == "Disconnected", 20, what="B disconnected")
        out = shipper_cli("status", "--state-dir", str(state_dir), "--json")
        r = row(json.loads(out.stdout), "db1", target_b)
        assert r["retention"].startswith("holds"), r
        assert r["copy_queue_segments"] >= 4
        held = sorted(os.listdir(source))
        assert held[0] <= segment_name(6) and held[-1] == segment_name(10), held
        table = shipper_cli("status", "--state-dir", str(state_dir)).stdout
        assert "holds" in table
        # B back: it catches up, and then the source lets go of the rest.
        procs.append(b.start())
        wait_until(lambda: sorted(os.listdir(source)) == [segment_name(10)], 30, what="retention of 6..9")
    assert watch.violations == []
    assert watch.gone == [segment_name(i) for i in range(1, 10)]
    for i in range(1, 10):
        name = segment_name(i)
        assert xxhash.xxh3_128((archive / name).read_bytes()).hexdigest() == digests[name]
        for copy in copies:
            assert xxhash.xxh3_128((copy / "log" / name).read_bytes()).hexdigest() == digests[name]
    assert shipper.count("archived E0000000009.log") == 1
    print(f"\nfigures: removed={len(watch.gone)} held_while_b_down={len(held)} violations=0")


def test_a_fenced_target_holds_retention(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    # The second target's copy of db1 was activated at epoch 5: this shipper (epoch 0) is fenced there.
    fenced_state = tmp_path / "fenced" / "db1"
    fenced_state.mkdir(parents=True)
    (fenced_state / "state.json").write_text(json.dumps({"epoch": 5, "failed": None}))
    receivers = [
        receiver_proc(tmp_path, secret, name="good").start(),
        receiver_proc(tmp_path, secret, name="fenced").start(),
    ]
    procs += receivers
    ports = [r.port for r in receivers]
    source, state_dir = tmp_path / "src", tmp_path / "state"
    source.mkdir()
    digests: dict[str, str] = {}
    write_recorded(source, digests, 1, 3)
    extra = ["--state-dir", str(state_dir), "--retain", "--retain-until", "durable"]
    procs.append(shipper_proc(tmp_path, "db1", source, ports, secret, extra).start())
    fenced = f"127.0.0.1:{ports[1]}"
    wait_until(lambda: log_names(tmp_path / "good" / "db1") == [segment_name(1), segment_name(2)], 30, what="good")
    wait_until(lambda: state_of(state_dir, "db1", fenced) == "Fenced", 20, what="fenced")
    r = row(json.loads(shipper_cli("status", "--state-dir", str(state_dir), "--json").stdout), "db1", fenced)
    assert r["retention"] == "holds: Fenced: its log is kept", r
    # The row says why (issue 18), and shows no lag that would grow forever.
    assert r["failure"] == "fenced: epoch 5 there (activated or fenced)" and r["copy_lag_seconds"] is None, r
    assert sorted(os.listdir(source)) == [segment_name(i) for i in range(1, 4)]


def test_a_failed_target_holds_retention(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    # The second target's copy of db1 is Failed (as after a segment failed its digest three times).
    bad_state = tmp_path / "bad" / "db1"
    bad_state.mkdir(parents=True)
    (bad_state / "state.json").write_text(json.dumps({"epoch": 0, "failed": "E0000000001.log failed 3 times"}))
    receivers = [
        receiver_proc(tmp_path, secret, name="good").start(),
        receiver_proc(tmp_path, secret, name="bad").start(),
    ]
    procs += receivers
    ports = [r.port for r in receivers]
    source, state_dir = tmp_path / "src", tmp_path / "state"
    source.mkdir()
    digests: dict[str, str] = {}
    write_recorded(source, digests, 1, 3)
    extra = ["--state-dir", str(state_dir), "--retain", "--retain-until", "durable"]
    procs.append(shipper_proc(tmp_path, "db1", source, ports, secret, extra).start())
    bad = f"127.0.0.1:{ports[1]}"
    wait_until(lambda: state_of(state_dir, "db1", bad) == "Failed", 30, what="failed")
    wait_until(lambda: log_names(tmp_path / "good" / "db1") == [segment_name(1), segment_name(2)], 30, what="good")
    r = row(json.loads(shipper_cli("status", "--state-dir", str(state_dir), "--json").stdout), "db1", bad)
    assert r["retention"] == "holds: Failed: its log is kept", r
    assert "failed 3 times" in (r["failure"] or ""), r
    assert sorted(os.listdir(source)) == [segment_name(i) for i in range(1, 4)]


def test_truncation_lag_keeps_segments_a_while_after_every_target_got_them(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    receiver = receiver_proc(tmp_path, secret, name="r").start()
    procs.append(receiver)
    source, state_dir = tmp_path / "src", tmp_path / "state"
    source.mkdir()
    digests: dict[str, str] = {}
    write_recorded(source, digests, 1, 3)
    extra = ["--state-dir", str(state_dir), "--retain", "--retain-until", "durable", "--truncation-lag", "2s"]
    procs.append(shipper_proc(tmp_path, "db1", source, [receiver], secret, extra).start())
    copy_first = tmp_path / "r" / "db1" / "log" / segment_name(1)
    wait_until(copy_first.exists, 30, interval=0.02, what="the copy of the first segment")
    copied = time.monotonic()
    wait_until(lambda: not (source / segment_name(1)).exists(), 30, interval=0.02, what="the first segment to go")
    held = time.monotonic() - copied
    print(f"\nfigures: truncation lag 2s, segment left the source {held:.2f}s after the copy had it")
    assert held >= 1.9
    wait_until(lambda: sorted(os.listdir(source)) == [segment_name(3)], 30, what="the second segment to go")
