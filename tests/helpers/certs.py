"""Certificates for the TLS tests (made by trustme) written where the daemons read them."""

from __future__ import annotations

from pathlib import Path

import trustme


def write_pem(blob: trustme.Blob | trustme.LeafCert, path: Path) -> Path:
    """Write a certificate (with its key, for a leaf) to ``path`` with mode 0600."""
    if isinstance(blob, trustme.LeafCert):
        blob.private_key_and_cert_chain_pem.write_to_path(str(path))
    else:
        blob.write_to_path(str(path))
    path.chmod(0o600)
    return path
