"""One history across many standbys, with real processes on 127.0.0.1 (issue 14).

A ships to B and C; B's receiver is stopped while A writes on, so C is ahead of B by whole and partial
segments. B is activated at epoch 1 (offline), C is fenced at epoch 1 (through its running receiver):
A is refused by both. B's new primary writes its own segments under the same names; B's shipper sends
its history to C, which rewinds exactly its tail past B's fork into quarantine/ and converges on B's
history, its manifest one chain. A second activation at the fenced epoch is refused.
"""

from __future__ import annotations

import json
import os
import pty
import random
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import xxhash

from receiver.manifest import chain_problem, parse_manifest
from tests.helpers import waiting
from tests.helpers.copies import digest_file
from tests.helpers.procs import Proc, ShipperProc, receiver_proc, shipper_proc
from tests.helpers.source import ROOT, segment_name


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "receiver", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def write_segment(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.rename(path)


def settled(pred: Callable[[], object]) -> Callable[[], object]:
    """``pred`` made False while a file it reads is being moved (a rewind or an install under way)."""

    def check() -> object:
        try:
            return pred()
        except FileNotFoundError:
            return False

    return check


def wait_until(pred: Callable[[], object], timeout: float, what: str = "condition") -> object:
    """tests.helpers.waiting.wait_until, with a predicate that is False while a file it reads is moved."""
    return waiting.wait_until(settled(pred), timeout, what=what)


def names_in(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if not n.startswith(".")) if directory.exists() else []


def test_three_nodes_activate_fence_rewind_converge(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    rnd = random.Random(14)
    a_src = tmp_path / "a"
    a_src.mkdir()
    # Nothing is replayed on the standbys before activation (the lag), so C's replica is never past a fork.
    b = receiver_proc(tmp_path, secret, name="b", extra=["--replay-lag", "1h"])
    c = receiver_proc(tmp_path, secret, name="c", extra=["--replay-lag", "1h", "--admin", "127.0.0.1:0"])
    procs += [b.start(), c.start()]
    a = shipper_proc(tmp_path, "db1", a_src, [b, c], secret)
    procs.append(a.start())
    a_data = {i: rnd.randbytes(rnd.randint(20_000, 200_000)) for i in range(1, 8)}
    for i in range(1, 5):
        write_segment(a_src / segment_name(i), a_data[i])
    with open(a_src / segment_name(5), "wb") as f:
        f.write(a_data[5][:30_000])
    b_copy, c_copy = tmp_path / "b" / "db1", tmp_path / "c" / "db1"
    first = [segment_name(i) for i in range(1, 5)]
    for copy in (b_copy, c_copy):
        wait_until(lambda copy=copy: names_in(copy / "log") == first, 30, what=f"{copy} holds 1-4")
        part = copy / "incoming" / f"{segment_name(5)}.partial"
        wait_until(lambda part=part: part.exists() and part.stat().st_size == 30_000, 30, what="5's first bytes")

    # B goes away; A writes on: C is ahead by whole segments (5, 6) and a partial one (7).
    b.stop()
    with open(a_src / segment_name(5), "ab") as f:
        f.write(a_data[5][30_000:])
    write_segment(a_src / segment_name(6), a_data[6])
    with open(a_src / segment_name(7), "wb") as f:
        f.write(a_data[7][:12_345])
    ahead = [segment_name(i) for i in range(1, 7)]
    wait_until(lambda: names_in(c_copy / "log") == ahead, 30, what="C holds 1-6")
    c_part = c_copy / "incoming" / f"{segment_name(7)}.partial"
    wait_until(lambda: c_part.exists() and c_part.stat().st_size == 12_345, 30, what="C's partial of 7")

    # B is activated at epoch 1 (no receiver running there: offline, under the lock).
    done = cli("activate", "--data-dir", str(tmp_path / "b"), "--stream", "db1", "--epoch", "1", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    b_fork = f"{segment_name(4)}@{len(a_data[4])}"
    assert report["epoch"] == 1 and report["epoch_given"] and report["fork"] == b_fork
    assert report["fence_others"] is None
    history_file = Path(report["history_file"])
    assert json.loads(history_file.read_text())["epoch"] == 1

    # C is fenced at epoch 1 through its running receiver: A's connection there is dropped, A refused.
    done = cli("fence", "--data-dir", str(tmp_path / "c"), "--stream", "db1", "--epoch", "1", "--fork", b_fork)
    assert done.returncode == 0, done.stderr
    assert "fenced at epoch 1 by the running receiver" in done.stdout
    assert json.loads((c_copy / "state.json").read_text())["epoch"] == 1
    wait_until(lambda: c.count("refused stream db1: epoch 0 is older than 1") >= 1, 30, what="A refused by C")
    # B's receiver comes back: A is refused there too (activated).
    b.start()
    wait_until(lambda: b.count("refused stream db1: activated at epoch 1") >= 1, 30, what="A refused by B")
    wait_until(lambda: a.count("this shipper is fenced") >= 2, 30, what="A fenced by both")
    assert names_in(c_copy / "log") == ahead

    # B's new primary writes its own 5', 6' and an active 7' into B's replica: same names, other bytes.
    b_replica = b_copy / "replica"
    b_data = {i: rnd.randbytes(rnd.randint(20_000, 200_000)) for i in range(5, 8)}
    for i in (5, 6):
        write_segment(b_replica / segment_name(i), b_data[i])
    with open(b_replica / segment_name(7), "wb") as f:
        f.write(b_data[7])
    b_ship = ShipperProc(
        [
            *("--stream", "db1", "--source", str(b_replica), "--secret-file", str(secret)),
            *("--history", str(history_file), "--state-dir", str(tmp_path / "st-b")),
        ],
        [c],
        tmp_path / "shipper-b.log",
        ["--admin", "127.0.0.1:0"],
    )
    procs.append(b_ship.start())

    wait_until(lambda: names_in(c_copy / "log") == ahead, 30, what="C holds 1-6 again")
    wait_until(
        lambda: all(
            digest_file(c_copy / "log" / segment_name(i)) == digest_file(b_replica / segment_name(i)) for i in (5, 6)
        ),
        30,
        what="C's 5 and 6 are B's",
    )
    c_part = c_copy / "incoming" / f"{segment_name(7)}.partial"
    wait_until(lambda: c_part.exists() and c_part.read_bytes() == b_data[7], 30, what="C's partial of 7 is B's")
    for i in range(1, 7):
        src = a_src if i <= 4 else b_replica
        assert (c_copy / "log" / segment_name(i)).read_bytes() == (src / segment_name(i)).read_bytes(), i

    # Exactly the tail past B's fork went to quarantine/, with a reason, byte for byte A's.
    (rewind_dir,) = [p for p in (c_copy / "quarantine").iterdir() if p.name.startswith("rewind-epoch1-")]
    assert (rewind_dir / segment_name(5)).read_bytes() == a_data[5]
    assert (rewind_dir / segment_name(6)).read_bytes() == a_data[6]
    assert (rewind_dir / f"{segment_name(7)}.partial").read_bytes() == a_data[7][:12_345]
    assert b_fork in (rewind_dir / "reason").read_text()
    cut = len(a_data[5]) + len(a_data[6]) + 12_345
    assert c.count(f"REWOUND {cut} bytes") == 1
    assert b_ship.count(f"REWOUND its copy by {cut} bytes") == 1
    # No segment of A's lost tail remains in C's log/ (same names, B's bytes).
    a_lost = {digest_file(rewind_dir / segment_name(i)) for i in (5, 6)}
    assert not a_lost & {digest_file(p) for p in (c_copy / "log").iterdir()}

    # The chain check passes on C from the first segment to the last, each record's digest the file's.
    records = parse_manifest((c_copy / "manifest").read_bytes())
    assert [r.name for r in records] == ahead and chain_problem(records) == ""
    assert all(r.pdx is not None for r in records)
    for r in records:
        assert (
            r.digest.hex() == digest_file(c_copy / "log" / r.name)
            and r.size == (c_copy / "log" / r.name).stat().st_size
        )
    assert (
        json.loads((c_copy / "history.json").read_text())["history"] == json.loads(history_file.read_text())["history"]
    )

    # Two standbys activated at the same epoch by mistake: after the fence, activate --epoch 1 is refused.
    done = cli("activate", "--data-dir", str(tmp_path / "c"), "--stream", "db1", "--epoch", "1", "--json")
    assert done.returncode == 1 and "not newer than every epoch this copy knows (1)" in done.stderr, done.stderr
    assert json.loads((c_copy / "state.json").read_text())["activated"] is None
    # The status shows the history on both sides, and /metrics the epoch as a gauge.
    rows = json.loads(cli("status", "--data-dir", str(tmp_path / "c"), "--json").stdout)["copies"]
    assert rows[0]["epoch"] == 1 and rows[0]["history"] == report["history"]
    table = cli("status", "--data-dir", str(tmp_path / "c")).stdout
    assert f"1 (forks 1@{b_fork})" in table, table
    state_dir = str(tmp_path / "st-b")
    shipped = subprocess.run(
        [sys.executable, "-m", "shipper", "status", "--state-dir", state_dir, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    (row,) = json.loads(shipped.stdout)["copies"]
    assert row["epoch"] == 1 and row["history"] == report["history"], row
    for proc, role in ((c, "receiver"), (b_ship, "shipper")):
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.admin_port()}/metrics", timeout=30) as r:
            metrics = r.read().decode()
        gauge = [line for line in metrics.splitlines() if line.startswith(f"logship_{role}_epoch{{")]
        assert gauge and all(line.endswith(" 1.0") for line in gauge), metrics


def write_history(path: Path, fork_segment: str, fork_offset: int, fork_bytes: bytes) -> Path:
    """A history file as activation writes it: epoch 1 forked at ``fork_segment@fork_offset``."""
    fork = {"seg": fork_segment, "off": fork_offset}
    entry = {"epoch": 1, "fork": fork, "xxh": xxhash.xxh3_128(fork_bytes).hexdigest()}
    path.write_text(json.dumps({"stream": "db1", "epoch": 1, "history": [entry], "fenced": []}))
    return path


def test_no_rewind_refuses_a_foreign_fork_is_refused_and_a_mid_segment_fork_is_cut(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    rnd = random.Random(15)
    a_src, b_src = tmp_path / "a", tmp_path / "b"
    a_src.mkdir()
    b_src.mkdir()
    c = receiver_proc(tmp_path, secret, name="c", extra=["--replay-lag", "1h", "--no-rewind"])
    procs.append(c.start())
    a = shipper_proc(tmp_path, "db1", a_src, [c], secret)
    procs.append(a.start())
    a_data = {i: rnd.randbytes(60_000) for i in range(1, 5)}
    for i in range(1, 4):
        write_segment(a_src / segment_name(i), a_data[i])
    write_segment(a_src / segment_name(4), a_data[4][:9_000])
    c_copy = tmp_path / "c" / "db1"
    c_part = c_copy / "incoming" / f"{segment_name(4)}.partial"
    wait_until(lambda: names_in(c_copy / "log") == [segment_name(i) for i in range(1, 4)], 30, what="C holds 1-3")
    wait_until(lambda: c_part.exists() and c_part.stat().st_size == 9_000, 30, what="C's partial of 4")
    a.stop()
    before = {n: (c_copy / "log" / n).read_bytes() for n in names_in(c_copy / "log")}

    # Fenced offline (C stopped): the epoch is raised in the data dir under its lock.
    c.stop()
    done = cli("fence", "--data-dir", str(tmp_path / "c"), "--stream", "db1", "--epoch", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["where"] == "in the data dir (no receiver running)"
    assert json.loads((c_copy / "state.json").read_text())["epoch"] == 1
    c.start()

    # B forked inside segment 3: its 3' shares A's first 25000 bytes, then differs; 4' is its own.
    k = 25_000
    b3 = a_data[3][:k] + rnd.randbytes(40_000)
    b4 = rnd.randbytes(30_000)
    for i in (1, 2):
        write_segment(b_src / segment_name(i), a_data[i])
    write_segment(b_src / segment_name(3), b3)
    write_segment(b_src / segment_name(4), b4)
    good = write_history(tmp_path / "history.json", segment_name(3), k, a_data[3][:k])

    def b_shipper(history: Path, log: str) -> ShipperProc:
        args = ["--stream", "db1", "--source", str(b_src), "--secret-file", str(secret), "--history", str(history)]
        return ShipperProc([*args, "--state-dir", str(tmp_path / f"st-{log}")], [c], tmp_path / f"{log}.log")

    # --no-rewind: the copy past the fork is refused, nothing of it moves.
    b = b_shipper(good, "b1")
    procs.append(b.start())
    wait_until(lambda: b.count("does not fit this shipper's history") >= 1, 30, what="B refused (no rewind)")
    assert c.count("--no-rewind") >= 1
    b.stop()
    assert {n: (c_copy / "log" / n).read_bytes() for n in names_in(c_copy / "log")} == before
    assert not list((c_copy / "quarantine").iterdir())

    # Without --no-rewind, a history whose bytes up to the fork are not the copy's is refused (another
    # history with the same names): the copy's bytes before the fork are never replaced by a guess.
    c.stop()
    c.args.remove("--no-rewind")
    c.start()
    c.listen_port()
    foreign = write_history(tmp_path / "foreign.json", segment_name(3), k, b"x" * k)
    x = b_shipper(foreign, "x")
    procs.append(x.start())
    wait_until(lambda: x.count("does not fit this shipper's history") >= 1, 30, what="foreign history refused")
    assert c.count("are not the new primary's (another history)") >= 1
    x.stop()
    assert {n: (c_copy / "log" / n).read_bytes() for n in names_in(c_copy / "log")} == before

    # The true history: C cuts 3 at the fork (its first k bytes stay, as the partial to resume) and 4.
    b = b_shipper(good, "b2")
    procs.append(b.start())
    wait_until(
        lambda: (
            names_in(c_copy / "log") == [segment_name(i) for i in range(1, 4)]
            and ((c_copy / "log" / segment_name(3)).read_bytes() == b3)
        ),
        30,
        what="C's 3 is B's",
    )
    (rewind_dir,) = [p for p in (c_copy / "quarantine").iterdir() if p.name.startswith("rewind-epoch1-")]
    assert (rewind_dir / segment_name(3)).read_bytes() == a_data[3]
    assert (rewind_dir / f"{segment_name(4)}.partial").read_bytes() == a_data[4][:9_000]
    assert c.count(f"REWOUND {len(a_data[3]) - k + 9_000} bytes") == 1
    # 4' is B's newest: it stays a partial at C with B's bytes.
    wait_until(lambda: c_part.exists() and c_part.read_bytes() == b4, 30, what="C's partial of 4 is B's")
    records = parse_manifest((c_copy / "manifest").read_bytes())
    assert [r.name for r in records] == [segment_name(i) for i in range(1, 4)] and chain_problem(records) == ""
    assert records[2].digest.hex() == xxhash.xxh3_128(b3).hexdigest()


def activate_at_a_terminal(data: Path, answer: bytes, *extra: str) -> tuple[int, str]:
    """Run activate with stdin and stderr on a pseudo-terminal, answering ``answer`` to its question."""
    main, side = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "receiver", "activate", "--data-dir", str(data), "--stream", "db1", *extra],
            stdin=side,
            stderr=side,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        os.write(main, answer)
        out, _ = proc.communicate(timeout=60)
        return proc.returncode, out.decode()
    finally:
        os.close(main)
        os.close(side)


def test_activate_asks_at_a_terminal_unless_yes(tmp_path: Path) -> None:
    data = tmp_path / "standby"
    (data / "db1" / "log").mkdir(parents=True)
    state = data / "db1" / "state.json"
    rc, _ = activate_at_a_terminal(data, b"n\n")
    assert rc == 1 and not state.exists()
    rc, out = activate_at_a_terminal(data, b"y\n", "--epoch", "3")
    assert rc == 0 and "activated at epoch 3" in out, out
    assert json.loads(state.read_text())["epoch"] == 3
    # --yes asks nothing (the answer left unread would be a "n").
    rc, out = activate_at_a_terminal(tmp_path / "standby", b"n\n", "--yes")
    assert rc == 0 and "already activated" in out, out
    # Without --epoch on a fresh copy: the next epoch here, and the report says to fence the others.
    (tmp_path / "second" / "db1" / "log").mkdir(parents=True)
    rc, out = activate_at_a_terminal(tmp_path / "second", b"", "--yes")
    assert rc == 0 and "activated at epoch 1" in out and "fence every other standby of db1" in out, out
