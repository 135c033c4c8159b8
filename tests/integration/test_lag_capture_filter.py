"""The lag benchmark's capture filter: the kernel hands the capture only what it uses, and the frames
it decodes are those the unfiltered capture (the bench's before the filter) decodes, at the same stamps."""

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
from benchmarks.lag_observers import LoopbackCapture

pytestmark = pytest.mark.skipif(LoopbackCapture.available() is not None, reason="needs root and a packet socket")


def _pair(server: socket.socket) -> tuple[socket.socket, socket.socket]:
    client = socket.create_connection(("127.0.0.1", server.getsockname()[1]))
    peer, _ = server.accept()
    return client, peer


def test_only_the_syns_of_a_connection_without_payload_reach_the_filtered_capture() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    other = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    with LoopbackCapture(port) as filtered, LoopbackCapture(port, filtered=False) as everything:
        client, peer = _pair(server)
        client.close()
        peer.close()
        # Traffic of another port on lo, with payload both ways.
        a, b = _pair(other)
        for _ in range(20):
            a.sendall(b"x" * 1000)
            b.recv(1 << 16)
        a.close()
        b.close()
        # The unfiltered one reads every copy of those: SYN, SYN-ACK, ACK, FINs, out and in, and the other port.
        wait_until(lambda: everything.packets >= 2 * 6 + 2 * 20, 10, what="the unfiltered capture")
        time.sleep(3 * LoopbackCapture.BATCH)
    server.close()
    other.close()
    # SYN and SYN-ACK, the outgoing copies only: they give the two streams' first sequence numbers.
    assert filtered.packets == 2
    assert filtered.data == filtered.acks == []


def test_filtered_and_unfiltered_captures_decode_the_same_frames_at_the_same_stamps() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    sizes = [1, 4096, 70_000, 1 << 20, 4096] + [4096] * 200
    with LoopbackCapture(port) as filtered, LoopbackCapture(port, filtered=False) as everything:
        client, peer = _pair(server)
        offset = 0
        for n in sizes:
            payload = bytes([n % 251]) * n
            client.sendall(encode(Data("s", "seg1", offset, chunk_digest("seg1", offset, payload), payload)))
            offset += n
            got = 0
            while got < n:
                got += len(peer.recv(1 << 20))
            peer.sendall(encode(Ack("s", Position("seg1", offset), False, Position("", 0))))
            client.recv(1 << 16)
        for cap in (filtered, everything):
            wait_until(lambda c=cap: len(c.acks) == len(c.data) == len(sizes), 10, what="the captures")
        client.close()
        peer.close()
    server.close()
    assert filtered.gaps == everything.gaps == 0
    ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
    assert [end for _, _, end in filtered.data] == ends
    # The same skbs are handed to both sockets: the same kernel stamps, to the nanosecond.
    assert filtered.data == everything.data
    assert filtered.acks == everything.acks
    # Pure TCP ACKs and the incoming copies were dropped in the kernel.
    assert filtered.packets * 2 <= everything.packets
