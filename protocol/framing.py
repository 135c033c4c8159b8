"""Frame codec: bytes in, messages out; messages in, bytes out. No I/O.

A frame is a 4-byte big-endian length of a msgpack header map, the header, and, for DATA, exactly
``header["len"]`` raw payload bytes that msgpack never touches. The decoder checks every length
against its limits before it buffers what the length announces.

After the handshake (protocol/auth.py) a 16-byte tag follows every header, before the payload: the
encoder adds it with a FrameSealer, the decoder checks it with a FrameOpener before it believes a
single field of the header.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any, Final

import msgpack

from protocol.auth import PAYLOAD_MAC, TAG_SIZE, FrameOpener, FrameSealer
from protocol.buffers import AlignedBuffer, BufferPool
from protocol.compression import PayloadCompressor, check_lengths, decompress
from protocol.errors import ErrorCode, FrameTooLarge, LocalProtocolError, RemoteProtocolError
from protocol.limits import DEFAULT_MAX_PAYLOAD, MAX_HEADER
from protocol.messages import MESSAGE_TYPES, PAYLOAD_TYPES, Data, Message

SCRATCH: Final = 64 * 1024
"""Bytes get_buffer() offers between payloads. Small: whatever of a large payload lands here is copied
once more, and a buffer below glibc's mmap threshold is not mapped and unmapped with every read."""
DIRECT_PAYLOAD: Final = 64 * 1024
"""Payloads of at least this size are received in place into their own buffer."""
_PREFIX = struct.Struct(">I")


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()

_packer = msgpack.Packer(use_bin_type=True)


def encode_parts(
    msg: Message, compressor: PayloadCompressor | None = None, sealer: FrameSealer | None = None
) -> tuple[bytes, bytes]:
    """Return (prefix+header, payload) for ``msg``; write both, in order, without joining them.

    With a ``compressor`` (only once both ends agreed on its encoding), a DATA payload goes out
    compressed when that makes it smaller: the header then says ``enc`` and ``ulen``.
    """
    if compressor is not None and isinstance(msg, Data) and msg.payload:
        packed = compressor.compress(msg.payload)
        if packed is not None:
            return encode_packed(msg, compressor.encoding, packed, sealer)
    return encode_packed(msg, "", None, sealer)


def encode_packed(
    msg: Message, encoding: str, packed: bytes | None, sealer: FrameSealer | None = None
) -> tuple[bytes, bytes]:
    """Like ``encode_parts``, for a DATA payload compressed beforehand (``packed`` in ``encoding``;
    None: send the payload raw), e.g. in a worker thread.

    With a ``sealer`` the frame is numbered and tagged: encode frames in the order they are written.
    """
    fields = msg.to_header()
    payload = msg.payload if isinstance(msg, Data) else b""
    if packed is not None:
        fields["enc"], fields["ulen"], fields["len"] = encoding, len(payload), len(packed)
        payload = packed
    stream = fields.get("stream")
    if sealer is not None and sealer.payload_mac and isinstance(msg, Data):
        fields[PAYLOAD_MAC] = sealer.payload_mac_for(msg.stream, payload)
    header = _packer.pack(fields)
    if len(header) > MAX_HEADER:
        raise LocalProtocolError(f"header of {len(header)} bytes exceeds {MAX_HEADER}")
    head = _PREFIX.pack(len(header)) + header
    if sealer is not None:
        head += sealer.tag(stream, head)
    return head, payload


def encode(msg: Message, compressor: PayloadCompressor | None = None, sealer: FrameSealer | None = None) -> bytes:
    """Return the whole frame for ``msg`` as one bytes object."""
    head, payload = encode_parts(msg, compressor, sealer)
    return head + payload if payload else head


