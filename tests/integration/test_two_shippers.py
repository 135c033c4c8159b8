"""Two shippers of one stream to one target (an old one left running, a second with another state dir)
are told so, by whom, and back off: the receiver tells the connection it takes the stream from
(ERROR superseded, naming the new peer), which then waits 5 s, 10 s, ... before taking it back, instead of
the ten takeovers a second this was. The copy stays byte-identical."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.source import segment_name
from tests.helpers.waiting import wait_until
from tests.integration.test_shipper_ops import log_names

SEGMENTS, SIZE = 5, 200_000


def test_two_shippers_of_one_stream_are_told_and_back_off(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for i in range(1, SEGMENTS + 1):
        (source / segment_name(i)).write_bytes(os.urandom(SIZE))
    receiver = receiver_proc(tmp_path, secret).start()
    procs.append(receiver)
    first = shipper_proc(tmp_path, "s4", source, [receiver], secret, ["--rate-limit", "2mbit", "--seal-idle", "1"])
    procs.append(first.start())
    wait_until(lambda: "connected" in first.log_text(), 20, what="the first shipper connected")
    second = shipper_proc(tmp_path, "s4", source, [receiver], secret, ["--rate-limit", "2mbit", "--seal-idle", "1"])
    second.log_path = tmp_path / "shipper-s4-second.log"
    procs.append(second.start())
    started = time.monotonic()
    wait_until(lambda: "took stream s4 over: two shippers?" in first.log_text(), 20, what="the first one told")
    time.sleep(max(0.0, 12 - (time.monotonic() - started)))

    told = [line for p in (first, second) for line in p.log_text().splitlines() if "took stream s4 over" in line]
    assert all(" WARNING " in line and "waiting " in line and "before taking it back" in line for line in told), told
    assert any("(node " in line and "a connection from 127.0.0.1:" in line for line in told), told
    # 12 s: at most a handful of takeovers (5 s, then 10 s apart per shipper), not ten a second.
    takeovers = receiver.count("takes over from")
    assert 1 <= takeovers <= 5, receiver.log_text()
    wait_until(lambda: len(log_names(tmp_path / "receiver" / "s4")) == SEGMENTS, 60, what="the copy complete")
    copied = tmp_path / "receiver" / "s4" / "log"
    for i in range(1, SEGMENTS + 1):
        assert (copied / segment_name(i)).read_bytes() == (source / segment_name(i)).read_bytes()
