"""The reseed transfer: a base image sent over an authenticated connection, resumable at the receiver's
last durable offset. Messages and both ends' pure state machines; no I/O.

A WELCOME whose stream entry says ``seed`` (bound by the receiver's proof) turns the connection into a
seed transfer for that stream:

```
receiver                                           shipper
   SEED_WANT(image it holds part of or "", durable offset)  --->
                                   <---  SEED_OFFER(image, size, xxh3_128, first, after, start)
                                   <---  DATA(seg = "seed-" + image, off, xxh3_64) + payload ...
   SEED_ACK(image, durable offset)  --->        (after each fsync; frees the shipper's window)
   SEED_ACK(image, size, done)      --->        (whole-image digest checked, image installed)
```
The image chunks travel as ordinary DATA frames under a name no segment can collide with inside this
connection (the receiver routes every DATA of a seeding connection here, never to the copy's log), so
they are checked, compressed, MAC'd and rate-limited like segments. ``start`` is the receiver's offset
when the shipper still has that image, else 0: a cut or a kill -9 of either end resumes the same image.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from protocol import fields
from protocol.digest import chunk_digest
from protocol.errors import ErrorCode, RemoteProtocolError

FEATURE = "seed"
"""The HELLO feature of a shipper that can send a base image (has a ``seed_command``)."""
IMAGE_PREFIX = "seed-"
"""DATA frames of a seed transfer name the segment ``seed-<image id>``."""
_IMAGE_ID = re.compile(r"[0-9a-f]{8,64}")
MAX_IMAGE = 1 << 50
"""The largest image size (1 PiB) a receiver believes an offer of."""
_T = TypeVar("_T")


def image_id(h: Mapping[str, Any], key: str = "image", allow_empty: bool = False) -> str:
    """Return a checked image id (hex, 8-64 characters); raises RemoteProtocolError."""
    value = fields.text(h, key, 64)
    if value == "" and allow_empty:
        return value
    if _IMAGE_ID.fullmatch(value) is None:
        raise RemoteProtocolError(f"{key} {value!r} is not an image id", code=ErrorCode.BAD_NAME)
    return value


@dataclass(frozen=True, slots=True)
class SeedWant:
    """Receiver -> shipper: the copy is Seeding; it holds ``offset`` durable bytes of ``image`` ("" none)."""

    TYPE: ClassVar[str] = "SEED_WANT"
    stream: str
    image: str
    offset: int

    def to_header(self) -> dict[str, Any]:
        return {"t": self.TYPE, "stream": self.stream, "image": self.image, "off": self.offset}

    @classmethod
    def from_header(cls, h: Mapping[str, Any]) -> SeedWant:
        image = image_id(h, allow_empty=True)
        offset = fields.integer(h, "off", 0, MAX_IMAGE)
        if not image and offset:
            raise RemoteProtocolError("SEED_WANT of no image at a non-zero offset", code=ErrorCode.BAD_FRAME)
        return cls(fields.stream(h), image, offset)


class SeedDocError(ValueError):
    """A seed image's metadata document (either end's spool) is not one this code wrote: not JSON, a
    field missing, of the wrong type or size, or a name that breaks the naming rules."""


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What describes one image, the same on the wire (SEED_OFFER) and in both ends' spools."""

    image: str
    size: int
    digest: bytes
    """xxh3_128 of the whole image."""
    first: str
    """The first segment that must follow the image ("" when the source had none yet)."""
    after: str
    """The source's segment just before ``first`` ("" when none)."""
    after_size: int
    """That segment's size on the source (0 when none)."""

    def to_doc(self) -> dict[str, Any]:
        """The JSON-ready document of these facts (the digest as hex); ``from_doc`` reads it back."""
        doc = {"image": self.image, "size": self.size, "xxh": self.digest.hex(), "first": self.first}
        return {**doc, "after": self.after, "asize": self.after_size}

    @classmethod
    def from_doc(cls, doc: bytes | str | Mapping[str, Any]) -> ImageFacts:
        """Return the facts of a document (JSON bytes or a decoded map); other keys are left to the
        caller. Raises SeedDocError, checking the fields as a SEED_OFFER's header is checked."""
        return _from_doc(doc, _facts)


def _check_order(first: str, after: str) -> None:
    """``after`` sorts before ``first``, and is "" when ``first`` is."""
    if (after >= first) if first else bool(after):
        raise RemoteProtocolError("after must sort before first", code=ErrorCode.BAD_FRAME)


def _facts(h: Mapping[str, Any]) -> ImageFacts:
    xxh = fields.text(h, "xxh", 32)
    try:
        digest = bytes.fromhex(xxh)
    except ValueError:
        digest = b""
    if len(digest) != 16:
        raise RemoteProtocolError("field 'xxh' must be 32 hex digits", code=ErrorCode.BAD_FRAME)
    facts = ImageFacts(
        image_id(h),
        fields.integer(h, "size", 0, MAX_IMAGE),
        digest,
        fields.segment(h, "first", allow_empty=True),
        fields.segment(h, "after", allow_empty=True),
        fields.integer(h, "asize"),
    )
    _check_order(facts.first, facts.after)
    return facts


