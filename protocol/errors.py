"""The one error hierarchy of the logship protocol.

Every problem the protocol core finds is a ``ProtocolError``. ``RemoteProtocolError`` means the peer
broke the rules (its bytes are bad); ``LocalProtocolError`` means we tried to do something the
protocol forbids. Each error carries a stable ``code`` that travels in ERROR frames.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Every code an ERROR frame can carry; the value is what travels on the wire."""

    PROTOCOL = "protocol"
    """Some other rule of the protocol was broken."""
    BAD_FRAME = "bad-frame"
    """A frame or a field is malformed: missing, of the wrong type, out of range."""
    BAD_TYPE = "bad-type"
    """A frame type that is unknown, or not allowed at this point of the session."""
    TOO_LARGE = "too-large"
    """A header or payload length over the decoder's limits."""
    TRUNCATED = "truncated"
    """The connection closed in the middle of a frame."""
    BAD_NAME = "bad-name"
    """A stream or segment name that breaks the naming rules."""
    BAD_STREAM = "bad-stream"
    """A frame for a stream this session did not name in HELLO."""
    BAD_POSITION = "bad-position"
    """DATA or SEAL not at the next expected position."""
    BAD_SIZE = "bad-size"
    """A SEAL whose size disagrees with what was received."""
    BAD_DIGEST = "bad-digest"
    """A chunk, segment, ACK or NACK digest did not match."""
    BAD_ENCODING = "bad-encoding"
    """A compressed payload that was not agreed, or does not decode to what its header says."""
    AUTH = "auth"
    """The peer could not prove it holds the stream's secret."""
    BAD_MAC = "bad-mac"
    """A frame after the handshake failed its tag or payload MAC: forged, damaged, replayed or reordered."""
    VERSION = "version"
    """No protocol version both ends speak."""
    FAILED = "failed"
    """The stream's copy is Failed at the receiver: it accepts nothing until an operator acts."""
    NO_SPACE = "no-space"
    """The receiver's disk is full (or below its ``min_free``): back off and try again later (transient)."""
    STORAGE_RETRY = "storage-retry"
    """A write or fsync of the receiver's failed in a way that can be redone (EIO and kin): it dropped
    what it had not acknowledged; back off and send it again (transient)."""
    ANOTHER_SHIPPER = "another-shipper"
    """Another live shipper ships this stream to this receiver: back off while it does (transient)."""
    BUSY = "busy"
    """The receiver has ``max_unauthenticated`` connections in their handshake already and takes no more
    for now: sent untagged in place of the CHALLENGE, then it closes; back off briefly (transient)."""
    REJOINING = "rejoining"
    """The copy is a former primary's, of an older epoch than the shipper's: it has not rejoined as a
    standby yet (its HA agent does that); reconnect later (transient)."""


class ProtocolError(Exception):
    """Base of every protocol error; ``code`` is a short machine-readable tag."""

    code: str = ErrorCode.PROTOCOL

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class RemoteProtocolError(ProtocolError):
    """The peer sent something that violates the protocol."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something that violates the protocol."""


class FrameTooLarge(RemoteProtocolError):
    """A length prefix or payload length exceeds the configured limit."""

    code = ErrorCode.TOO_LARGE


class AuthenticationFailed(RemoteProtocolError):
    """The peer could not prove it holds the shared secret."""

    code = ErrorCode.AUTH


class VersionMismatch(RemoteProtocolError):
    """No protocol version is supported by both ends."""

    code = ErrorCode.VERSION
