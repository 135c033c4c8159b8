"""TLS and wrong-port mistakes are told in the words of their fix, on both sides, at WARNING: a plain
shipper against a TLS receiver and a TLS shipper against a plain one ("speaks / does not speak TLS"),
a shipper without the client certificate the receiver requires, one that does not trust the receiver's
certificate, and a shipper pointed at the receiver's admin (HTTP) port. Real processes, trustme certs."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import trustme

from tests.helpers.certs import write_pem
from tests.helpers.procs import Proc, ShipperProc, receiver_proc, shipper_proc
from tests.helpers.source import segment_name
from tests.helpers.waiting import wait_until


def reason(shipper: ShipperProc) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{shipper.admin_port()}/status", timeout=10) as resp:
        return str(json.loads(resp.read())["copies"][0]["failure"] or "")


def test_tls_and_wrong_port_mistakes_say_what_to_do(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    ca, other_ca = trustme.CA(), trustme.CA()
    ca_pem = str(write_pem(ca.cert_pem, tmp_path / "ca.pem"))
    other_pem = str(write_pem(other_ca.cert_pem, tmp_path / "other-ca.pem"))
    server_pem = str(write_pem(ca.issue_cert("127.0.0.1"), tmp_path / "receiver.pem"))
    client_pem = str(write_pem(ca.issue_cert("shipper.test"), tmp_path / "shipper.pem"))
    source = tmp_path / "src"
    source.mkdir()
    (source / segment_name(1)).write_bytes(b"x" * 1000)

    tls_flags = ["--tls-cert", server_pem, "--tls-ca", ca_pem, "--handshake-timeout", "3s"]
    secure = receiver_proc(tmp_path, secret, "secure", [*tls_flags, "--admin", "127.0.0.1:0"]).start()
    plain = receiver_proc(tmp_path, secret, "plain").start()
    procs += [secure, plain]
    admin = secure.admin_port()

    def ship(name: str, target: int | Proc, *flags: str) -> ShipperProc:
        p = shipper_proc(tmp_path, name, source, [target], secret, ["--admin", "127.0.0.1:0", *flags])  # type: ignore[list-item]
        procs.append(p.start())
        return p

    no_tls = ship("notls", secure)
    no_cert = ship("nocert", secure, "--tls-ca", ca_pem)
    distrust = ship("distrust", secure, "--tls-ca", other_pem, "--tls-cert", client_pem)
    tls_to_plain = ship("tlsplain", plain, "--tls-ca", ca_pem, "--tls-cert", client_pem)
    to_admin = ship("admin", admin)

    expected = {
        no_tls: "the target speaks TLS and this shipper does not: give this target tls_ca",
        no_cert: "it requires a client certificate",
        distrust: "the target's certificate is not trusted (certificate verify failed: self-signed certificate in",
        tls_to_plain: "the target does not speak TLS (it answered in plain)",
        to_admin: "the target is an HTTP server (a receiver's --admin port?), not a receiver's data port",
    }
    for shipper, text in expected.items():
        wait_until(lambda s=shipper, t=text: t in reason(s), 30, what=f"{shipper.log_path.name}: {text}")  # type: ignore[misc]
        warned = [line for line in shipper.log_text().splitlines() if text in line]
        assert warned and all(" WARNING " in line for line in warned), shipper.log_text()

    # The receivers' side of the same mistakes, at WARNING with the reason, once a minute per peer and reason.
    secure_log, plain_log = secure.log_text(), plain.log_text()
    for text in (
        "TLS handshake failed: no TLS handshake within 3s: this receiver speaks only TLS; a plain (non-TLS) shipper?",
        "TLS handshake failed: the shipper sent no client certificate, and this receiver requires one",
        "TLS handshake failed: the peer ended the TLS handshake",
    ):
        lines = [line for line in secure_log.splitlines() if text in line]
        assert len(lines) == 1 and " WARNING " in lines[0], (text, secure_log)
    assert "TLS handshake failed: \n" not in secure_log and " INFO " not in "".join(
        line for line in secure_log.splitlines() if "TLS handshake" in line
    )
    assert "(a TLS ClientHello: this receiver does not speak TLS" in plain_log, plain_log
    # Nothing of the stream got in anywhere.
    assert not (tmp_path / "plain" / "tlsplain").exists() or not list((tmp_path / "plain" / "tlsplain").rglob("E*"))