def _from_doc(doc: bytes | str | Mapping[str, Any], read: Callable[[Mapping[str, Any]], _T]) -> _T:
    """Decode ``doc`` (JSON text or a map) and ``read(map)`` it; a field error becomes SeedDocError."""
    try:
        h = json.loads(doc) if isinstance(doc, bytes | str) else doc
        return read(fields.mapping(h, "a seed image document"))
    except (ValueError, RemoteProtocolError) as e:
        raise SeedDocError(f"seed image document: {e}") from None


@dataclass(frozen=True, slots=True)
class SeedOffer:
    """Shipper -> receiver: the image, its size and whole-image digest, where the log continues after it,
    and the offset its DATA starts at."""

    TYPE: ClassVar[str] = "SEED_OFFER"
    stream: str
    image: str
    size: int
    digest: bytes
    """xxh3_128 of the whole image."""
    first: str
    """The first segment that must follow the image (replayed after it); "" when the source had none
    yet (then ``after`` is "" too: the copy takes the stream from its start)."""
    after: str
    """The source's segment just before ``first`` ("" when none): where the copy's chain starts."""
    after_size: int
    """That segment's size on the source (0 when none): the copy's resume position is (after, after_size)."""
    start: int

    def to_header(self) -> dict[str, Any]:
        return {
            "t": self.TYPE,
            "stream": self.stream,
            "image": self.image,
            "size": self.size,
            "xxh": self.digest,
            "first": self.first,
            "after": self.after,
            "asize": self.after_size,
            "start": self.start,
        }

    @classmethod
    def from_header(cls, h: Mapping[str, Any]) -> SeedOffer:
        offer = cls(
            fields.stream(h),
            image_id(h),
            fields.integer(h, "size", 0, MAX_IMAGE),
            fields.octets(h, "xxh", 16),
            fields.segment(h, "first", allow_empty=True),
            fields.segment(h, "after", allow_empty=True),
            fields.integer(h, "asize"),
            fields.integer(h, "start", 0, MAX_IMAGE),
        )
        if offer.start > offer.size:
            raise RemoteProtocolError("SEED_OFFER starts past the image's end", code=ErrorCode.BAD_POSITION)
        try:
            _check_order(offer.first, offer.after)
        except RemoteProtocolError as e:
            raise RemoteProtocolError(f"SEED_OFFER: {e}", code=e.code) from None
        return offer

    @classmethod
    def of(cls, stream: str, facts: ImageFacts, start: int) -> SeedOffer:
        """The offer of the image ``facts`` describes, its DATA starting at ``start``."""
        return cls(stream, facts.image, facts.size, facts.digest, facts.first, facts.after, facts.after_size, start)

    @property
    def facts(self) -> ImageFacts:
        """What it says of the image (everything but the stream and where its DATA starts)."""
        return ImageFacts(self.image, self.size, self.digest, self.first, self.after, self.after_size)

    @property
    def segment(self) -> str:
        """The name its DATA frames carry."""
        return IMAGE_PREFIX + self.image


@dataclass(frozen=True, slots=True)
class SeedAck:
    """Receiver -> shipper: ``offset`` bytes of ``image`` are durable; ``done``: verified and installed."""

    TYPE: ClassVar[str] = "SEED_ACK"
    stream: str
    image: str
    offset: int
    done: bool = False

    def to_header(self) -> dict[str, Any]:
        return {"t": self.TYPE, "stream": self.stream, "image": self.image, "off": self.offset, "done": self.done}

    @classmethod
    def from_header(cls, h: Mapping[str, Any]) -> SeedAck:
        return cls(fields.stream(h), image_id(h), fields.integer(h, "off", 0, MAX_IMAGE), fields.boolean(h, "done"))


SEED_MESSAGES = (SeedWant, SeedOffer, SeedAck)


class Chunk(Protocol):
    """What a chunk of the image is to the sink: a DATA message (protocol/messages.py, which imports
    this module to register the messages above, so it is not imported here)."""

    stream: str
    segment: str
    offset: int
    digest: int
    payload: bytes


# -- the receiving end (pure) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Held:
    """What a receiver holds of an image on disk (its partial file and the offer it came with)."""

    offer: SeedOffer
    durable: int
    """Bytes of the partial that are fsynced (and chunk-verified when written)."""

    def to_doc(self) -> bytes:
        """The receiver's record of it (seed/offer.json): the offer's facts, its stream, ``durable``."""
        doc = {**self.offer.facts.to_doc(), "stream": self.offer.stream, "durable": self.durable}
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_doc(cls, doc: bytes | str | Mapping[str, Any]) -> Held:
        """Read a record ``to_doc`` wrote (its offer's ``start`` is 0); raises SeedDocError."""
        return _from_doc(doc, _held)


