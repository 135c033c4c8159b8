"""TLS contexts for both daemons: the receiver's server side and the shipper's client side."""

from __future__ import annotations

import ssl
from pathlib import Path

from logship.config import ConfigError


def _load(ctx: ssl.SSLContext, cert: Path | None, key: Path | None, ca: Path | None) -> ssl.SSLContext:
    for path in (cert, key, ca):
        # ssl reports a missing file without its name (FileNotFoundError.filename is None).
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"TLS: cannot read {path}: no such file")
    try:
        if cert is not None:
            ctx.load_cert_chain(cert, key)
        if ca is not None:
            ctx.load_verify_locations(cafile=ca)
    except FileNotFoundError as e:
        raise ConfigError(f"TLS: cannot read {e.filename}: {e.strerror}") from None
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"TLS: cannot load certificate {cert}, key {key} or CA {ca}: {e}") from None
    return ctx


def server_tls_context(cert: Path, key: Path | None, ca: Path | None) -> ssl.SSLContext:
    """Build the receiver's TLS context; with ``ca``, every shipper must present a certificate it signed.

    Raises ConfigError if a file cannot be loaded.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(ctx, cert, key, ca)
    if ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_tls_context(cert: Path | None, key: Path | None, ca: Path | None) -> ssl.SSLContext:
    """Build the shipper's TLS context: verify the receiver against ``ca`` (the system store without one).

    Raises ConfigError if a file cannot be loaded.
    """
    if ca is None:
        ctx = ssl.create_default_context()
    else:
        # Trust only the CA given (not the system store): a receiver certified by a public CA is not
        # ours. PROTOCOL_TLS_CLIENT checks the host name and requires a certificate by default.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return _load(ctx, cert, key, ca)