_HTTP_STARTS = frozenset({b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN", b"HTTP"})


class FrameDecoder:
    """Turn a byte stream split anywhere into messages.

    Feed bytes with ``receive_data()``, then call ``next_message()`` until it returns NEED_DATA.
    After the first error the decoder is closed and every later call raises the same error.
    ``encodings`` are the compressed payload encodings agreed in the handshake (none until then).
    ``pool``, once set (after the peer authenticated), supplies large payload buffers as soon as their
    header arrives; without it a buffer is only made once a quarter of its payload arrived.
    ``opener``, once set (right after WELCOME), checks the tag that follows every header from then on.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD, encodings: frozenset[str] = frozenset()) -> None:
        self.max_payload = max_payload
        self.encodings = encodings
        self._buf = bytearray()
        self._header: dict[str, Any] | None = None
        self._data: Data | None = None
        """The pending DATA as its header was checked (payload still empty)."""
        self._error: RemoteProtocolError | None = None
        self._payload: bytearray | AlignedBuffer | memoryview | None = None
        """The pending DATA payload, filled in place (see get_buffer); None while bytes go to _buf."""
        self._filled = 0
        self._scratch: bytearray | None = None
        self._into_payload = False
        self.pool: BufferPool | None = None
        self.opener: FrameOpener | None = None
        self._ready: deque[Message] = deque()
        """Messages decoded ahead by buffer_updated(), handed out by next_message() first."""
        self._ready_bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken by next_message() (what a reader's flow control watches)."""
        return len(self._buf) + self._filled + self._ready_bytes

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
            if self._payload is not None and self._filled < len(self._payload):
                # Most reads of a large payload: nothing new to decode until its last byte is in.
                return
        else:
            assert self._scratch is not None
            view = memoryview(self._scratch)[:nbytes]
            if self.pool is not None and not self._buf and self._header is None and nbytes > 4:
                # A read between frames: the next frame's head alone first, so that if it is a large
                # DATA the payload bytes read with it go once into the payload's own buffer (else they
                # are copied into _buf and then again out of it, up to SCRATCH bytes per frame).
                cut = 4 + _PREFIX.unpack_from(view)[0] + TAG_SIZE
                if cut < nbytes:
                    self.receive_data(view[:cut])
                    self._decode_ahead()
                    if self._error is not None:
                        return
                    view = view[cut:]
            self.receive_data(view)
        self._decode_ahead()

    def _decode_ahead(self) -> None:
        # Decode ahead, as the bytes come: a DATA header is seen (and, with a pool, its payload buffer
        # offered to the socket) at once, not only when the consumer asks for the next message. Left
        # to the consumer, whole payloads piled up in _buf meanwhile, to be copied a second time.
        try:
            while (msg := self._next()) is not NEED_DATA:
                self._ready.append(msg)  # type: ignore[arg-type]
                self._ready_bytes += _cost(msg)  # type: ignore[arg-type]
        except RemoteProtocolError as e:
            # Raised by next_message() once the messages before the bad frame are taken.
            self._error = e

    def next_message(self) -> Message | _NeedData:
        """Return the next complete message, or NEED_DATA.

        Raises RemoteProtocolError (or a subclass) if the bytes break the protocol.
        """
        if self._ready:
            msg = self._ready.popleft()
            self._ready_bytes -= _cost(msg)
            return msg
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
                # "GET " read as a length is 1195725856: say what the peer is, not just the number.
                what = " (not a logship peer: looks like HTTP)" if bytes(buf[:4]) in _HTTP_STARTS else ""
                if buf[0] == 0x16 and buf[1] == 0x03:  # a TLS handshake record: a ClientHello
                    what = " (a TLS ClientHello: this receiver does not speak TLS; give it --tls-cert and --tls-key)"
                raise FrameTooLarge(f"header length {hlen} exceeds {MAX_HEADER}{what}")
            if hlen == 0:
                raise RemoteProtocolError("empty header", code=ErrorCode.BAD_FRAME)
            opener = self.opener
            if len(buf) < 4 + hlen:
                return NEED_DATA
            # Unpacked before its tag is in: a header that does not decode is refused at once.
            header = _unpack_header(bytes(memoryview(buf)[4 : 4 + hlen]))
            end = 4 + hlen + (TAG_SIZE if opener is not None else 0)
            if len(buf) < end:
                return NEED_DATA
            if opener is not None:
                view = memoryview(buf)
                try:
                    opener.check(header.get("stream"), view[: 4 + hlen], view[4 + hlen : end])
                finally:
                    view.release()
            del buf[:end]
            kind = header.get("t")
            if type(kind) is not str:
                # Checked first: a list or map here is unhashable and would escape as TypeError.
                raise RemoteProtocolError(
                    f"frame type must be a string, got {type(kind).__name__}", code=ErrorCode.BAD_TYPE
                )
            if kind in PAYLOAD_TYPES:
                plen = header.get("len")
                if type(plen) is not int or plen < 0:
                    raise RemoteProtocolError("payload length must be a non-negative integer", code=ErrorCode.BAD_FRAME)
                if plen > self.max_payload:
                    raise FrameTooLarge(f"payload length {plen} exceeds {self.max_payload}")
                if "enc" in header:
                    check_lengths(header["enc"], plen, header.get("ulen"), self.max_payload, self.encodings)
                # Validate the header before waiting for the payload: a bad DATA header is refused
                # without buffering a single payload byte. Kept: the payload is all it lacks.
                self._data = Data.from_header(header)
                self._header = header
                if self.pool is not None and plen >= DIRECT_PAYLOAD:
                    # An authenticated peer: receive the payload in place from its first byte on.
                    self._start_payload(self.pool.take(plen))
            else:
                factory = MESSAGE_TYPES.get(kind)
                if factory is None:
                    raise RemoteProtocolError(f"unknown frame type {kind!r}", code=ErrorCode.BAD_TYPE)
                return factory(header)
        header = self._header
        data = self._data
        assert data is not None
        plen = header["len"]
        payload: bytes | bytearray | AlignedBuffer | memoryview
        if self._payload is not None:
            if self._filled < plen:
                return NEED_DATA
            payload, self._payload, self._filled = self._payload, None, 0
        elif len(buf) < plen:
            # A large payload gets its own buffer that the rest of it is received into in place (no
            # second copy). Only once a quarter of it arrived: a peer that sends headers alone must
            # not make us allocate more than a few times what it actually sent.
            if plen >= DIRECT_PAYLOAD and len(buf) >= plen // 4:
                self._start_payload(bytearray(plen))
            return NEED_DATA
        else:
            payload = bytes(memoryview(buf)[:plen])
            del buf[:plen]
        self._header = self._data = None
        if self.opener is not None and self.opener.payload_mac:
            self.opener.check_payload(data.stream, payload, header.get(PAYLOAD_MAC))
        if "enc" in header:
            packed = payload
            payload = decompress(header["enc"], packed, header["ulen"])
            if self.pool is not None:
                self.pool.give(packed)  # (takes back only buffers of its own)
        return Data(data.stream, data.segment, data.offset, data.digest, payload, data.rewrite)  # type: ignore[arg-type]

    def _start_payload(self, payload: bytearray | AlignedBuffer | memoryview) -> None:
        """Receive the rest of the pending payload into ``payload``, after what _buf holds of it."""
        buf = self._buf
        take = min(len(buf), len(payload))
        payload[:take] = memoryview(buf)[:take]
        del buf[:take]
        self._payload = payload
        self._filled = take


def _cost(msg: Message) -> int:
    # What a decoded message counts toward ``buffered``: its payload, and for every message something
    # for the object itself, so that a flood of tiny frames is bounded too.
    return 256 + (len(msg.payload) if isinstance(msg, Data) else 0)


def _unpack_header(raw: bytes) -> dict[str, Any]:
    try:
        header = msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            use_list=True,
        )
    except Exception as e:  # noqa: BLE001 - msgpack raises many types for bad input; all mean the same here
        raise RemoteProtocolError(f"undecodable header: {type(e).__name__}", code=ErrorCode.BAD_FRAME) from None
    if type(header) is not dict:
        raise RemoteProtocolError("header must be a map", code=ErrorCode.BAD_FRAME)
    return header