def _held(h: Mapping[str, Any]) -> Held:
    facts = _facts(h)
    return Held(SeedOffer.of(fields.stream(h), facts, 0), fields.integer(h, "durable", 0, facts.size))


class SeedSink:
    """The receiver's side of one transfer: which offer it takes, where each chunk must start.

    Methods raise RemoteProtocolError for a peer that breaks the rules (the caller sends ERROR, closes,
    and keeps what is durable); they never touch a file.
    """

    def __init__(self, stream: str, held: Held | None) -> None:
        self.stream = stream
        self.held = held
        self.offer: SeedOffer | None = None
        self.expected = 0
        """Where the next chunk must start (accepted bytes, durable or not yet)."""

    def want(self) -> SeedWant:
        """The first frame of the transfer: what this receiver already holds."""
        if self.held is None:
            return SeedWant(self.stream, "", 0)
        return SeedWant(self.stream, self.held.offer.image, self.held.durable)

    def on_offer(self, offer: SeedOffer) -> bool:
        """Take the shipper's offer; return True if the held partial must be dropped (a new image)."""
        if offer.stream != self.stream or self.offer is not None:
            raise RemoteProtocolError("unexpected SEED_OFFER", code=ErrorCode.BAD_TYPE)
        held = self.held
        same = held is not None and held.offer.image == offer.image
        if same:
            assert held is not None
            if held.offer.facts != offer.facts:
                raise RemoteProtocolError("SEED_OFFER changes a known image", code=ErrorCode.BAD_FRAME)
            if offer.start != held.durable:
                raise RemoteProtocolError(
                    f"SEED_OFFER starts at {offer.start}, the copy holds {held.durable}", code=ErrorCode.BAD_POSITION
                )
        elif offer.start != 0:
            raise RemoteProtocolError("SEED_OFFER of a new image must start at 0", code=ErrorCode.BAD_POSITION)
        self.offer, self.expected = offer, offer.start
        return not same

    def on_data(self, msg: Chunk) -> int:
        """Check one chunk of the image; return the offset it goes to."""
        offer = self.offer
        if offer is None or msg.stream != self.stream or msg.segment != offer.segment:
            raise RemoteProtocolError(f"DATA for {msg.segment!r} during a seed transfer", code=ErrorCode.BAD_POSITION)
        if msg.offset != self.expected:
            raise RemoteProtocolError(
                f"image chunk at {msg.offset}, expected {self.expected}", code=ErrorCode.BAD_POSITION
            )
        if msg.offset + len(msg.payload) > offer.size:
            raise RemoteProtocolError("image chunk past the offered size", code=ErrorCode.BAD_SIZE)
        if chunk_digest(msg.segment, msg.offset, msg.payload) != msg.digest:
            raise RemoteProtocolError(f"image chunk digest mismatch at {msg.offset}", code=ErrorCode.BAD_DIGEST)
        self.expected += len(msg.payload)
        return msg.offset

    @property
    def complete(self) -> bool:
        """Whether every byte of the offered image was accepted."""
        return self.offer is not None and self.expected == self.offer.size


# -- the sending end (pure) ---------------------------------------------------------------------


def start_offset(want: SeedWant, image: str, size: int) -> int:
    """Where the shipper's image ``image`` of ``size`` bytes resumes for a receiver that sent ``want``."""
    if want.image == image and want.offset <= size:
        return want.offset
    return 0


class SeedWindow:
    """The shipper's bytes in flight of one image: sent, acknowledged durable, and the window between."""

    def __init__(self, image: str, size: int, start: int, window: int) -> None:
        self.image = image
        self.size = size
        self.sent = start
        self.acked = start
        self.window = window
        self.done = False

    @property
    def room(self) -> int:
        """Bytes that may be sent now."""
        return max(0, min(self.window - (self.sent - self.acked), self.size - self.sent))

    def on_sent(self, n: int) -> None:
        self.sent += n

    def on_ack(self, ack: SeedAck) -> None:
        """Take an ACK; raises RemoteProtocolError for one of another image, backwards or beyond what was sent."""
        if ack.image != self.image:
            raise RemoteProtocolError("SEED_ACK of another image", code=ErrorCode.BAD_FRAME)
        if ack.offset < self.acked or ack.offset > self.sent:
            raise RemoteProtocolError(
                f"SEED_ACK at {ack.offset} outside {self.acked}..{self.sent}", code=ErrorCode.BAD_POSITION
            )
        if ack.done and ack.offset != self.size:
            raise RemoteProtocolError("SEED_ACK done before the image's end", code=ErrorCode.BAD_POSITION)
        self.acked = ack.offset
        self.done = self.done or ack.done
