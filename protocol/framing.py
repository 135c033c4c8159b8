"""Frame codec: bytes in, messages out; messages in, bytes out. No I/O.

A frame is a 4-byte big-endian length of a msgpack header map, the header, and, for DATA, exactly
``header["len"]`` raw payload bytes that msgpack never touches. The decoder checks every length
against its limits before it buffers what the length announces.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgpack

from protocol.compression import PayloadCompressor, check_lengths, decompress
from protocol.errors import FrameTooLarge, LocalProtocolError, RemoteProtocolError
from protocol.messages import MESSAGE_TYPES, PAYLOAD_TYPES, Data, Message

MAX_HEADER: Final = 64 * 1024
DEFAULT_MAX_PAYLOAD: Final = 4 * 1024 * 1024
SCRATCH: Final = 256 * 1024
"""Bytes get_buffer() offers between payloads."""
DIRECT_PAYLOAD: Final = 64 * 1024
"""Payloads of at least this size are received in place into their own buffer."""
_PREFIX = struct.Struct(">I")


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()

_packer = msgpack.Packer(use_bin_type=True)


def encode_parts(msg: Message, compressor: PayloadCompressor | None = None) -> tuple[bytes, bytes]:
    """Return (prefix+header, payload) for ``msg``; write both, in order, without joining them.

    With a ``compressor`` (only once both ends agreed on its encoding), a DATA payload goes out
    compressed when that makes it smaller: the header then says ``enc`` and ``ulen``.
    """
    if compressor is not None and isinstance(msg, Data) and msg.payload:
        packed = compressor.compress(msg.payload)
        if packed is not None:
            return encode_packed(msg, compressor.encoding, packed)
    return encode_packed(msg, "", None)


def encode_packed(msg: Message, encoding: str, packed: bytes | None) -> tuple[bytes, bytes]:
    """Like ``encode_parts``, for a DATA payload compressed beforehand (``packed`` in ``encoding``;
    None: send the payload raw), e.g. in a worker thread."""
    fields = msg.to_header()
    payload = msg.payload if isinstance(msg, Data) else b""
    if packed is not None:
        fields["enc"], fields["ulen"], fields["len"] = encoding, len(payload), len(packed)
        payload = packed
    header = _packer.pack(fields)
    if len(header) > MAX_HEADER:
        raise LocalProtocolError(f"header of {len(header)} bytes exceeds {MAX_HEADER}")
    return _PREFIX.pack(len(header)) + header, payload


def encode(msg: Message, compressor: PayloadCompressor | None = None) -> bytes:
    """Return the whole frame for ``msg`` as one bytes object."""
    head, payload = encode_parts(msg, compressor)
    return head + payload if payload else head


class FrameDecoder:
    """Turn a byte stream split anywhere into messages.

    Feed bytes with ``receive_data()``, then call ``next_message()`` until it returns NEED_DATA.
    After the first error the decoder is closed and every later call raises the same error.
    ``encodings`` are the compressed payload encodings agreed in the handshake (none until then).
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD, encodings: frozenset[str] = frozenset()) -> None:
        self.max_payload = max_payload
        self.encodings = encodings
        self._buf = bytearray()
        self._header: dict[str, Any] | None = None
        self._error: RemoteProtocolError | None = None
        self._payload: bytearray | None = None
        """The pending DATA payload, filled in place (see get_buffer); None while bytes go to _buf."""
        self._filled = 0
        self._scratch: bytearray | None = None
        self._into_payload = False

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._filled

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes from the peer."""
        if self._error is not None:
            raise self._error
        if self._payload is not None:
            take = min(len(data), len(self._payload) - self._filled)
            self._payload[self._filled : self._filled + take] = memoryview(data)[:take]
            self._filled += take
            if take == len(data):
                return
            data = memoryview(data)[take:]
        self._buf += data

    def get_buffer(self) -> memoryview:
        """Return a buffer the next bytes from the peer may be written into; then call buffer_updated().

        The zero-copy twin of receive_data() for asyncio.BufferedProtocol: while a large DATA payload
        is pending, the socket writes straight into the payload's own buffer.
        """
        if self._error is not None:
            # Closed by an error: whatever else arrives is read and dropped (raising here would be a
            # fatal transport error instead of the ERROR frame and close the caller sends).
            self._into_payload = False
            if self._scratch is None:
                self._scratch = bytearray(SCRATCH)
            return memoryview(self._scratch)
        if self._payload is not None and self._filled < len(self._payload):
            self._into_payload = True
            return memoryview(self._payload)[self._filled :]
        # Between payloads, or a payload complete but not yet taken by next_message().
        self._into_payload = False
        if self._scratch is None:
            self._scratch = bytearray(SCRATCH)
        return memoryview(self._scratch)

    def buffer_updated(self, nbytes: int) -> None:
        """Take ``nbytes`` written into the buffer of the last get_buffer()."""
        if self._error is not None:
            return
        if self._into_payload:
            self._filled += nbytes
        else:
            assert self._scratch is not None
            self.receive_data(memoryview(self._scratch)[:nbytes])

    def next_message(self) -> Message | _NeedData:
        """Return the next complete message, or NEED_DATA.

        Raises RemoteProtocolError (or a subclass) if the bytes break the protocol.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except RemoteProtocolError as e:
            self._error = e
            raise

    def _next(self) -> Message | _NeedData:
        buf = self._buf
        if self._header is None:
            if len(buf) < 4:
                return NEED_DATA
            (hlen,) = _PREFIX.unpack_from(buf)
            if hlen > MAX_HEADER:
                raise FrameTooLarge(f"header length {hlen} exceeds {MAX_HEADER}")
            if hlen == 0:
                raise RemoteProtocolError("empty header", code="bad-frame")
            if len(buf) < 4 + hlen:
                return NEED_DATA
            raw = bytes(memoryview(buf)[4 : 4 + hlen])
            del buf[: 4 + hlen]
            header = _unpack_header(raw)
            kind = header.get("t")
            if type(kind) is not str:
                # Checked first: a list or map here is unhashable and would escape as TypeError.
                raise RemoteProtocolError(f"frame type must be a string, got {type(kind).__name__}", code="bad-type")
            if kind in PAYLOAD_TYPES:
                plen = header.get("len")
                if type(plen) is not int or plen < 0:
                    raise RemoteProtocolError("payload length must be a non-negative integer", code="bad-frame")
                if plen > self.max_payload:
                    raise FrameTooLarge(f"payload length {plen} exceeds {self.max_payload}")
                if "enc" in header:
                    check_lengths(header["enc"], plen, header.get("ulen"), self.max_payload, self.encodings)
                # Validate the header before waiting for the payload: a bad DATA header is refused
                # without buffering a single payload byte.
                Data.from_header(header)
                self._header = header
            else:
                factory = MESSAGE_TYPES.get(kind)
                if factory is None:
                    raise RemoteProtocolError(f"unknown frame type {kind!r}", code="bad-type")
                return factory(header)
        header = self._header
        plen = header["len"]
        payload: bytes | bytearray
        if self._payload is not None:
            if self._filled < plen:
                return NEED_DATA
            payload, self._payload, self._filled = self._payload, None, 0
        elif len(buf) < plen:
            # A large payload gets its own buffer that the rest of it is received into in place (no
            # second copy). Only once a quarter of it arrived: a peer that sends headers alone must
            # not make us allocate more than a few times what it actually sent.
            if plen >= DIRECT_PAYLOAD and len(buf) >= plen // 4:
                self._payload = bytearray(plen)
                self._payload[: len(buf)] = buf
                self._filled = len(buf)
                buf.clear()
            return NEED_DATA
        else:
            payload = bytes(memoryview(buf)[:plen])
            del buf[:plen]
        self._header = None
        if "enc" in header:
            payload = decompress(header["enc"], payload, header["ulen"])
        return Data.from_header(header, payload)


def _unpack_header(raw: bytes) -> dict[str, Any]:
    try:
        header = msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            use_list=True,
        )
    except Exception as e:  # noqa: BLE001 - msgpack raises many types for bad input; all mean the same here
        raise RemoteProtocolError(f"undecodable header: {type(e).__name__}", code="bad-frame") from None
    if type(header) is not dict:
        raise RemoteProtocolError("header must be a map", code="bad-frame")
    return header
