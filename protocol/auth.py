"""Frame authentication after the handshake: session keys, per-direction sequence numbers, tags. No I/O.

Once WELCOME is sent (receiver) or accepted (shipper), every frame in both directions carries a tag:
HMAC-SHA256 under a session key, truncated to 16 bytes, over the frame's sequence number in its
direction and its encoded header (length prefix included). The sequence number is not sent: both
ends count, so a frame that is replayed, dropped, reinserted or reordered fails its tag like a forged
one. The header binds DATA's ``xxh`` and, when the payload MAC is agreed, its ``pmac``: a MAC of the
payload bytes as they travel. It is GMAC (AES-256-GCM with the payload as associated data) when both
ends list ``pmac-gmac``, some 12x cheaper per GiB with AES-NI, and HMAC-SHA256 otherwise (older peers).
GMAC's nonce is the frame's sequence number, so a sealer never gives two payloads one sequence number:
a nonce used twice under one key would reveal the authentication key.

Session keys are derived per connection, stream and direction from the stream's secret, both nonces
and both node ids, so a key never serves two connections. Frames that name no stream (HEARTBEAT,
ERROR) use a connection key derived from every stream key of the session.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from protocol.names import check_stream_name

TAG_SIZE = 16
"""Bytes of the tag after each authenticated frame's header."""
PAYLOAD_MAC = "pmac"
"""The feature both ends list to agree on the payload MAC, and the DATA header field that carries it."""
PAYLOAD_MAC_GMAC = "pmac-gmac"
"""The feature both ends list (with ``pmac``) to make ``pmac`` a GMAC tag instead of HMAC-SHA256."""
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


def gmac_key(key: bytes) -> bytes:
    """Return the AES-256 key of GMAC payload MACs under a stream's direction key.

    A key of its own (its own label), so the frame-tag key never serves AES as well.
    """
    return hmac.new(key, b"|".join((_DOMAIN, PAYLOAD_MAC_GMAC.encode())), hashlib.sha256).digest()


def gmac_nonce(sequence: int) -> bytes:
    """Return the 12-byte GCM nonce of the frame numbered ``sequence``: 8 bytes big endian, 4 zero bytes.

    Unique under a key: keys are per connection and direction, and sequence numbers only grow.
    """
    return sequence.to_bytes(8, "big") + bytes(4)


def payload_gmac(aead: AESGCM, sequence: int, payload: bytes | bytearray | memoryview) -> bytes:
    """Return the GMAC of the payload of frame ``sequence``: the tag of AES-GCM over no plaintext."""
    return aead.encrypt(gmac_nonce(sequence), b"", payload)


class _PayloadMacs:
    """The payload MAC of one direction: HMAC-SHA256 or GMAC, with GMAC's AES keys made once per stream."""

    def __init__(self, keys: DirectionKeys, gmac: bool) -> None:
        self.keys = keys
        self.gmac = gmac
        self._aead: dict[str, AESGCM] = {}

    def mac(self, stream: str, sequence: int, payload: bytes | bytearray | memoryview) -> bytes:
        key = self.keys.key_for(stream)
        if not self.gmac:
            return payload_mac(key, payload)
        aead = self._aead.get(stream)
        if aead is None:
            aead = self._aead[stream] = AESGCM(gmac_key(key))
        return payload_gmac(aead, sequence, payload)


class _FrameTags:
    """Frame tags of one direction, each key's HMAC set up once: the SHA-256 states after its inner and
    outer padded key blocks (RFC 2104, as hmac does it inside). A frame then pays two state copies and
    its own bytes; no HMAC object from the key, no Python-level wrapper per frame."""

    def __init__(self, keys: DirectionKeys) -> None:
        self.keys = keys
        self._ready: dict[str | None, tuple[_Hash, _Hash]] = {}

    def tag(self, stream: object, sequence: int, head: bytes | bytearray | memoryview) -> bytes:
        """``frame_tag`` under the key of ``stream``; raises like ``DirectionKeys.key_for``."""
        # Only None and exact str are looked up: a name from the wire may be unhashable (a list), and
        # only names key_for accepted are ever kept.
        ready = self._ready.get(stream) if stream is None or type(stream) is str else None  # type: ignore[arg-type]
        if ready is None:
            ready = self._ready[stream] = _pads(self.keys.key_for(stream))  # type: ignore[index]
        inner = ready[0].copy()
        inner.update(sequence.to_bytes(8, "big"))
        inner.update(head)
        outer = ready[1].copy()
        outer.update(inner.digest())
        return outer.digest()[:TAG_SIZE]


