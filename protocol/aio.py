"""The one asyncio adapter of the protocol: move frames between a stream socket and the codec.

Everything else under protocol/ is free of I/O; this module only reads bytes into a FrameDecoder and
writes encoded frames, with a timeout on every read.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from protocol.compression import PayloadCompressor
from protocol.config_util import ConfigError
from protocol.errors import RemoteProtocolError
from protocol.framing import DEFAULT_MAX_PAYLOAD, NEED_DATA, FrameDecoder, encode_packed, encode_parts
from protocol.messages import Message

READ_SIZE = 256 * 1024


def _load(ctx: ssl.SSLContext, cert: Path | None, key: Path | None, ca: Path | None) -> ssl.SSLContext:
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


class ConnectionClosed(Exception):
    """The peer closed the connection (cleanly or not)."""


class FramedConnection:
    """Send and receive protocol messages over an asyncio stream pair."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(max_payload)
        self.compressor: PayloadCompressor | None = None
        """Set once both ends agreed on a payload encoding: DATA goes out compressed from then on."""
        self.bytes_in = 0
        self.bytes_out = 0
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    async def recv(self, timeout: float | None) -> Message:
        """Return the next message.

        Raises TimeoutError if nothing complete arrives in ``timeout`` seconds, ConnectionClosed at
        end of stream, RemoteProtocolError for bad bytes.
        """
        async with asyncio.timeout(timeout):
            while True:
                msg = self.decoder.next_message()
                if msg is not NEED_DATA:
                    return msg  # type: ignore[return-value]
                try:
                    data = await self.reader.read(READ_SIZE)
                except (ConnectionError, OSError) as e:
                    raise ConnectionClosed(str(e)) from e
                if not data:
                    if self.decoder.buffered:
                        raise RemoteProtocolError("connection closed mid-frame", code="truncated")
                    raise ConnectionClosed("closed by peer")
                self.bytes_in += len(data)
                self.decoder.receive_data(data)

    def send(self, msg: Message) -> int:
        """Queue ``msg`` for sending; return the bytes it takes on the wire.

        Call ``drain()`` to wait for the buffer to empty.
        """
        return self._write(*encode_parts(msg, self.compressor))

    def send_packed(self, msg: Message, packed: bytes | None) -> int:
        """Like ``send``, with the DATA payload compressed beforehand by ``self.compressor``
        (``packed``; None: it did not shrink, send it raw)."""
        encoding = self.compressor.encoding if self.compressor is not None else ""
        return self._write(*encode_packed(msg, encoding, packed))

    def _write(self, head: bytes, payload: bytes) -> int:
        self.writer.write(head)
        if payload:
            self.writer.write(payload)
        self.bytes_out += len(head) + len(payload)
        return len(head) + len(payload)

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as e:
            raise ConnectionClosed(str(e)) from e

    @property
    def closing(self) -> bool:
        return self.writer.is_closing()

    async def close(self) -> None:
        """Close the connection; never raises."""
        if not self.writer.is_closing():
            self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except Exception:  # noqa: BLE001 - closing must not fail its caller
            pass
