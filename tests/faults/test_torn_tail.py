"""Receiver restart with a partial segment whose tail is garbage (a torn write).

Each round: the receiver is killed -9, its partial is damaged, the receiver restarts. It must detect
the damage by re-verifying the partial against its chunk records, cut the bad tail, resume from the
verified end, and in the end hold a copy byte-identical to the source.

Damage, by round: garbage appended after the last recorded chunk; garbage plus half a chunk record;
and garbage written over the last recorded chunk (a disk that lied about a write): re-verification
cuts back to the chunk before, and the shipper sends the rest again.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from tests.faults.common import HEAVY, DiskChecker, FaultFigures, highest_acked, record
from tests.helpers.copies import assert_copy_converged, partial_matches_prefix
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.source import segment_name
from tests.helpers.waiting import wait_until

ROUNDS = int(os.environ.get("LOGSHIP_FAULT_TORN") or (30 if HEAVY else 6))
KINDS = ("garbage-after-records", "garbage-and-half-record", "garbage-over-recorded-chunk")


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_torn_tail_is_cut_and_the_copy_resumes(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    t0 = time.monotonic()
    rnd = random.Random(5)
    source = tmp_path / "src"
    source.mkdir()
    receiver = receiver_proc(tmp_path, secret)
    # The receiver restarts after each kill on the port its first start reported (see ReceiverProc).
    shipper = shipper_proc(
        tmp_path, "torn", source, [receiver], secret, ["--log-level", "DEBUG", "--chunk-size", "32k"]
    )
    copy = tmp_path / "receiver" / "torn"
    disk = DiskChecker(source, copy)
    procs += [receiver.start(), shipper.start()]
    cut_bytes = 0
    done: dict[str, int] = dict.fromkeys(KINDS, 0)
    for i in range(1, ROUNDS + 1):
        kind = KINDS[(i - 1) % len(KINDS)]
        seg = segment_name(i)
        body = rnd.randbytes(rnd.randint(100_000, 300_000))
        _append(source / seg, body)
        partial = copy / "incoming" / f"{seg}.partial"

        def acked_all(seg: str = seg, size: int = len(body)) -> bool:
            a = highest_acked(shipper.log_text())
            return a is not None and a.segment == seg and a.offset == size

        wait_until(acked_all, 60, what=f"{seg} acknowledged")
        receiver.kill9()
        disk.check_acked(shipper.log_text())
        garbage = rnd.randbytes(rnd.randint(1, 50_000))
        if kind == "garbage-over-recorded-chunk":
            with open(partial, "r+b") as f:
                f.seek(len(body) - 1000)
                f.write(garbage[:1000].rjust(1000, b"\xff"))
        else:
            _append(partial, garbage)
            if kind == "garbage-and-half-record":
                _append(copy / "incoming" / f"{seg}.idx", rnd.randbytes(11))
        cuts_before = receiver.count("unverified bytes from the tail")
        receiver.start()
        wait_until(
            lambda n=cuts_before: receiver.count("unverified bytes from the tail") > n,
            60,
            what=f"the torn tail of {seg} to be cut",
        )
        done[kind] += 1
        # The shipper resumes from the verified end and completes the segment again.
        size = len(body)
        wait_until(lambda seg=seg, size=size: verified(copy, seg) == size, 60, what=f"{seg} restored")
        assert partial_matches_prefix(source, copy)
        if kind != "garbage-over-recorded-chunk":
            # The records vouched for every acknowledged byte: nothing acknowledged was lost.
            disk.check_acked(shipper.log_text())
        # The next segment seals this one.
    last = segment_name(ROUNDS + 1)
    _append(source / last, b"end")
    wait_until(
        lambda: (disk.check_log() or True) and len(disk.verified) == ROUNDS, 60, what="every torn segment sealed"
    )
    total = assert_copy_converged(source, copy, [segment_name(i) for i in range(1, ROUNDS + 1)])
    for line in receiver.log_text().splitlines():
        if "unverified bytes from the tail" in line:
            cut_bytes += int(line.split("cut ", 1)[1].split(" ", 1)[0])
    assert sum(done.values()) == ROUNDS
    seconds = round(time.monotonic() - t0, 1)
    record(
        "torn",
        [
            FaultFigures(
                "receiver restart, torn partial tail",
                ROUNDS,
                total,
                0,
                0,
                seconds,
                {"cut_bytes": cut_bytes, **{k: v for k, v in done.items()}},
            )
        ],
    )
    print(f"\nfigures: rounds={ROUNDS} {done} cut_bytes={cut_bytes} bytes={total} s={seconds}")


def verified(copy: Path, seg: str) -> int:
    from tests.faults.common import verified_partial_size

    if (copy / "log" / seg).exists():
        return (copy / "log" / seg).stat().st_size
    return verified_partial_size(copy, seg)