_Hash = Any  # hashlib's SHA-256 object (its type is not public)
_BLOCK = hashlib.sha256().block_size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def _pads(key: bytes) -> tuple[_Hash, _Hash]:
    """The SHA-256 states of HMAC under ``key`` after its inner and outer key blocks."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))


class FrameSealer:
    """Tag outgoing frames, numbering them in the order they go on the wire."""

    def __init__(self, keys: DirectionKeys, payload_mac: bool = False, gmac: bool = False) -> None:
        self.keys = keys
        self.payload_mac = payload_mac
        """Whether DATA carries ``pmac`` (agreed in the handshake)."""
        self.gmac = payload_mac and gmac
        """Whether ``pmac`` is GMAC (both ends listed ``pmac-gmac``) rather than HMAC-SHA256."""
        self._macs = _PayloadMacs(keys, self.gmac)
        self._tags = _FrameTags(keys)
        self.sequence = 0
        self._macked = -1
        """The sequence number of the last payload MAC made: GMAC's nonce, never to serve twice."""
        self._made: tuple[int, str, object, bytes] | None = None
        """A payload MAC made ahead by premac(): (sequence, stream, payload, pmac)."""

    def tag(self, stream: str | None, head: bytes) -> bytes:
        """Return the tag for the next frame (``head``: its length prefix and header)."""
        tag = self._tags.tag(stream, self.sequence, head)
        self.sequence += 1
        return tag

    def payload_mac_for(self, stream: str, payload: bytes | bytearray | memoryview) -> bytes:
        """Return the ``pmac`` of the DATA payload of ``stream`` that the next tagged frame carries.

        Raises LocalProtocolError if a payload MAC was made for this sequence number already and no
        frame was tagged since (e.g. encoding failed after it): with GMAC a second payload under the
        same nonce would give the authentication key away, so the connection must end instead.
        """
        made, self._made = self._made, None
        if made is not None and made[0] == self.sequence and made[1] == stream and made[2] is payload:
            return made[3]
        if self._macked == self.sequence:
            raise LocalProtocolError(f"a payload MAC for frame {self.sequence} was made already; not reusing its nonce")
        self._macked = self.sequence
        return self._macs.mac(stream, self.sequence, payload)

    def premac(self, stream: str, payload: bytes | bytearray | memoryview) -> None:
        """Make the ``pmac`` of the DATA payload that the next tagged frame carries now, before it is encoded.

        The shipper makes it while a mapped chunk's pages come from memory for the first time, so that
        its digests after it read them from the cache: GMAC's arithmetic hides the memory's latency,
        where the digests would wait for it. ``payload_mac_for()`` of that very payload then returns it;
        if another frame was tagged in between, the MAC is made again under the new sequence number
        (the nonce made ahead served once, and its frame's MAC is refused a second one).
        """
        self._made = (self.sequence, stream, payload, self.payload_mac_for(stream, payload))


class FrameOpener:
    """Check incoming frames' tags in sequence; a frame that fails changes nothing but the error."""

    def __init__(self, keys: DirectionKeys, payload_mac: bool = False, gmac: bool = False) -> None:
        self.keys = keys
        self.payload_mac = payload_mac
        self.gmac = payload_mac and gmac
        self._macs = _PayloadMacs(keys, self.gmac)
        self._tags = _FrameTags(keys)
        self.sequence = 0
        self.refused = 0
        """Frames refused (what status and the log count)."""

    def check(self, stream: object, head: bytes | bytearray | memoryview, tag: bytes | bytearray) -> None:
        """Accept the next frame or raise FrameAuthFailed (RemoteProtocolError for an unknown stream)."""
        try:
            want = self._tags.tag(stream, self.sequence, head)
        except RemoteProtocolError:
            self.refused += 1
            raise
        if not hmac.compare_digest(want, tag):
            self.refused += 1
            raise FrameAuthFailed(f"frame {self.sequence} fails its tag: forged, damaged, replayed or out of order")
        self.sequence += 1

    def check_payload(self, stream: str, payload: bytes | bytearray | memoryview, mac: object) -> None:
        """Accept the payload of the DATA whose header ``check`` just accepted if its ``pmac`` verifies,
        or raise FrameAuthFailed."""
        if not isinstance(mac, bytes) or len(mac) != TAG_SIZE:
            self._refuse_payload()
            raise FrameAuthFailed("DATA without a payload MAC, which this session agreed on")
        # The header's frame number: check() counted it already.
        if not hmac.compare_digest(self._macs.mac(stream, self.sequence - 1, payload), mac):
            self._refuse_payload()
            raise FrameAuthFailed("DATA payload fails its MAC")

    def _refuse_payload(self) -> None:
        # The header's tag was accepted (and counted) before the payload came: the frame as a whole is
        # refused, so it must not count either.
        self.refused += 1
        self.sequence -= 1
