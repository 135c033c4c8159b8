"""The history (protocol/history.py): the rewind decision as a table, its wire and file forms, the HELLO
proof binding it, and the content-chained manifest (receiver/manifest.py)."""

from __future__ import annotations

import os

import pytest

from protocol.errors import AuthenticationFailed, RemoteProtocolError
from protocol.history import Fork, History, Refuse, Resume, Rewind, decide, parse_position
from protocol.messages import START, Hello, Position, StreamClaim
from protocol.session import ReceiverHandshake, ShipperHandshake
from receiver.manifest import Installed, chain_problem, record_digest

D1 = b"\x01" * 16
D2 = b"\x02" * 16
F1 = Fork(1, Position("E41", 1000), D1)
F2 = Fork(2, Position("E45", 500), D2)
H0 = History()
H1 = History((F1,))
H12 = History((F1, F2))
OTHER1 = History((Fork(1, Position("E40", 1000), D1),))
UNKNOWN1 = History((Fork(1, None),))

TABLE = [
    # (shipper, copy's history, copy position, replayed, expected decision)
    ("same epoch, no forks", H0, H0, Position("E50", 7), START, Resume()),
    ("copy behind the fork", H1, H0, Position("E40", 300), START, Resume()),
    ("copy in the fork segment, short of it", H1, H0, Position("E41", 999), START, Resume()),
    ("copy exactly at the fork", H1, H0, Position("E41", 1000), START, Resume()),
    ("copy one byte past the fork", H1, H0, Position("E41", 1001), START, Rewind(F1)),
    ("copy whole segments past", H1, H0, Position("E43", 20), START, Rewind(F1)),
    ("copy already on the shipper's epoch", H1, H1, Position("E60", 1), START, Resume()),
    ("two epochs ahead, copy of epoch 0", H12, H0, Position("E46", 0), START, Rewind(F1)),
    ("two epochs ahead, copy of epoch 1 past the second fork", H12, H1, Position("E46", 0), START, Rewind(F2)),
    ("two epochs ahead, copy of epoch 1 before the second fork", H12, H1, Position("E45", 10), START, Resume()),
    ("replayed past the fork", H1, H0, Position("E43", 20), Position("E42", 9), Refuse),
    ("replayed up to the fork only", H1, H0, Position("E43", 20), Position("E41", 1000), Rewind(F1)),
    ("two histories of epoch 1", OTHER1, H1, Position("E43", 20), START, Refuse),
    ("copy's epoch newer than the shipper's", H0, H1, Position("E43", 20), START, Refuse),
    ("shipper lacks the copy's epoch", History((F2,)), H1, Position("E43", 20), START, Refuse),
    ("shipper claims an epoch without its fork", UNKNOWN1, H0, Position("E43", 20), START, Resume()),
    ("copy of an unknown fork meets the known one", H1, UNKNOWN1, Position("E43", 20), START, Resume()),
    ("fork at START rewinds everything", History((Fork(1, START),)), H0, Position("E1", 5), START, None),
]


@pytest.mark.parametrize(("what", "shipper", "copy", "position", "replayed", "want"), TABLE, ids=[t[0] for t in TABLE])
def test_the_rewind_decision(
    what: str, shipper: History, copy: History, position: Position, replayed: Position, want: object
) -> None:
    got = decide(shipper, copy, position, replayed)
    if want is Refuse:
        assert isinstance(got, Refuse) and got.reason, got
    elif want is None:
        assert got == Rewind(shipper.forks[0])
    else:
        assert got == want


def test_no_rewind_turns_a_rewind_into_a_refusal_and_leaves_resumes_alone() -> None:
    got = decide(H1, H0, Position("E43", 20), rewind=False)
    assert isinstance(got, Refuse) and "--no-rewind" in got.reason
    assert decide(H1, H0, Position("E40", 20), rewind=False) == Resume()


def test_a_fenced_fork_must_match_the_shippers() -> None:
    assert isinstance(decide(H1, H0, Position("E40", 1), expected={1: Position("E39", 5)}), Refuse)
    assert decide(H1, H0, Position("E40", 1), expected={1: F1.position}) == Resume()  # type: ignore[dict-item]


