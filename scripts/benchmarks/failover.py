"""7. ``failover``: automatic failover on etcd, kill -9 of the primary (issue 16).

A real 3-member etcd on 127.0.0.1 and two nodes, each a receiver and a ``logship ha`` agent (TTL 3 s,
dial lossless) that runs the shipper while its node leads (tests/helpers/hanode.py). Each run: a fresh
cluster name, a bootstraps and ships to b; segments are written and confirmed with ``shipper wait``;
a writer keeps appending to the active segment unconfirmed; then a's agent and shipper are killed -9
together (the host is gone). RTO is the time from the kill to the end of b's on_promote hook (which
runs after ``receiver activate --epoch`` and the new shipper's start); RPO is counted twice: confirmed
bytes missing on b (must be 0), and bytes a wrote but nobody confirmed that b does not have. Then one
planned ``logship ha switchover`` back to a (after a rejoined), timed by the command itself.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.common import ROOT, Options, Result, fresh_dir, make_secret, percentile, segment_name
from tests.helpers.etcd import EtcdCluster
from tests.helpers.hanode import HaNode
from tests.helpers.waiting import wait_until

TTL = 3
CHUNK = 16 * 1024


def run(opts: Options) -> Result:
    result = Result("failover", "failover: kill -9 of the primary -> the standby's on_promote done (TTL 3 s)")
    work = fresh_dir(opts.work)
    runs = 2 if opts.quick else 10
    etcd = EtcdCluster(work / "etcd").start()
    rtos: list[float] = []
    lost_confirmed: list[int] = []
    lost_unconfirmed: list[int] = []
    switchover: list[float] = []
    try:
        for i in range(runs):
            rto, confirmed, unconfirmed, took = _one(work / f"run{i}", etcd, f"bench{i}", i == 0)
            rtos.append(rto)
            lost_confirmed.append(confirmed)
            lost_unconfirmed.append(unconfirmed)
            if took is not None:
                switchover.append(took)
            print(
                f"  run {i + 1}/{runs}: RTO {rto:.2f} s, lost {confirmed} confirmed / {unconfirmed} unconfirmed bytes"
            )
    finally:
        etcd.stop()
    rtos.sort()
    p50, worst = percentile(rtos, 50), rtos[-1]
    result.figure(f"RTO kill -9 -> on_promote done, {runs} kills, p50 / max", f"{p50:.2f} s / {worst:.2f} s")
    result.figure("RPO, bytes confirmed by shipper wait and missing on the new primary", f"{max(lost_confirmed)}")
    result.figure(
        "bytes written but not yet confirmed that the new primary lacks, median / max",
        f"{sorted(lost_unconfirmed)[len(lost_unconfirmed) // 2]} / {max(lost_unconfirmed)}",
    )
    if switchover:
        result.figure("planned switchover (logship ha switchover, zero loss), as reported", f"{switchover[0]:.2f} s")
    result.target("RTO <= TTL + 2 s (max)", worst <= TTL + 2, f"{worst:.2f} s")
    result.target("RPO 0 for confirmed bytes (lossless)", max(lost_confirmed) == 0, f"{max(lost_confirmed)} B")
    result.note(
        "The RTO includes the lease running out (TTL 3 s, seen within one watch event), the takeover "
        "transaction, `receiver activate --epoch` as a subprocess and the new shipper's start; with "
        "an application, its own promotion (pg_ctl promote: tests/integration/test_failover_pg.py) adds to it."
    )
    return result


def _one(root: Path, etcd: EtcdCluster, cluster: str, with_switchover: bool) -> tuple[float, int, int, float | None]:
    root.mkdir(parents=True)
    secret = make_secret(root / "secret")
    src = root / "a" / "src"
    src.mkdir(parents=True)
    a = HaNode(root, "a", secret, source=src)
    # The hook stamps the wall clock when it runs: the end of the promotion, to the kill's time.time().
    b = HaNode(root, "b", secret, hooks={"on_promote": f"date +%s.%N > {root}/promoted_at; touch {root}/b/primary"})
    stop = threading.Event()
    try:
        a.receiver.start()
        b.receiver.start()
        # seal_idle: the last segment of a stopped application seals, so a switchover can hand it over.
        seal = {"seal_idle": "1s"}
        a.write_config(etcd.endpoints, {"b": b.receiver.address}, TTL, shipper=seal, cluster=cluster)
        b.write_config(etcd.endpoints, {"a": a.receiver.address}, TTL, shipper=seal, cluster=cluster)
        a.start_agent()
        wait_until(lambda: a.shipper_pid() is not None, 30, what="a ships")
        b.start_agent()
        wait_until(lambda: "follow a" in b.roles(), 30, what="b follows a")
        for n in (1, 2):
            (src / segment_name(n)).write_bytes(b"%d" % n * 100_000)
        active = src / segment_name(3)
        with open(active, "wb") as f:
            f.write(b"c" * 50_000)
        _wait(a, segment_name(3), "--offset", "50000")
        confirmed = {segment_name(1): 100_000, segment_name(2): 100_000, segment_name(3): 50_000}

        def writer() -> None:
            with open(active, "ab") as f:
                for _ in range(2000):  # bounded: 2000 x 16 KiB at most
                    if stop.is_set():
                        return
                    f.write(b"u" * CHUNK)
                    f.flush()
                    time.sleep(0.002)

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.3)
        a.kill_agent()
        a.kill_shipper()
        killed = time.time()
        stop.set()
        t.join(10)
        wait_until(b.primary, 30, what="b promoted")
        rto = float((root / "promoted_at").read_text()) - killed
        replica = b.copy() / "replica"

        def held(name: str) -> int:
            for p in (replica / name, replica / f"{name}.partial"):
                if p.exists():
                    return p.stat().st_size
            return 0

        lost_confirmed = sum(max(0, size - held(name)) for name, size in confirmed.items())
        lost_unconfirmed = max(0, active.stat().st_size - held(active.name))
        took = _switch_back(a, etcd) if with_switchover else None
        return rto, lost_confirmed, lost_unconfirmed, took
    finally:
        stop.set()
        for n in (a, b):
            n.stop()


def _wait(node: HaNode, segment: str, *how: str) -> None:
    argv = [sys.executable, "-m", "shipper", "wait", "--state-dir", str(node.ship_dir), "--stream", "sg1"]
    subprocess.run([*argv, "--segment", segment, *how, "--timeout", "30"], check=True, timeout=60, cwd=ROOT)


def _switch_back(a: HaNode, etcd: EtcdCluster) -> float | None:
    """a rejoins as a standby, then a planned switchover hands the primary back; its reported time."""
    a.start_agent()  # its receiver ran on: only the agent and the shipper were killed
    wait_until(lambda: a.roles().endswith("follow b\n"), 30, what="a follows b")
    cmd = [sys.executable, "-m", "logship.ha", "switchover", "--to", "a", "--config", str(a.root / "node.toml")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=ROOT)
    m = re.search(r"after ([0-9.]+)s", done.stdout)
    if done.returncode != 0 or m is None:
        print(f"  switchover failed (exit {done.returncode}): {done.stdout.strip()} {done.stderr.strip()}")
        return None
    return float(m.group(1))
