"""The seed image's metadata documents (protocol/seed.py): the shipper's spool (image.json) and the
receiver's record (seed/offer.json) in one format, bytes or a map in, facts out, checked as a SEED_OFFER
header is checked; a document this code did not write is refused with SeedDocError."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol.digest import segment_digest
from protocol.seed import Held, ImageFacts, SeedDocError, SeedOffer

IMAGE = "0123456789abcdef0123456789abcdef"
DIGEST = segment_digest(b"an image")
FACTS = ImageFacts(IMAGE, 10240, DIGEST, "E00000000000000C.log", "E00000000000000B.log", 4096)
OFFER = SeedOffer.of("db1", FACTS, 0)

# What the two ends wrote by hand before this format moved here: a spool of either stays readable.
SHIPPER_DOC = {
    "image": IMAGE,
    "size": 10240,
    "xxh": DIGEST.hex(),
    "first": "E00000000000000C.log",
    "after": "E00000000000000B.log",
    "asize": 4096,
    "made": 1764700000.5,
}
RECEIVER_DOC = {**{k: v for k, v in SHIPPER_DOC.items() if k != "made"}, "stream": "db1", "durable": 8192}


def test_facts_read_back_what_they_wrote_from_bytes_text_and_a_map() -> None:
    doc = FACTS.to_doc()
    assert ImageFacts.from_doc(doc) == FACTS
    assert ImageFacts.from_doc(json.dumps(doc)) == FACTS
    assert ImageFacts.from_doc(json.dumps(doc).encode()) == FACTS


def test_the_documents_both_ends_wrote_before_still_load() -> None:
    assert ImageFacts.from_doc(json.dumps(SHIPPER_DOC).encode()) == FACTS
    held = Held.from_doc(json.dumps(RECEIVER_DOC).encode())
    assert held == Held(OFFER, 8192)
    assert json.loads(held.to_doc()) == RECEIVER_DOC


def test_an_image_before_any_segment_round_trips() -> None:
    empty = ImageFacts(IMAGE, 0, segment_digest(b""), "", "", 0)
    assert ImageFacts.from_doc(empty.to_doc()) == empty
    assert Held.from_doc(Held(SeedOffer.of("db1", empty, 0), 0).to_doc()).offer.facts == empty


def test_an_offer_and_its_facts_convert_both_ways() -> None:
    offer = SeedOffer.of("db1", FACTS, 512)
    assert offer.facts == FACTS and offer.start == 512 and offer.stream == "db1"
    assert SeedOffer.from_header(offer.to_header()) == offer


def spoiled(base: dict[str, Any] = SHIPPER_DOC, **change: Any) -> dict[str, Any]:
    """A copy of ``base`` with fields changed (``KeyError``: the field removed)."""
    doc = dict(base)
    for key, value in change.items():
        if value is KeyError:
            del doc[key]
        else:
            doc[key] = value
    return doc


@pytest.mark.parametrize(
    "doc, error",
    [
        (b"{not json", "seed image document"),
        (b"[1, 2]", "must be a map"),
        (spoiled(image=KeyError), "missing field 'image'"),
        (spoiled(image="../etc/passwd"), "not an image id"),
        (spoiled(size="10240"), "'size' must be an integer"),
        (spoiled(size=True), "'size' must be an integer"),
        (spoiled(size=-1), "'size' must be an integer"),
        (spoiled(size=1 << 60), "'size' must be an integer"),
        (spoiled(xxh="00" * 15), "32 hex digits"),
        (spoiled(xxh="zz" * 16), "32 hex digits"),
        (spoiled(xxh=list(DIGEST)), "'xxh' must be a string"),
        (spoiled(first="a/b"), "segment"),
        (spoiled(after="E00000000000000D.log"), "after must sort before first"),
        (spoiled(first="", after="E0.log"), "after must sort before first"),
        (spoiled(asize=4096.0), "'asize' must be an integer"),
    ],
)
def test_a_bad_image_document_is_refused(doc: Any, error: str) -> None:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(SeedDocError, match=error):
        ImageFacts.from_doc(data)


@pytest.mark.parametrize(
    "doc, error",
    [
        (spoiled(RECEIVER_DOC, stream=KeyError), "missing field 'stream'"),
        (spoiled(RECEIVER_DOC, stream="../db"), "stream"),
        (spoiled(RECEIVER_DOC, durable=KeyError), "missing field 'durable'"),
        (spoiled(RECEIVER_DOC, durable=10241), "'durable' must be an integer in \\[0, 10240\\]"),
        (spoiled(RECEIVER_DOC, durable="8192"), "'durable' must be an integer"),
        (spoiled(RECEIVER_DOC, xxh=DIGEST.hex()[:-1]), "32 hex digits"),
    ],
)
def test_a_bad_receiver_record_is_refused(doc: dict[str, Any], error: str) -> None:
    with pytest.raises(SeedDocError, match=error):
        Held.from_doc(json.dumps(doc).encode())