def test_history_forms_round_trip_and_bad_ones_are_refused() -> None:
    assert History.from_json(H12.to_json()) == H12
    assert History.from_wire(H12.to_wire()) == H12
    assert History.from_wire(UNKNOWN1.to_wire()) == UNKNOWN1
    with pytest.raises(ValueError):
        History((F2, F1))  # epochs must grow
    with pytest.raises(ValueError):
        History((Fork(1, Position("E50", 1)), Fork(2, Position("E40", 1))))  # forks never go back
    with pytest.raises(RemoteProtocolError):
        History.from_wire(((2, "E45", 5, D2), (1, "E41", 5, D1)))
    for bad in ([[1, "E1", 0]], [["1", "E1", 0, b""]], [[1, "../x", 0, b""]], [[1, "E1", 0, b"short"]], "x"):
        with pytest.raises(RemoteProtocolError):
            StreamClaim.from_map({"stream": "db1", "epoch": 1, "proof": b"p" * 32, "history": bad})
    assert parse_position("E41@1000") == Position("E41", 1000)
    with pytest.raises(ValueError):
        parse_position("E41")


def _pair(history: History, epoch: int) -> tuple[ReceiverHandshake, Hello]:
    secrets = {"db1": b"s" * 32}
    receiver = ReceiverHandshake("r", os.urandom(32), secrets.get)
    shipper = ShipperHandshake("s", os.urandom(32), secrets, {"db1": epoch}, histories={"db1": history})
    return receiver, shipper.receive_challenge(receiver.challenge())


def test_the_history_travels_in_hello_bound_by_the_proof() -> None:
    receiver, hello = _pair(H12, 2)
    (accepted,) = receiver.receive_hello(hello)
    assert accepted.history == H12 and accepted.epoch == 2
    # A relay that rewrites the history (another fork) breaks the proof.
    receiver, hello = _pair(H12, 2)
    (claim,) = hello.streams
    forged = StreamClaim("db1", 2, claim.proof, (F1.to_wire(), Fork(2, Position("E44", 1), D2).to_wire()))
    with pytest.raises(AuthenticationFailed):
        receiver.receive_hello(Hello(hello.version, hello.node, hello.nonce, (forged,), hello.features))
    # Without a history the claim is what older shippers send: no "history" key on the wire.
    receiver, hello = _pair(H0, 0)
    assert "history" not in hello.streams[0].to_map()
    assert receiver.receive_hello(hello)[0].history == H0


def test_a_history_beyond_the_claimed_epoch_is_refused() -> None:
    receiver, hello = _pair(H12, 1)
    with pytest.raises(RemoteProtocolError):
        receiver.receive_hello(hello)


def _chain(*names: str, sizes: int = 10) -> list[Installed]:
    out: list[Installed] = []
    for name in names:
        before = out[-1] if out else None
        pdx = record_digest(before) if before else b""
        out.append(Installed(name, sizes, bytes(16), before.name if before else "", 1.0, pdx))
    return out


def test_the_manifest_chain_detects_a_record_of_another_history() -> None:
    a = _chain("E40", "E41", "E42", "E43")
    assert chain_problem(a) == ""
    # B's E42' has the same name and predecessor name as A's E42, but not A's E41 record before it.
    b41 = Installed("E41", 10, b"\x07" * 16, "E40", 2.0, record_digest(a[0]))
    b42 = Installed("E42", 10, b"\x08" * 16, "E41", 2.0, record_digest(b41))
    assert "another history" in chain_problem([a[0], a[1], b42])
    assert chain_problem([a[0], b41, b42]) == ""
    # A gap by name is one too; records written before the chain (no pdx) are checked by name only.
    assert chain_problem([a[0], a[2]])
    assert chain_problem([a[0], a[1], b42], names=False)
    legacy = [Installed("E1", 5, bytes(16), "", 1.0), Installed("E2", 5, bytes(16), "E1", 1.0)]
    assert chain_problem(legacy) == ""
    assert Installed.from_line(legacy[0].to_line()) == legacy[0]
    assert b"pdx" not in legacy[0].to_line()
    assert Installed.from_line(a[2].to_line()) == a[2]
