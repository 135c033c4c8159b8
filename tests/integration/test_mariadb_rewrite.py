"""A writer that rewrites a header byte of a segment after it was shipped, as MariaDB does: it opens the
next binlog, then clears the in-use flag (offset 21) of the one before and closes it. Under
``--seal closed`` the shipper rewrites that block at the receiver before the SEAL (issue 20): every copy
is byte-identical to its source, nothing goes to quarantine/, and about one copy crosses the link.

Real processes and real files; the writer is this test, so every rotation is aimed at a segment that
was shipped while it grew.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.request
from pathlib import Path
from typing import Any

from shipper.rewrite import BLOCK
from tests.helpers.copies import digest_file
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.waiting import wait_until

PATTERN = r"mysql-bin\.[0-9]{6}"
SEGMENTS = 8
SIZE = 1024 * 1024
PIECE = 32 * 1024
FLAG = 21


def name(i: int) -> str:
    return f"mysql-bin.{i:06d}"


def header() -> bytes:
    """A binlog-like header: magic, then a format event whose flags byte (offset 21) says in use."""
    head = bytearray(b"\xfebin" + os.urandom(60))
    head[FLAG] = 1
    return bytes(head)


def write_like_mariadb(source: Path, incoming: Path, rnd: random.Random) -> None:
    """Write SEGMENTS binlogs and open one more; each is shipped while it grows (pieces with pauses; its
    header has reached the receiver's partial in ``incoming`` before its second half is written), and its
    flag is cleared only after the next one exists, just before it is closed."""
    prev = -1
    for i in range(1, SEGMENTS + 2):
        fd = os.open(source / name(i), os.O_WRONLY | os.O_CREAT, 0o644)  # not O_APPEND: pwrite must land at 21
        os.write(fd, header())
        if prev >= 0:
            assert os.pwrite(prev, b"\x00", FLAG) == 1
            os.close(prev)
        if i == SEGMENTS + 1:
            os.write(fd, rnd.randbytes(1000))
            os.close(fd)  # the active binlog stays unsealed: no later one exists
            return
        written = len(header())
        partial = incoming / f"{name(i)}.partial"
        while written < SIZE:
            if written <= SIZE // 2 < written + PIECE:
                # Aimed: the flag byte was shipped as "in use" before the rotation rewrites it.
                wait_until(lambda p=partial: p.exists() and p.stat().st_size > FLAG, 30, 0.005, "the header shipped")
            n = min(PIECE, SIZE - written)
            os.write(fd, rnd.randbytes(n))
            written += n
            time.sleep(0.004)
        prev = fd


def status_row(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as resp:
        rows: list[dict[str, Any]] = json.loads(resp.read())["copies"]
    return rows[0]


def test_a_header_rewritten_at_rotation_reaches_the_copy_once_and_nothing_is_quarantined(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    source = tmp_path / "binlog"
    source.mkdir()
    receiver = receiver_proc(tmp_path, secret).start()
    procs.append(receiver)
    extra = ["--pattern", PATTERN, "--seal", "closed", "--admin", "127.0.0.1:0"]
    shipper = shipper_proc(tmp_path, "mdb", source, [receiver], secret, extra).start()
    procs.append(shipper)
    admin = shipper.admin_port()
    began = time.monotonic()
    copy = tmp_path / "receiver" / "mdb"
    write_like_mariadb(source, copy / "incoming", random.Random(20))
    expect = [name(i) for i in range(1, SEGMENTS + 1)]

    def installed() -> bool:
        log_dir = copy / "log"
        return log_dir.exists() and sorted(os.listdir(log_dir)) == expect

    wait_until(installed, 60, 0.05, f"{SEGMENTS} binlogs in log/")
    took = time.monotonic() - began
    for seg in expect:
        assert digest_file(copy / "log" / seg) == digest_file(source / seg), seg
        assert (copy / "log" / seg).read_bytes()[FLAG] == 0
    assert os.listdir(copy / "quarantine") == []
    active = source / name(SEGMENTS + 1)
    partial = copy / "incoming" / f"{active.name}.partial"
    wait_until(lambda: partial.exists() and partial.stat().st_size == active.stat().st_size, 30, 0.05, "the partial")

    one_copy = sum((source / seg).stat().st_size for seg in expect) + active.stat().st_size
    row = status_row(admin)
    sent = row["bytes_sent"]
    shipped_growing = shipper.count("changed on the source while it was shipped")
    rewritten = receiver.count("rewritten in the copy")
    # Every binlog was shipped while it grew and rewritten at rotation, each once, by one block.
    assert shipped_growing == SEGMENTS and rewritten == SEGMENTS, (shipped_growing, rewritten)
    assert one_copy <= sent <= one_copy + SEGMENTS * BLOCK, (sent, one_copy)
    assert receiver.count("quarantined") == 0 and shipper.count("fetches it again") == 0
    assert shipper.count("changed on the source after it was sealed") == 0
    print(
        f"\n{SEGMENTS} binlogs of {SIZE} bytes, each flag rewritten at rotation: bytes_sent {sent} for one copy of "
        f"{one_copy} ({sent / one_copy:.3f}x), {rewritten} rewrites, quarantine empty; {took:.1f}s"
    )
