"""TLS on both sides, with certificates made on the fly (trustme).

One receiver requires client certificates (it is given a CA). Three shippers dial it: one configured
by TOML with a client certificate and the right CA ships byte-identical copies; one without a client
certificate and one trusting another CA never get a byte in.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pytest
import trustme

from logship.config import ConfigError
from receiver.__main__ import tls_context
from receiver.config import settings_from_args
from tests.helpers.certs import write_pem
from tests.helpers.copies import assert_copy_converged
from tests.helpers.procs import Proc, ReceiverProc, shipper_proc
from tests.helpers.source import make_secret, segment_name
from tests.helpers.waiting import wait_until


def fill_source(source: Path, count: int, seed: int) -> list[int]:
    rnd = random.Random(seed)
    source.mkdir()
    sizes = [rnd.randint(1, 300_000) for _ in range(count)]
    for i, size in enumerate(sizes, start=1):
        (source / segment_name(i)).write_bytes(rnd.randbytes(size))
    return sizes


def test_tls_ships_and_refuses_unproven_peers(tmp_path: Path, procs: list[Proc]) -> None:
    ca, other_ca = trustme.CA(), trustme.CA()
    ca_pem = write_pem(ca.cert_pem, tmp_path / "ca.pem")
    other_ca_pem = write_pem(other_ca.cert_pem, tmp_path / "other-ca.pem")
    server_pem = write_pem(ca.issue_cert("127.0.0.1"), tmp_path / "receiver.pem")
    client_pem = write_pem(ca.issue_cert("shipper.test"), tmp_path / "shipper.pem")
    secret = make_secret(tmp_path / "secret")

    data = tmp_path / "receiver"
    (tmp_path / "receiver.toml").write_text(
        f'listen = "127.0.0.1:0"\ndata_dir = "{data}"\nsecret_file = "{secret}"\n'
        f'tls_cert = "{server_pem}"\ntls_ca = "{ca_pem}"\n'
    )
    receiver = Proc("receiver", ["--config", str(tmp_path / "receiver.toml")], tmp_path / "receiver.log")
    procs.append(receiver.start())
    wait_until(lambda: "listening on" in receiver.log_text(), 20, what="receiver to listen")
    assert "(TLS)" in receiver.log_text()
    port = receiver.listen_port()

    good_src = tmp_path / "good"
    sizes = fill_source(good_src, 5, seed=1)
    (tmp_path / "shipper.toml").write_text(
        f'[[stream]]\nname = "good"\nsource = "{good_src}"\nsecret_file = "{secret}"\nseal = "immediate"\n'
        f'[[stream.target]]\naddress = "127.0.0.1:{port}"\n'
        f'tls_ca = "{ca_pem}"\ntls_cert = "{client_pem}"\n'
    )
    good = Proc("shipper", ["--config", str(tmp_path / "shipper.toml")], tmp_path / "shipper-good.log")
    no_cert_src, wrong_ca_src = tmp_path / "nocert", tmp_path / "wrongca"
    fill_source(no_cert_src, 2, seed=2)
    fill_source(wrong_ca_src, 2, seed=3)
    no_cert = shipper_proc(
        tmp_path, "nocert", no_cert_src, [port], secret, ["--seal", "immediate", "--tls-ca", str(ca_pem)]
    )
    wrong_ca = shipper_proc(
        tmp_path,
        "wrongca",
        wrong_ca_src,
        [port],
        secret,
        ["--seal", "immediate", "--tls-ca", str(other_ca_pem), "--tls-cert", str(client_pem)],
    )
    procs += [no_cert.start(), wrong_ca.start(), good.start()]

    expect = [segment_name(i) for i in range(1, len(sizes) + 1)]
    log_dir = data / "good" / "log"
    wait_until(lambda: log_dir.exists() and len(list(log_dir.iterdir())) == len(expect), 60, what="TLS copy")
    assert assert_copy_converged(good_src, data / "good", expect) == sum(sizes)

    # The refused shippers have tried (and failed) more than once by the time we look.
    wait_until(lambda: no_cert.count("reconnecting") + no_cert.count("refused") >= 1, 30, what="no-cert refusal")
    wait_until(lambda: "certificate verify failed" in wrong_ca.log_text(), 30, what="wrong-CA refusal")
    assert not (data / "nocert").exists(), "a shipper without a client certificate got a stream attached"
    assert not (data / "wrongca").exists(), "a shipper that distrusts the receiver still sent its stream"
    assert no_cert.alive() and wrong_ca.alive() and receiver.alive()
    assert "connected" not in no_cert.log_text()
    assert "connected" not in wrong_ca.log_text()


def test_plain_shipper_cannot_talk_to_a_tls_receiver(tmp_path: Path, procs: list[Proc]) -> None:
    ca = trustme.CA()
    server_pem = write_pem(ca.issue_cert("127.0.0.1"), tmp_path / "receiver.pem")
    secret = make_secret(tmp_path / "secret")
    receiver = ReceiverProc(
        [
            *("--data-dir", str(tmp_path / "receiver")),
            *("--secret-file", str(secret), "--tls-cert", str(server_pem), "--handshake-timeout", "1"),
        ],
        tmp_path / "receiver.log",
    )
    procs.append(receiver.start())
    src = tmp_path / "src"
    fill_source(src, 1, seed=4)
    plain = shipper_proc(tmp_path, "plain", src, [receiver], secret, ["--seal", "immediate"])
    procs.append(plain.start())
    wait_until(lambda: plain.count("reconnecting") >= 1, 30, what="plain shipper to fail")
    assert not (tmp_path / "receiver" / "plain").exists()
    assert receiver.alive()


def _receiver_args(tmp_path: Path, secret: Path, *tls: str) -> argparse.Namespace:
    from receiver.__main__ import build_parser

    return build_parser().parse_args(
        ["--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"), "--secret-file", str(secret), *tls]
    )


def test_tls_setting_errors(tmp_path: Path) -> None:
    ca = trustme.CA()
    secret = make_secret(tmp_path / "secret")
    ca_pem = write_pem(ca.cert_pem, tmp_path / "ca.pem")
    leaf = ca.issue_cert("127.0.0.1")
    pem = write_pem(leaf, tmp_path / "receiver.pem")
    with pytest.raises(ConfigError, match="need --tls-cert"):
        settings_from_args(_receiver_args(tmp_path, secret, "--tls-ca", str(ca_pem)))
    pem.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        settings_from_args(_receiver_args(tmp_path, secret, "--tls-cert", str(pem)))
    pem.chmod(0o600)
    # The settings name the files; the daemon loads them (before it touches the data dir).
    # A key file with no key in it is refused when the settings are read, naming the file.
    with pytest.raises(ConfigError, match=f"no private key in {secret}"):
        settings_from_args(_receiver_args(tmp_path, secret, "--tls-cert", str(ca_pem), "--tls-key", str(secret)))
    ok = settings_from_args(_receiver_args(tmp_path, secret, "--tls-cert", str(pem), "--tls-ca", str(ca_pem)))
    assert ok.tls is not None
    assert tls_context(ok) is not None


async def test_silent_peers_of_a_tls_receiver_are_dropped_and_others_served(tmp_path: Path) -> None:
    """Peers that never start TLS are dropped after the handshake timeout; a real TLS client meanwhile
    completes TLS and gets the CHALLENGE."""
    import asyncio
    import ssl

    from logship.tls import server_tls_context
    from receiver.server import ReceiverServer, ServerConfig

    ca = trustme.CA()
    pem = write_pem(ca.issue_cert("127.0.0.1"), tmp_path / "receiver.pem")
    config = ServerConfig(
        data_dir=tmp_path / "data",
        secret_for={"s": b"s" * 32}.get,
        handshake_timeout=1.5,
        tls=server_tls_context(pem, pem, None),
    )
    srv = ReceiverServer(config)
    _, port = await srv.start("127.0.0.1", 0)
    silent = []
    try:
        for _ in range(20):
            silent.append(await asyncio.open_connection("127.0.0.1", port))
        # Counted against --max-unauthenticated from accept on, though none of them began TLS (the
        # same holds on uvloop: tests/integration/test_tls_cap.py).
        async with asyncio.timeout(10):
            while srv.unauthenticated != 20:  # noqa: ASYNC110 - a counter, no event to wait on
                await asyncio.sleep(0.02)
        client = ssl.create_default_context()
        ca.configure_trust(client)
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        async with asyncio.timeout(5):
            assert len(await r.read(4)) == 4  # the CHALLENGE's length prefix, over TLS
        w.close()
        async with asyncio.timeout(10):
            for sr, _ in silent:
                try:
                    assert await sr.read(100) == b""
                except ConnectionResetError:
                    pass
            while srv.unauthenticated != 0:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    finally:
        for _, sw in silent:
            sw.close()
        await srv.stop()
