"""The lag benchmark's packet capture: frames on lo are reassembled, decoded and stamped in time."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from protocol.digest import chunk_digest
from protocol.framing import encode
from protocol.messages import Ack, Data, Position
from tests.helpers.source import ROOT
from tests.helpers.waiting import wait_until

sys.path.insert(0, str(ROOT / "scripts"))
from benchmarks.lag import LoopbackCapture

pytestmark = pytest.mark.skipif(LoopbackCapture.available() is not None, reason="needs root and a packet socket")


def test_capture_decodes_data_and_acks_both_ways_with_stamps_between_send_times() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    # Frames of every size: one byte to 1 MiB (many TCP segments on lo), back to back in one stream.
    sizes = [1, 4096, 70_000, 1 << 20, 4096]
    with LoopbackCapture(port) as cap:
        client = socket.create_connection(("127.0.0.1", port))
        peer, _ = server.accept()
        sent_at = []
        offset = 0
        for n in sizes:
            payload = bytes([n % 251]) * n
            sent_at.append(time.time())
            client.sendall(encode(Data("s", "seg1", offset, chunk_digest("seg1", offset, payload), payload)))
            offset += n
            peer.sendall(encode(Ack("s", Position("seg1", offset), False, Position("", 0))))
        got = 0
        while got < offset:
            got += len(peer.recv(1 << 20))
        wait_until(lambda: len(cap.acks) == len(sizes) and len(cap.data) == len(sizes), 10, what="the capture")
        done = time.time()
        client.close()
        peer.close()
    server.close()
    ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
    assert [(seg, end) for _, seg, end in cap.data] == [("seg1", e) for e in ends]
    assert [(seg, end) for _, seg, end in cap.acks] == [("seg1", e) for e in ends]
    assert cap.gaps == 0
    for i, (stamp, _, _) in enumerate(cap.data):
        assert sent_at[i] - 0.001 <= stamp <= done, (i, stamp - sent_at[i])
