"""Why a target says nothing, or hangs up, before its CHALLENGE: the shipper asks it again in the two
ways a wrong address answers (a TLS handshake, an HTTP request) and says which one it is.

A logship receiver speaks first (its CHALLENGE comes as soon as the connection, or its TLS handshake,
is up). Silence means the target waits for us: a TLS receiver waiting for a ClientHello the plain
shipper never sends, or an HTTP server (a receiver's --admin port) waiting for a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from logship.admin.wording import CLIENT_CERT_HINT
from protocol.aio import ConnectionClosed, FramedConnection

PROBE_TIMEOUT = 3.0


def _peer(conn: FramedConnection) -> tuple[str, int] | None:
    peer = conn.writer.get_extra_info("peername")
    return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None


async def _speaks_tls(host: str, port: int) -> bool:
    """Whether ``host:port`` answers a ClientHello (any certificate: this only asks what it speaks)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            _, writer = await asyncio.open_connection(host, port, ssl=ctx)
    except ssl.SSLError as e:
        # A TLS server that refuses this ClientHello answered in TLS all the same (an alert).
        return "ALERT" in str(getattr(e, "reason", ""))
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


async def _speaks_http(host: str, port: int) -> bool:
    """Whether ``host:port`` answers an HTTP request like an HTTP server."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"HEAD / HTTP/1.0\r\nHost: logship-probe\r\n\r\n")
                answer = await reader.read(5)
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return answer == b"HTTP/"


async def explain_silence(conn: FramedConnection, waited: float) -> str:
    """Say why a plain connection got no CHALLENGE within ``waited`` seconds."""
    peer = _peer(conn)
    base = f"no answer from the target in time (no CHALLENGE in {waited:g}s)"
    if peer is None or conn.writer.get_extra_info("ssl_object") is not None:
        return base
    if await _speaks_tls(*peer):
        return (
            "the target speaks TLS and this shipper does not: give this target tls_ca (--tls-ca FILE), and "
            "tls_cert/tls_key if the receiver requires a client certificate"
        )
    if await _speaks_http(*peer):
        return (
            "the target is an HTTP server (a receiver's --admin port?), not a receiver's data port: "
            "use the port the receiver's --listen names"
        )
    return f"{base}: is it a logship receiver's data port, and is that receiver overloaded?"


async def explain_hangup(conn: FramedConnection, e: ConnectionClosed) -> ConnectionClosed:
    """Say why a target closed the connection before its CHALLENGE."""
    if conn.writer.get_extra_info("ssl_object") is not None:
        # Under TLS 1.3 the client's handshake is done before the receiver checks its certificate: the
        # receiver's alert is lost in the close, and a hang-up right after TLS is what the check looks like.
        return ConnectionClosed(
            f"the receiver closed the TLS connection before its CHALLENGE: it requires a client certificate "
            f"({CLIENT_CERT_HINT}) or does not trust the one given; the receiver's log says which"
        )
    peer = _peer(conn)
    if peer is not None and not conn.bytes_in and await _speaks_tls(*peer):
        # A TLS receiver gives up on a ClientHello that never comes after its --handshake-timeout.
        return ConnectionClosed(
            "the target speaks TLS and this shipper does not: give this target tls_ca (--tls-ca FILE), and "
            "tls_cert/tls_key if the receiver requires a client certificate"
        )
    return e
