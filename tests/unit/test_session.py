"""Handshake state machines wired to each other through the frame codec, with no socket."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from protocol.errors import (
    AuthenticationFailed,
    LocalProtocolError,
    RemoteProtocolError,
    VersionMismatch,
)
from protocol.messages import (
    START,
    Challenge,
    Data,
    Fenced,
    Heartbeat,
    Hello,
    Message,
    Position,
    StreamClaim,
    StreamResume,
    Welcome,
)
from protocol.session import (
    RECEIVER_MOVES,
    SHIPPER_MOVES,
    VERSIONS,
    Accepted,
    Event,
    HandshakeState,
    Moves,
    ReceiverHandshake,
    ShipperHandshake,
    make_proof,
    next_state,
)
from tests.helpers.handshakes import (
    RECEIVER_NONCE,
    SECRETS,
    SHIPPER_NONCE,
    Link,
    hello_for,
    receiver,
    shipper,
)

V = max(VERSIONS)
"""The protocol version this build speaks."""
SEG = "E00000002.log"


def welcome_from(r: ReceiverHandshake, positions: Mapping[str, tuple[int, Position, bool]]) -> Welcome:
    return r.welcome([r.resume(stream, *where) for stream, where in positions.items()])


# -- the success path ------------------------------------------------------------------------


def test_handshake_success() -> None:
    link, r, s = Link(), receiver(), shipper(features=("zstd",))
    accepted = r.receive_hello(hello_for(r, s, link))
    assert accepted == [Accepted("db1", 3), Accepted("db2", 0)]
    assert r.state is HandshakeState.DONE
    assert (r.version, r.peer_node, r.features) == (V, "shipper-1", ("zstd",))

    welcome = welcome_from(r, {"db1": (3, Position(SEG, 8192), False), "db2": (0, START, False)})
    result = s.receive_welcome(link.to_shipper.carry(welcome))
    assert s.state is HandshakeState.DONE
    assert set(result) == {"db1", "db2"}
    db1, db2 = result["db1"], result["db2"]
    assert isinstance(db1, StreamResume) and isinstance(db2, StreamResume)
    assert (db1.epoch, db1.position, db1.sealed) == (3, Position(SEG, 8192), False)
    assert (db2.epoch, db2.position, db2.sealed) == (0, START, False)


def test_handshake_success_sealed_resume() -> None:
    link, r, s = Link(), receiver(), shipper(secrets={"db1": SECRETS["db1"]})
    r.receive_hello(hello_for(r, s, link))
    welcome = welcome_from(r, {"db1": (3, Position(SEG, 1 << 20), True)})
    result = s.receive_welcome(link.to_shipper.carry(welcome))
    assert result == {"db1": StreamResume("db1", 3, Position(SEG, 1 << 20), True, welcome.streams[0].proof)}


def test_challenge_offers_our_versions() -> None:
    challenge = receiver().challenge()
    assert challenge == Challenge(VERSIONS, RECEIVER_NONCE, "receiver-1")


def test_shipper_picks_highest_common_version() -> None:
    hello = shipper().receive_challenge(Challenge((*VERSIONS, 999), RECEIVER_NONCE, "r"))
    assert hello.version == max(VERSIONS)


def test_proof_binds_every_input() -> None:
    base = (b"k", b"shipper", RECEIVER_NONCE, SHIPPER_NONCE, "node", "db1")
    proof = make_proof(*base)
    assert len(proof) == 32
    assert make_proof(*base) == proof
    for i, other in enumerate((b"K", b"receiver", bytes(32), bytes(32), "node2", "db2")):
        varied = list(base)
        varied[i] = other
        assert make_proof(*varied) != proof, f"argument {i} does not change the proof"


# -- authentication --------------------------------------------------------------------------


def test_wrong_secret_fails_authentication() -> None:
    link, r, s = Link(), receiver(), shipper(secrets={"db1": b"not-the-secret"})
    hello = hello_for(r, s, link)
    with pytest.raises(AuthenticationFailed) as info:
        r.receive_hello(hello)
    assert info.value.code == "auth"
    assert r.state is not HandshakeState.DONE
    with pytest.raises(LocalProtocolError):
        r.resume("db1", 0, START, False)  # nothing may go on after a failed proof
    with pytest.raises(LocalProtocolError):
        r.welcome([])


def test_one_wrong_secret_refuses_all_streams() -> None:
    link, r, s = Link(), receiver(), shipper(secrets={"db1": SECRETS["db1"], "db2": b"wrong"})
    with pytest.raises(AuthenticationFailed):
        r.receive_hello(hello_for(r, s, link))


def test_unknown_stream_fails_authentication() -> None:
    link, r, s = Link(), receiver(), shipper(secrets={"db1": SECRETS["db1"], "db9": b"whatever"})
    with pytest.raises(AuthenticationFailed) as info:
        r.receive_hello(hello_for(r, s, link))
    assert "db9" in str(info.value)


def test_tampered_claim_proof_fails() -> None:
    link, r, s = Link(), receiver(), shipper()
    hello = hello_for(r, s, link)
    claim = hello.streams[0]
    bad = dataclasses.replace(claim, proof=bytes([claim.proof[0] ^ 1]) + claim.proof[1:])
    with pytest.raises(AuthenticationFailed):
        r.receive_hello(dataclasses.replace(hello, streams=(bad, *hello.streams[1:])))


def test_renamed_node_fails() -> None:
    # The proof binds the shipper's node id: a relay cannot claim to be another shipper.
    link, r, s = Link(), receiver(), shipper()
    hello = hello_for(r, s, link)
    with pytest.raises(AuthenticationFailed):
        r.receive_hello(dataclasses.replace(hello, node="shipper-2"))


def test_proof_for_one_stream_does_not_fit_another() -> None:
    same = {"db1": b"shared", "db2": b"shared"}
    link, r, s = Link(), receiver(secrets=same), shipper(secrets=same)
    hello = hello_for(r, s, link)
    one, two = hello.streams
    swapped = (dataclasses.replace(one, proof=two.proof), dataclasses.replace(two, proof=one.proof))
    with pytest.raises(AuthenticationFailed):
        r.receive_hello(dataclasses.replace(hello, streams=swapped))


def fake_receiver_welcome(proof_for: dict[str, bytes]) -> tuple[ShipperHandshake, Welcome]:
    """A receiver that never checks HELLO and answers with the given proofs."""
    s = shipper()
    s.receive_challenge(Challenge(VERSIONS, RECEIVER_NONCE, "fake"))
    resumes = tuple(StreamResume(name, 9, Position(SEG, 1 << 30), True, p) for name, p in proof_for.items())
    return s, Welcome(V, "fake", resumes)


def test_tampered_welcome_proof_fails_on_shipper() -> None:
    good = make_proof(SECRETS["db1"], b"receiver", RECEIVER_NONCE, SHIPPER_NONCE, "shipper-1", "db1")
    s, welcome = fake_receiver_welcome({"db1": bytes([good[0] ^ 0x80]) + good[1:]})
    with pytest.raises(AuthenticationFailed):
        s.receive_welcome(Link().to_shipper.carry(welcome))
    assert s.state is HandshakeState.WAIT_WELCOME


def test_welcome_from_receiver_without_secret_fails() -> None:
    proof = make_proof(b"guess", b"receiver", RECEIVER_NONCE, SHIPPER_NONCE, "shipper-1", "db1")
    s, welcome = fake_receiver_welcome({"db1": proof})
    with pytest.raises(AuthenticationFailed):
        s.receive_welcome(welcome)


def test_welcome_reflecting_shipper_proof_fails() -> None:
    # A fake receiver that sends the shipper's own HELLO proof back: the role in the proof differs.
    s = shipper()
    hello = s.receive_challenge(Challenge(VERSIONS, RECEIVER_NONCE, "fake"))
    claim = hello.streams[0]
    welcome = Welcome(V, "fake", (StreamResume(claim.stream, 0, START, False, claim.proof),))
    with pytest.raises(AuthenticationFailed):
        s.receive_welcome(welcome)


def test_welcome_for_unclaimed_stream_is_refused() -> None:
    s, welcome = fake_receiver_welcome({"db7": bytes(32)})
    with pytest.raises(RemoteProtocolError) as info:
        s.receive_welcome(welcome)
    assert info.value.code == "bad-frame"


def test_echoed_nonce_is_refused_both_ways() -> None:
    with pytest.raises(AuthenticationFailed):
        shipper().receive_challenge(Challenge(VERSIONS, SHIPPER_NONCE, "r"))
    r = receiver()
    r.challenge()
    with pytest.raises(AuthenticationFailed):
        r.receive_hello(Hello(V, "s", RECEIVER_NONCE, (StreamClaim("db1", 0, bytes(32)),)))


# -- replay protection -------------------------------------------------------------------------


def test_replayed_hello_fails_against_new_challenge() -> None:
    first = Link()
    r1 = receiver()
    r1.receive_hello(hello_for(r1, shipper(), first))
    recorded = first.to_receiver.sent[-1]

    r2 = receiver(nonce=bytes([3]) * 32)  # a new connection: a fresh nonce
    r2.challenge()  # the attacker ignores it and replays the recorded HELLO
    replayed = Link().to_receiver.carry_bytes(recorded)
    with pytest.raises(AuthenticationFailed):
        r2.receive_hello(replayed)


def test_replayed_welcome_fails_for_new_shipper_nonce() -> None:
    first = Link()
    r1, s1 = receiver(), shipper()
    r1.receive_hello(hello_for(r1, s1, first))
    both = {"db1": (3, Position(SEG, 10), False), "db2": (0, START, True)}
    s1.receive_welcome(first.to_shipper.carry(welcome_from(r1, both)))
    recorded = first.to_shipper.sent[-1]

    s2 = shipper(nonce=bytes([4]) * 32)
    s2.receive_challenge(Challenge(VERSIONS, RECEIVER_NONCE, "receiver-1"))  # same challenge replayed too
    with pytest.raises(AuthenticationFailed):
        s2.receive_welcome(Link().to_shipper.carry_bytes(recorded))


# -- versions --------------------------------------------------------------------------------


def test_shipper_refuses_challenge_without_common_version() -> None:
    challenge = Link().to_shipper.carry(Challenge((max(VERSIONS) + 1, 999), RECEIVER_NONCE, "r"))
    s = shipper()
    with pytest.raises(VersionMismatch) as info:
        s.receive_challenge(challenge)
    assert info.value.code == "version"
    assert isinstance(info.value, RemoteProtocolError)


def test_version_2_peers_are_refused_both_ways() -> None:
    # Version 2 has no frame tags: a v2 shipper would ship unauthenticated frames into a v3 receiver.
    assert VERSIONS == (3,)
    with pytest.raises(VersionMismatch, match=r"receiver speaks \(2,\), we speak \(3,\)"):
        shipper().receive_challenge(Challenge((2,), RECEIVER_NONCE, "old-receiver"))
    link, r, s = Link(), receiver(), shipper()
    hello = hello_for(r, s, link)
    with pytest.raises(VersionMismatch, match=r"version 2 not among \(3,\)"):
        r.receive_hello(link.to_receiver.carry(dataclasses.replace(hello, version=2)))


def test_receiver_refuses_hello_with_unknown_version() -> None:
    link, r, s = Link(), receiver(), shipper()
    hello = hello_for(r, s, link)
    with pytest.raises(VersionMismatch):
        r.receive_hello(link.to_receiver.carry(dataclasses.replace(hello, version=max(VERSIONS) + 1)))


# -- wrong state, wrong message ------------------------------------------------------------------


def test_receiver_challenge_twice() -> None:
    r = receiver()
    r.challenge()
    with pytest.raises(LocalProtocolError):
        r.challenge()


def test_receiver_hello_before_challenge() -> None:
    hello = shipper().receive_challenge(Challenge(VERSIONS, RECEIVER_NONCE, "r"))
    with pytest.raises(LocalProtocolError):
        receiver().receive_hello(hello)


def test_receiver_hello_after_done() -> None:
    link, r, s = Link(), receiver(), shipper()
    hello = hello_for(r, s, link)
    r.receive_hello(hello)
    with pytest.raises(LocalProtocolError):
        r.receive_hello(hello)
    with pytest.raises(LocalProtocolError):
        r.challenge()


def test_receiver_welcome_before_done() -> None:
    r = receiver()
    with pytest.raises(LocalProtocolError):
        r.welcome([])
    r.challenge()
    with pytest.raises(LocalProtocolError):
        r.resume("db1", 0, START, False)


def test_receiver_resume_for_stream_without_secret() -> None:
    link, r, s = Link(), receiver(), shipper()
    r.receive_hello(hello_for(r, s, link))
    with pytest.raises(LocalProtocolError):
        r.resume("db9", 0, START, False)


def test_shipper_challenge_twice() -> None:
    s = shipper()
    s.receive_challenge(Challenge(VERSIONS, RECEIVER_NONCE, "r"))
    with pytest.raises(LocalProtocolError):
        s.receive_challenge(Challenge(VERSIONS, RECEIVER_NONCE, "r"))


def test_shipper_welcome_before_challenge() -> None:
    with pytest.raises(LocalProtocolError):
        shipper().receive_welcome(Welcome(V, "r", ()))


def test_shipper_welcome_after_done() -> None:
    link, r, s = Link(), receiver(), shipper()
    r.receive_hello(hello_for(r, s, link))
    welcome = link.to_shipper.carry(welcome_from(r, {"db1": (3, START, True), "db2": (0, START, True)}))
    s.receive_welcome(welcome)
    with pytest.raises(LocalProtocolError):
        s.receive_welcome(welcome)


@pytest.mark.parametrize(
    "msg",
    [Heartbeat(), Welcome(V, "r", ()), Fenced("db1", 1), Data("db1", SEG, 0, 0, b"x"), Challenge((V,), bytes(32), "r")],
    ids=lambda m: type(m).__name__,
)
def test_receiver_wants_hello(msg: Message) -> None:
    r = receiver()
    r.challenge()
    with pytest.raises(RemoteProtocolError) as info:
        r.receive_hello(msg)
    assert info.value.code == "bad-type"
    assert not isinstance(info.value, LocalProtocolError)


@pytest.mark.parametrize(
    "msg",
    [Heartbeat(), Welcome(V, "r", ()), Hello(V, "s", bytes(32), ()), Data("db1", SEG, 0, 0, b"x")],
    ids=lambda m: type(m).__name__,
)
def test_shipper_wants_challenge(msg: Message) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        shipper().receive_challenge(msg)
    assert info.value.code == "bad-type"


@pytest.mark.parametrize(
    "msg",
    [Heartbeat(), Challenge((V,), bytes(32), "r"), Hello(V, "s", bytes(32), ()), Data("db1", SEG, 0, 0, b"x")],
    ids=lambda m: type(m).__name__,
)
def test_shipper_wants_welcome(msg: Message) -> None:
    s = shipper()
    s.receive_challenge(Challenge(VERSIONS, RECEIVER_NONCE, "r"))
    with pytest.raises(RemoteProtocolError) as info:
        s.receive_welcome(msg)
    assert info.value.code == "bad-type"


def test_empty_hello_is_refused() -> None:
    link, r, s = Link(), receiver(), shipper(secrets={})
    with pytest.raises(RemoteProtocolError) as info:
        r.receive_hello(hello_for(r, s, link))
    assert info.value.code == "bad-frame"


def test_hello_naming_a_stream_twice_is_refused() -> None:
    link, r, s = Link(), receiver(), shipper()
    hello = hello_for(r, s, link)
    with pytest.raises(RemoteProtocolError) as info:
        r.receive_hello(dataclasses.replace(hello, streams=(hello.streams[0], hello.streams[0])))
    assert info.value.code == "bad-frame"


@pytest.mark.parametrize("size", [0, 31, 33])
def test_nonce_size_is_checked(size: int) -> None:
    with pytest.raises(LocalProtocolError):
        receiver(nonce=bytes(size))
    with pytest.raises(LocalProtocolError):
        shipper(nonce=bytes(size))


# -- fencing ---------------------------------------------------------------------------------


def test_fenced_answer() -> None:
    link, r, s = Link(), receiver(), shipper()
    accepted = r.receive_hello(hello_for(r, s, link))
    # The receiver's own epoch for db1 is 5; the shipper claimed 3, so db1 is fenced.
    assert Accepted("db1", 3) in accepted
    fenced = s.receive_welcome(link.to_shipper.carry(r.fenced("db1", 5)))
    assert fenced == {"db1": r.fenced("db1", 5)}
    # The other stream still resumes from the WELCOME that follows.
    result = s.receive_welcome(link.to_shipper.carry(welcome_from(r, {"db2": (0, START, False)})))
    assert set(result) == {"db2"}
    assert s.state is HandshakeState.DONE


def test_fenced_for_unclaimed_stream_is_refused() -> None:
    s = shipper()
    s.receive_challenge(Challenge(VERSIONS, RECEIVER_NONCE, "r"))
    with pytest.raises(RemoteProtocolError) as info:
        s.receive_welcome(Fenced("db9", 5))
    assert info.value.code == "bad-frame"


@pytest.mark.parametrize("proof", [bytes(32), b"x" * 32], ids=["zero-proof", "guessed-proof"])
def test_unproven_fenced_is_not_believed(proof: bytes) -> None:
    # A listener that is not our receiver must not be able to stop shipping to an address for good.
    link, r, s = Link(), receiver(), shipper()
    r.receive_hello(hello_for(r, s, link))
    with pytest.raises(AuthenticationFailed, match="without the receiver's proof"):
        s.receive_welcome(link.to_shipper.carry(Fenced("db1", 5, proof)))
    assert s.state is HandshakeState.WAIT_WELCOME


def test_fenced_proof_binds_the_epoch() -> None:
    link, r, s = Link(), receiver(), shipper()
    r.receive_hello(hello_for(r, s, link))
    real = r.fenced("db1", 5)
    with pytest.raises(AuthenticationFailed):
        s.receive_welcome(link.to_shipper.carry(dataclasses.replace(real, epoch=6)))
    with pytest.raises(AuthenticationFailed):
        s.check_fenced(dataclasses.replace(real, stream="db2"))
    s.check_fenced(real)


def test_fenced_proof_of_another_connection_is_refused() -> None:
    link, r, s = Link(), receiver(), shipper()
    r.receive_hello(hello_for(r, s, link))
    recorded = link.to_shipper.carry(r.fenced("db1", 5))
    link2, r2, s2 = Link(), receiver(nonce=bytes([9]) * 32), shipper()
    r2.receive_hello(hello_for(r2, s2, link2))
    with pytest.raises(AuthenticationFailed):
        s2.receive_welcome(recorded)


@pytest.mark.parametrize("answered", [{}, {"db1": (3, START, True)}], ids=["no-stream", "one-of-two"])
def test_welcome_that_does_not_answer_every_claimed_stream_is_refused(answered: dict) -> None:
    link, r, s = Link(), receiver(), shipper()
    r.receive_hello(hello_for(r, s, link))
    with pytest.raises(RemoteProtocolError, match="does not answer stream") as info:
        s.receive_welcome(link.to_shipper.carry(welcome_from(r, answered)))
    assert info.value.code == "bad-frame"
    assert s.state is HandshakeState.WAIT_WELCOME


def test_fenced_before_challenge_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        shipper().receive_welcome(Fenced("db1", 5))


# -- fields the proofs vouch for -------------------------------------------------------------------


def test_relay_rewriting_the_resume_position_is_caught() -> None:
    r, s = receiver(), shipper()
    hello = s.receive_challenge(r.challenge())
    r.receive_hello(hello)
    welcome = r.welcome([r.resume("db1", 3, Position(SEG, 100), False), r.resume("db2", 0, Position("", 0), True)])
    forged = dataclasses.replace(
        welcome,
        streams=(dataclasses.replace(welcome.streams[0], position=Position(SEG, 1 << 20)), welcome.streams[1]),
    )
    with pytest.raises(AuthenticationFailed):
        s.receive_welcome(forged)


def test_relay_rewriting_the_claimed_epoch_is_caught() -> None:
    r, s = receiver(), shipper()
    hello = s.receive_challenge(r.challenge())
    forged = dataclasses.replace(hello, streams=tuple(dataclasses.replace(c, epoch=c.epoch + 5) for c in hello.streams))
    with pytest.raises(AuthenticationFailed):
        r.receive_hello(forged)


# -- the transition tables ------------------------------------------------------------------------


@pytest.mark.parametrize(("moves", "role"), [(RECEIVER_MOVES, "receiver"), (SHIPPER_MOVES, "shipper")])
def test_every_illegal_move_raises_a_local_error(moves: Moves, role: str) -> None:
    for state in HandshakeState:
        for event in Event:
            if (state, event) in moves:
                assert next_state(moves, state, event, "no") in HandshakeState
            else:
                with pytest.raises(LocalProtocolError, match=r"^no$"):
                    next_state(moves, state, event, "no")


def test_the_tables_reach_done_from_start() -> None:
    for moves in (RECEIVER_MOVES, SHIPPER_MOVES):
        reached, frontier = {HandshakeState.START}, [HandshakeState.START]
        while frontier:
            state = frontier.pop()
            for (frm, _), to in moves.items():
                if frm is state and to not in reached:
                    reached.add(to)
                    frontier.append(to)
        assert HandshakeState.DONE in reached
