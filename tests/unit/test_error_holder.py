"""ERROR's optional ``holder`` (the sid of the shipper holding the stream, with ``another-shipper``):
bytes in, message out; bounded like every field; absent as older receivers send it; and what the
shipper makes of it (its own process or another)."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.fields import MAX_SID
from protocol.framing import NEED_DATA, FrameDecoder, encode
from protocol.handshake import same_process
from protocol.messages import Error
from shipper.handshake import SHIPPER_ID, refusal, sender_id
from tests.helpers.frames import raw_frame

TEXT = "stream db1: another shipper (node n1, id 7.ab/1, addr 127.0.0.1:1000, since t) is shipping this stream"


def decode(data: bytes) -> Error:
    decoder = FrameDecoder()
    decoder.receive_data(data)
    msg = decoder.next_message()
    assert decoder.next_message() is NEED_DATA
    assert isinstance(msg, Error), msg
    return msg


def header(**changes: Any) -> dict[str, Any]:
    h: dict[str, Any] = {"t": "ERROR", "code": "another-shipper", "text": TEXT}
    h.update(changes)
    return h


@pytest.mark.parametrize("holder", ["7.ab/1", "1234567.0123abcd/12", "x" * MAX_SID])
def test_holder_from_the_wire(holder: str) -> None:
    msg = decode(raw_frame(header(holder=holder)))
    assert msg == Error("another-shipper", TEXT, holder)
    assert decode(encode(msg)) == msg


def test_holder_byte_by_byte_and_with_trailing_bytes() -> None:
    msg = Error("another-shipper", TEXT, "7.ab/1")
    frame = encode(msg)
    decoder = FrameDecoder()
    for i in range(len(frame)):
        assert decoder.next_message() is NEED_DATA
        decoder.receive_data(frame[i : i + 1])
    decoder.receive_data(frame)  # the next frame follows at once
    assert decoder.next_message() == msg
    assert decoder.next_message() == msg
    assert decoder.next_message() is NEED_DATA


def test_absent_as_older_receivers_send_it() -> None:
    msg = decode(raw_frame(header()))
    assert msg.holder == ""
    assert "holder" not in Error("another-shipper", TEXT).to_header(), "not on the wire when empty"


@pytest.mark.parametrize(
    "holder",
    ["", "x" * (MAX_SID + 1), 7, b"7.ab/1", None, ["7.ab/1"], "7.ab/1\n", "7.ab\x00/1"],
    ids=["empty", "too-long", "int", "bytes", "nil", "list", "newline", "nul"],
)
def test_bad_holders_are_refused(holder: object) -> None:
    with pytest.raises(RemoteProtocolError, match="holder") as info:
        decode(raw_frame(header(holder=holder)))
    assert info.value.code == ErrorCode.BAD_FRAME


def test_the_shipper_tells_its_own_process_by_the_holder_not_the_text() -> None:
    mine, theirs = sender_id(), f"{SHIPPER_ID}x/1"
    assert same_process(refusal(Error("another-shipper", TEXT, mine), "db1").holder, sender_id())
    assert not same_process(refusal(Error("another-shipper", TEXT, theirs), "db1").holder, sender_id())
    # An older receiver: the text may even name this process, the shipper does not guess from it.
    older = refusal(Error("another-shipper", f"another shipper (id {mine}, addr x) is shipping"), "db1")
    assert older.holder == "" and not same_process(older.holder, sender_id())
    assert not older.permanent and older.code == "another-shipper"
