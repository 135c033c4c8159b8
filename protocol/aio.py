"""The one asyncio adapter of the protocol: move frames between a stream socket and the codec.

Everything else under protocol/ is free of I/O; this module only reads bytes into a FrameDecoder and
writes encoded frames, with a timeout on every read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from protocol.auth import FrameOpener, FrameSealer
from protocol.compression import PayloadCompressor
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.framing import DEFAULT_MAX_PAYLOAD, NEED_DATA, FrameDecoder, encode_packed, encode_parts
from protocol.messages import Message

READ_SIZE = 256 * 1024


class ConnectionClosed(Exception):
    """The peer closed the connection (cleanly or not)."""


# Bytes received but not yet taken as messages before a FrameReceiver stops reading the socket.
PAUSE_AT = 8 * 1024 * 1024


class FrameReceiver(asyncio.BufferedProtocol):
    """The receive side of a connection as a BufferedProtocol: the socket writes into the decoder's
    buffers (a large DATA payload straight into its own), instead of StreamReader's three copies.

    Serve with ``loop.create_server(lambda: FrameReceiver(handler, max_payload), ...)``: each
    connection calls ``handler(FramedConnection)`` in a task of its own. Sending goes through an
    ordinary asyncio.StreamWriter on the same transport.
    """

    def __init__(
        self,
        handler: Callable[[FramedConnection], Awaitable[None]],
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.decoder = FrameDecoder(max_payload)
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.eof = False
        self.lost: BaseException | None = None
        self.received = 0
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._waiter: asyncio.Future[None] | None = None
        self._closed = self._loop.create_future()
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses, but behave as one.)
        self.transport = transport  # type: ignore[assignment]
        writer = asyncio.StreamWriter(transport, self, None, self._loop)  # type: ignore[arg-type]
        conn = FramedConnection(None, writer, decoder=self.decoder, receiver=self)
        self._task = self._loop.create_task(self.handler(conn))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.received += nbytes
        self.decoder.buffer_updated(nbytes)
        if self.decoder.buffered >= PAUSE_AT and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        for waiter in self._drain_waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(ConnectionResetError(str(exc)))
        self.lost = exc
        if not self._closed.done():
            self._closed.set_result(None)
        self._wake()

    # Flow control of the sending side, as asyncio.StreamWriter expects from its protocol (the same as
    # asyncio.streams.FlowControlMixin, which we cannot inherit: uvloop would then take us for a plain
    # Protocol and call data_received instead of get_buffer).

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _drain_helper(self) -> None:
        if self._closed.done():
            raise ConnectionResetError("Connection lost")
        if not self._writing_paused:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            self._drain_waiters.remove(waiter)

    # What asyncio.StreamWriter.start_tls() expects of a server-side protocol.
    _client_connected_cb = True

    def _replace_writer(self, writer: asyncio.StreamWriter) -> None:
        self.transport = writer.transport  # type: ignore[assignment]

    def _get_close_waiter(self, stream: asyncio.StreamWriter) -> asyncio.Future[None]:
        return self._closed

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait_data(self) -> None:
        """Wait until more bytes (or the end) arrive; resume reading first if we had paused it."""
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class FramedConnection:
    """Send and receive protocol messages over an asyncio stream pair (or a FrameReceiver)."""

    def __init__(
        self,
        reader: asyncio.StreamReader | None,
        writer: asyncio.StreamWriter,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        decoder: FrameDecoder | None = None,
        receiver: FrameReceiver | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = decoder if decoder is not None else FrameDecoder(max_payload)
        self.receiver = receiver
        self.compressor: PayloadCompressor | None = None
        """Set once both ends agreed on a payload encoding: DATA goes out compressed from then on."""
        self.sealer: FrameSealer | None = None
        """Set by authenticate(): every frame from then on goes out numbered and tagged."""
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
                if self.receiver is not None:
                    await self._wait_receiver(self.receiver)
                    continue
                assert self.reader is not None
                try:
                    data = await self.reader.read(READ_SIZE)
                except (ConnectionError, OSError) as e:
                    raise ConnectionClosed(str(e)) from e
                if not data:
                    if self.decoder.buffered:
                        raise RemoteProtocolError("connection closed mid-frame", code=ErrorCode.TRUNCATED)
                    raise ConnectionClosed("closed by peer")
                self.bytes_in += len(data)
                self.decoder.receive_data(data)

    async def _wait_receiver(self, receiver: FrameReceiver) -> None:
        if receiver.eof:
            if receiver.lost is not None:
                raise ConnectionClosed(str(receiver.lost) or type(receiver.lost).__name__)
            if self.decoder.buffered:
                raise RemoteProtocolError("connection closed mid-frame", code=ErrorCode.TRUNCATED)
            raise ConnectionClosed("closed by peer")
        before = receiver.received
        await receiver.wait_data()
        self.bytes_in += receiver.received - before

    def send(self, msg: Message) -> int:
        """Queue ``msg`` for sending; return the bytes it takes on the wire.

        Call ``drain()`` to wait for the buffer to empty. Raises ConnectionClosed if the connection
        is closed (or closing).
        """
        return self._write(*encode_parts(msg, self.compressor, self.sealer))

    def send_packed(self, msg: Message, packed: bytes | None) -> int:
        """Like ``send``, with the DATA payload compressed beforehand by ``self.compressor``
        (``packed``; None: it did not shrink, send it raw)."""
        encoding = self.compressor.encoding if self.compressor is not None else ""
        return self._write(*encode_packed(msg, encoding, packed, self.sealer))

    def authenticate(self, sealer: FrameSealer, opener: FrameOpener) -> None:
        """Tag every frame sent from now on and check the tag of every frame received from now on.

        Call it between the handshake's last frame and the first authenticated one: the receiver
        before it sends WELCOME, the shipper once it accepted WELCOME and before it reads again.
        """
        self.sealer = sealer
        self.decoder.opener = opener

    def _write(self, head: bytes, payload: bytes) -> int:
        # asyncio drops writes to a closed transport, uvloop raises RuntimeError: either way the peer
        # is gone, which callers handle as ConnectionClosed (an uncaught RuntimeError ended a shipper).
        if self.writer.is_closing():
            raise ConnectionClosed("connection closed")
        try:
            self.writer.write(head)
            if payload:
                self.writer.write(payload)
        except RuntimeError as e:
            raise ConnectionClosed(str(e)) from e
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
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when it is cancelled
        # just as the awaited thing completes (CPython gh-86296), and a shipper stopped by SIGTERM
        # at that moment went on reconnecting for ever.
        try:
            async with asyncio.timeout(2):
                await self.writer.wait_closed()
        except Exception:  # noqa: BLE001 - closing must not fail its caller
            pass
