"""Frame authentication after the handshake: session keys, per-direction sequence numbers, tags. No I/O.

Once WELCOME is sent (receiver) or accepted (shipper), every frame in both directions carries a tag:
HMAC-SHA256 under a session key, truncated to 16 bytes, over the frame's sequence number in its
direction and its encoded header (length prefix included). The sequence number is not sent: both
ends count, so a frame that is replayed, dropped, reinserted or reordered fails its tag like a forged
one. The header binds DATA's ``xxh`` and, when the payload MAC is agreed, its ``pmac``: an HMAC of the
payload bytes as they travel.

Session keys are derived per connection, stream and direction from the stream's secret, both nonces
and both node ids, so a key never serves two connections. Frames that name no stream (HEARTBEAT,
ERROR) use a connection key derived from every stream key of the session.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.names import check_stream_name

TAG_SIZE = 16
"""Bytes of the tag after each authenticated frame's header."""
PAYLOAD_MAC = "pmac"
"""The feature both ends list to agree on the payload MAC, and the DATA header field that carries it."""
TO_RECEIVER = b"shipper->receiver"
TO_SHIPPER = b"receiver->shipper"
_DOMAIN = b"logship/3"


class FrameAuthFailed(RemoteProtocolError):
    """A frame's tag or payload MAC did not verify: forged, damaged, replayed or out of order."""

    code = ErrorCode.BAD_MAC


def session_key(
    secret: bytes,
    direction: bytes,
    receiver_nonce: bytes,
    shipper_nonce: bytes,
    receiver_node: str,
    shipper_node: str,
    stream: str,
) -> bytes:
    """Return the 32-byte key that authenticates ``stream``'s frames going in ``direction``."""
    info = b"|".join(
        (
            _DOMAIN,
            b"session",
            direction,
            receiver_nonce,
            shipper_nonce,
            receiver_node.encode(),
            shipper_node.encode(),
            stream.encode(),
        )
    )
    return hmac.new(secret, info, hashlib.sha256).digest()


def connection_key(stream_keys: Mapping[str, bytes], direction: bytes) -> bytes:
    """Return the key for frames that name no stream: one that needs every stream key to make."""
    material = b"".join(stream_keys[name] for name in sorted(stream_keys))
    return hmac.new(material, b"|".join((_DOMAIN, b"connection", direction)), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class DirectionKeys:
    """The keys of one direction of one connection."""

    streams: Mapping[str, bytes]
    """Per stream: the key of its DATA, SEAL, ACK, NACK and FENCED frames."""
    connection: bytes
    """The key of HEARTBEAT and ERROR."""

    @classmethod
    def derive(
        cls,
        secrets: Mapping[str, bytes],
        direction: bytes,
        receiver_nonce: bytes,
        shipper_nonce: bytes,
        receiver_node: str,
        shipper_node: str,
    ) -> DirectionKeys:
        """Derive the keys of ``direction`` for every stream in ``secrets``."""
        streams = {
            name: session_key(secret, direction, receiver_nonce, shipper_nonce, receiver_node, shipper_node, name)
            for name, secret in secrets.items()
        }
        return cls(streams, connection_key(streams, direction))

    def key_for(self, stream: object) -> bytes:
        """Return the key of a frame naming ``stream`` (None: a frame without a stream).

        Raises RemoteProtocolError if the frame names a stream this session does not carry (bad-stream)
        or a name no stream can have (bad-name).
        """
        if stream is None:
            return self.connection
        # A malformed name is refused as such (bad-name) before it is looked up.
        key = self.streams.get(check_stream_name(stream))
        if key is None:
            raise RemoteProtocolError(
                f"frame for stream {stream!r} not named in the handshake", code=ErrorCode.BAD_STREAM
            )
        return key


def frame_tag(key: bytes, sequence: int, head: bytes | bytearray | memoryview) -> bytes:
    """Return the tag of the frame numbered ``sequence`` whose length prefix and header are ``head``."""
    mac = hmac.new(key, sequence.to_bytes(8, "big"), hashlib.sha256)
    mac.update(head)
    return mac.digest()[:TAG_SIZE]


def payload_mac(key: bytes, payload: bytes | bytearray | memoryview) -> bytes:
    """Return the MAC of a DATA payload as it travels (compressed, if it is), under its stream's key."""
    return hmac.new(key, payload, hashlib.sha256).digest()[:TAG_SIZE]


class FrameSealer:
    """Tag outgoing frames, numbering them in the order they go on the wire."""

    def __init__(self, keys: DirectionKeys, payload_mac: bool = False) -> None:
        self.keys = keys
        self.payload_mac = payload_mac
        """Whether DATA carries ``pmac`` (agreed in the handshake)."""
        self.sequence = 0

    def tag(self, stream: str | None, head: bytes) -> bytes:
        """Return the tag for the next frame (``head``: its length prefix and header)."""
        tag = frame_tag(self.keys.key_for(stream), self.sequence, head)
        self.sequence += 1
        return tag

    def payload_mac_for(self, stream: str, payload: bytes | bytearray | memoryview) -> bytes:
        """Return the ``pmac`` of a DATA payload of ``stream`` (may run in a worker thread)."""
        return payload_mac(self.keys.key_for(stream), payload)


class FrameOpener:
    """Check incoming frames' tags in sequence; a frame that fails changes nothing but the error."""

    def __init__(self, keys: DirectionKeys, payload_mac: bool = False) -> None:
        self.keys = keys
        self.payload_mac = payload_mac
        self.sequence = 0
        self.refused = 0
        """Frames refused (what status and the log count)."""

    def check(self, stream: object, head: bytes | bytearray | memoryview, tag: bytes | bytearray) -> None:
        """Accept the next frame or raise FrameAuthFailed (RemoteProtocolError for an unknown stream)."""
        try:
            want = frame_tag(self.keys.key_for(stream), self.sequence, head)
        except RemoteProtocolError:
            self.refused += 1
            raise
        if not hmac.compare_digest(want, bytes(tag)):
            self.refused += 1
            raise FrameAuthFailed(f"frame {self.sequence} fails its tag: forged, damaged, replayed or out of order")
        self.sequence += 1

    def check_payload(self, stream: str, payload: bytes | bytearray | memoryview, mac: object) -> None:
        """Accept a DATA payload whose ``pmac`` verifies, or raise FrameAuthFailed."""
        if not isinstance(mac, bytes) or len(mac) != TAG_SIZE:
            self._refuse_payload()
            raise FrameAuthFailed("DATA without a payload MAC, which this session agreed on")
        if not hmac.compare_digest(payload_mac(self.keys.key_for(stream), payload), mac):
            self._refuse_payload()
            raise FrameAuthFailed("DATA payload fails its MAC")

    def _refuse_payload(self) -> None:
        # The header's tag was accepted (and counted) before the payload came: the frame as a whole is
        # refused, so it must not count either.
        self.refused += 1
        self.sequence -= 1
