"""The cap on unauthenticated connections counts peers still in their TLS handshake.

A real receiver process (uvloop, as in production) with TLS and --max-unauthenticated 4: once a TLS
shipper is attached, three silent TCP peers and one that sent half a ClientHello fill the cap; the
next peers are closed at once (well before the handshake timeout), the attached shipper keeps
shipping byte-identical copies meanwhile, and when the handshake timeout drops the four, their slots
come back.
"""

from __future__ import annotations

import random
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import trustme

from logship.admin.control import call
from receiver.__main__ import control_path
from tests.helpers.certs import write_pem
from tests.helpers.copies import assert_copy_converged
from tests.helpers.procs import Proc, ReceiverProc, shipper_proc
from tests.helpers.source import make_secret, segment_name
from tests.helpers.waiting import wait_until

CAP = 4
HANDSHAKE_TIMEOUT = 10.0
PROMPT = 2.0
"""A peer beyond the cap must see its connection closed within this many seconds (<< the timeout)."""


def connections(data: Path) -> dict[str, Any]:
    return call(control_path(data), {"op": "status"}, timeout=5)["connections"]


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True if the peer closes ``sock`` (EOF or reset) within ``seconds``; False if it stays open."""
    sock.settimeout(seconds)
    try:
        return sock.recv(4096) == b""  # the receiver sends nothing before TLS, so data would be a bug
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def half_client_hello(ca: trustme.CA) -> bytes:
    """The first half of a real TLS ClientHello for this receiver."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    tls = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="127.0.0.1")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    assert len(hello) > 100
    return hello[: len(hello) // 2]


def write_segments(source: Path, first: int, count: int, rnd: random.Random) -> None:
    # Written beside the source and renamed in: the shipper (--seal immediate) must never see a
    # segment half-written.
    for i in range(first, first + count):
        tmp = source.parent / f"{segment_name(i)}.tmp"
        tmp.write_bytes(rnd.randbytes(rnd.randint(1, 200_000)))
        tmp.rename(source / segment_name(i))


def test_peers_in_their_tls_handshake_hold_slots_of_the_cap(tmp_path: Path, procs: list[Proc]) -> None:
    ca = trustme.CA()
    ca_pem = write_pem(ca.cert_pem, tmp_path / "ca.pem")
    server_pem = write_pem(ca.issue_cert("127.0.0.1"), tmp_path / "receiver.pem")
    secret = make_secret(tmp_path / "secret")
    data = tmp_path / "receiver"
    receiver = ReceiverProc(
        [
            *("--data-dir", str(data), "--secret-file", str(secret)),
            *("--tls-cert", str(server_pem), "--handshake-timeout", str(HANDSHAKE_TIMEOUT)),
            *("--max-unauthenticated", str(CAP)),
        ],
        tmp_path / "receiver.log",
    )
    procs.append(receiver.start())
    wait_until(lambda: "listening on" in receiver.log_text(), 20, what="receiver to listen")
    port = receiver.port

    rnd = random.Random(7)
    source = tmp_path / "src"
    source.mkdir()
    write_segments(source, 1, 3, rnd)
    shipper = shipper_proc(tmp_path, "s", source, [port], secret, ["--seal", "immediate", "--tls-ca", str(ca_pem)])
    procs.append(shipper.start())
    log_dir = data / "s" / "log"
    wait_until(lambda: log_dir.exists() and len(list(log_dir.iterdir())) == 3, 60, what="first TLS copies")
    # Attached and authenticated: the shipper holds no slot.
    wait_until(lambda: connections(data)["unauthenticated"] == 0, 10, what="shipper authenticated")

    held: list[socket.socket] = []
    late: list[socket.socket] = []
    try:
        for _ in range(CAP - 1):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        partial = socket.create_connection(("127.0.0.1", port), timeout=5)
        partial.sendall(half_client_hello(ca))
        held.append(partial)
        # Counted from accept on, though none of them finished (or, but one, even began) TLS.
        wait_until(lambda: connections(data)["unauthenticated"] == CAP, 10, what="the silent peers to be counted")
        flood_at = time.monotonic()

        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            late.append(sock)
            assert closed_within(sock, PROMPT), "a peer beyond the cap was not closed at once"
        assert connections(data)["refused_busy"] >= 3

        # The attached shipper is not held up by the peers stuck in their handshake.
        write_segments(source, 4, 3, rnd)
        expect = [segment_name(i) for i in range(1, 7)]
        wait_until(lambda: len(list(log_dir.iterdir())) == 6, HANDSHAKE_TIMEOUT - 3, what="copies during the flood")
        assert assert_copy_converged(source, data / "s", expect) > 0
        assert time.monotonic() - flood_at < HANDSHAKE_TIMEOUT
        for sock in held:
            assert not closed_within(sock, 0.01), "a peer within the cap was closed before its handshake timeout"

        # The handshake timeout drops them and frees their slots: a new peer is counted, not refused.
        for sock in held:
            assert closed_within(sock, HANDSHAKE_TIMEOUT + 10), "a silent peer outlived the handshake timeout"
        wait_until(lambda: connections(data)["unauthenticated"] == 0, 10, what="slots to come back")
        again = socket.create_connection(("127.0.0.1", port), timeout=5)
        late.append(again)
        wait_until(lambda: connections(data)["unauthenticated"] == 1, 10, what="a new peer to get a slot")
        assert not closed_within(again, 0.5)
    finally:
        for sock in held + late:
            sock.close()
    assert receiver.alive() and shipper.alive()
    assert "connected" in shipper.log_text()
