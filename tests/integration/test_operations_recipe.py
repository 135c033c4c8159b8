"""docs/operations.md's "TLS certificates with openssl" and "systemd units" sections, checked as written.

The openssl block runs verbatim (PKI in a scratch directory, RECEIVER_SAN=IP:127.0.0.1) and a real
receiver and shipper ship over TLS with the files it made, while a shipper without a client certificate
gets nothing in. The unit files go through ``systemd-analyze verify`` (no services are started). What
the section says SIGTERM and SIGHUP do is done to real daemons.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers.copies import assert_copy_converged
from tests.helpers.procs import Proc, ReceiverProc, receiver_proc, shipper_proc
from tests.helpers.recipe import Recipe, sh_blocks
from tests.helpers.source import ROOT, make_secret, segment_name
from tests.helpers.waiting import wait_until

DOC = ROOT / "docs" / "operations.md"
TLS = "## TLS certificates with openssl"
UNITS = "## systemd units"


def unit_files(doc: Path = DOC) -> dict[str, str]:
    """Return the ```ini blocks of the systemd section by the file name on their first line."""
    text = doc.read_text()
    start = text.index(f"\n{UNITS}")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else len(text)]
    units = {}
    for block in re.findall(r"```ini\n(.*?)```", section, flags=re.S):
        first = block.splitlines()[0]
        assert first.startswith("# /etc/systemd/system/"), first
        units[first.rsplit("/", 1)[1]] = block
    return units


def make_source(source: Path, count: int) -> list[str]:
    source.mkdir()
    names = [segment_name(i) for i in range(1, count + 1)]
    for i, name in enumerate(names):
        (source / name).write_bytes(bytes([i]) * (50_000 + i * 997))
    return names


def test_the_openssl_recipe_makes_certificates_that_ship_over_tls(tmp_path: Path, procs: list[Proc]) -> None:
    pki = tmp_path / "pki"
    recipe = Recipe(tmp_path, DOC, {"PKI": str(pki), "RECEIVER_SAN": "IP:127.0.0.1"}, lambda _: False, TLS)
    out = recipe.run(sh_blocks(DOC, TLS)[1])
    assert "receiver.pem: OK" in out and "shipper.pem: OK" in out, out
    files = sorted(p.name for p in pki.iterdir())
    assert files == ["ca.key", "ca.pem", "ca.srl", "receiver.key", "receiver.pem", "shipper.key", "shipper.pem"]
    assert all(p.stat().st_mode & 0o077 == 0 for p in pki.iterdir())

    secret = make_secret(tmp_path / "secret")
    tls_in = ["--tls-cert", str(pki / "receiver.pem"), "--tls-key", str(pki / "receiver.key")]
    receiver = receiver_proc(tmp_path, secret, extra=[*tls_in, "--tls-ca", str(pki / "ca.pem")])
    procs.append(receiver.start())
    assert "(TLS)" in receiver.log_text()
    names = make_source(tmp_path / "src", 4)
    tls_out = ["--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "shipper.pem")]
    shipper = shipper_proc(
        tmp_path, "tls", tmp_path / "src", [receiver], secret, [*tls_out, "--tls-key", str(pki / "shipper.key")]
    )
    no_cert = shipper_proc(tmp_path, "nocert", tmp_path / "src", [receiver], secret, ["--tls-ca", str(pki / "ca.pem")])
    procs += [shipper.start(), no_cert.start()]
    log_dir = tmp_path / "receiver" / "tls" / "log"
    wait_until(lambda: log_dir.exists() and len(list(log_dir.iterdir())) == len(names) - 1, 60, what="the TLS copy")
    assert assert_copy_converged(tmp_path / "src", tmp_path / "receiver" / "tls", names[:-1]) > 0
    wait_until(lambda: no_cert.count("reconnecting") + no_cert.count("refused") >= 1, 30, what="no-cert refusal")
    assert not (tmp_path / "receiver" / "nocert").exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here (Debian: systemd)")
def test_the_unit_files_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    units = unit_files()
    assert sorted(units) == ["logship-receiver.service", "logship-shipper.service"]
    for name, text in units.items():
        for needed in ("User=logship", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes"):
            assert needed in text, (name, needed)
        assert "ReadWritePaths=/var/lib/logship" in text and "ExecReload" not in text
        # The checkout's own python stands in for /opt/logship's (verify checks that ExecStart exists).
        (tmp_path / name).write_text(text.replace("/opt/logship", str(ROOT)))
        done = subprocess.run(
            ["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), (name, done)
    assert "KillMode=process" in units["logship-receiver.service"]


def test_sigterm_stops_cleanly_and_sighup_ends_at_once(tmp_path: Path, procs: list[Proc]) -> None:
    secret = make_secret(tmp_path / "secret")
    make_source(tmp_path / "src", 2)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        receiver: ReceiverProc = receiver_proc(tmp_path, secret, name=f"receiver-{sig.name}")
        procs.append(receiver.start())
        shipper = shipper_proc(tmp_path, f"s-{sig.name}", tmp_path / "src", [receiver], secret)
        procs.append(shipper.start())
        wait_until(lambda s=shipper: s.count("connected") >= 1, 30, what="the shipper connected")
        for proc in (shipper, receiver):
            assert proc.popen is not None
            proc.popen.send_signal(sig)
            code = proc.popen.wait(30)
            if sig is signal.SIGTERM:
                assert code == 0 and "stopped" in proc.log_text(), proc.log_text()[-2000:]
            else:
                assert code == -signal.SIGHUP and "stopped" not in proc.log_text(), (code, proc.log_text()[-2000:])
        if sig is signal.SIGTERM:
            assert "stopping: finishing writes in hand" in receiver.log_text()
