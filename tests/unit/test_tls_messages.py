"""TLS set-up mistakes give the line that says what to do (new-user trial, finding 9)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from logship.config import ConfigError, check_key_file
from logship.tls import server_tls_context


@pytest.fixture
def pems(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)),
            *("-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    return cert, key


def test_a_certificate_without_its_key_asks_for_tls_key(pems: tuple[Path, Path]) -> None:
    cert, _ = pems
    cert.chmod(0o644)
    with pytest.raises(ConfigError, match=r"^no private key in .*cert\.pem: give --tls-key"):
        check_key_file(cert)


def test_a_combined_pem_readable_by_others_asks_for_chmod(pems: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = pems
    both = tmp_path / "server.pem"
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    both.chmod(0o644)
    with pytest.raises(ConfigError, match=r"accessible by others .*chmod 600"):
        check_key_file(both)
    both.chmod(0o600)
    assert check_key_file(both) == both


def test_a_missing_certificate_is_named(pems: tuple[Path, Path], tmp_path: Path) -> None:
    _, key = pems
    missing = tmp_path / "nosuch.pem"
    with pytest.raises(ConfigError, match=f"^TLS: cannot read {missing}: no such file$"):
        server_tls_context(missing, key, None)
