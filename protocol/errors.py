"""The one error hierarchy of the logship protocol.

Every problem the protocol core finds is a ``ProtocolError``. ``RemoteProtocolError`` means the peer
broke the rules (its bytes are bad); ``LocalProtocolError`` means we tried to do something the
protocol forbids. Each error carries a stable ``code`` that travels in ERROR frames.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every protocol error; ``code`` is a short machine-readable tag."""

    code: str = "protocol"

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

    code = "too-large"


class AuthenticationFailed(RemoteProtocolError):
    """The peer could not prove it holds the shared secret."""

    code = "auth"


class VersionMismatch(RemoteProtocolError):
    """No protocol version is supported by both ends."""

    code = "version"
