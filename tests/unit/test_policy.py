"""The sync policy: parsing PostgreSQL's syntax, and the pure decision, as tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.messages import Position, StreamResume
from shipper.config import from_doc
from shipper.policy import Policy, PolicyError, TargetPosition, parse_policy, resolve, satisfied, satisfying
from shipper.service import ShipperService
from shipper.tailer import SegmentInfo
from shipper.wait import Need, Waiters, behind, holds
from shipper.window import AckKey

A, B, C = "a:1", "b:2", "c:3"
STREAM = (A, B, C)


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("ANY 1", Policy("any", 1, None)),
        ("any 2 (a:1, b:2)", Policy("any", 2, (A, B))),
        ("FIRST 1 (b:2,a:1)", Policy("first", 1, (B, A))),
        ("2 (a:1, b:2, c:3)", Policy("first", 2, (A, B, C))),
        ("ALL", Policy("all", 0, None)),
        (" all ", Policy("all", 0, None)),
        ("ANY 1 (*)", Policy("any", 1, None)),
        # A duplicate counts once, at its first place.
        ("FIRST 1 (b:2, a:1, b:2)", Policy("first", 1, (B, A))),
    ],
)
def test_parse(text: str, policy: Policy) -> None:
    assert parse_policy(text) == policy
    assert parse_policy(str(policy)) == policy


@pytest.mark.parametrize(
    "text",
    ["", "ANY", "ANY 0 (a:1)", "SOME 1 (a:1)", "FIRST 1", "ANY 2 (a:1, a:1)", "ANY 1 (a:1,)", "ANY 1 (a:1", "ALL 2"],
)
def test_parse_refuses(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


def test_resolve_against_the_stream() -> None:
    assert resolve(parse_policy("ANY 1"), STREAM) == Policy("any", 1, STREAM)
    assert resolve(parse_policy("ALL"), STREAM) == Policy("all", 3, STREAM)
    with pytest.raises(PolicyError, match="d:4"):
        resolve(parse_policy("ANY 1 (a:1, d:4)"), STREAM)
    with pytest.raises(PolicyError, match="asks for 4"):
        resolve(parse_policy("ANY 4"), STREAM)


H = TargetPosition(holds=True)
BEHIND = TargetPosition(holds=False)
DOWN = TargetPosition(holds=False, up=False)
DOWN_HOLDS = TargetPosition(holds=True, up=False)

# (policy, positions of a, b, c (None: not in the mapping), satisfied by)
CASES = [
    ("ANY 1", (H, BEHIND, BEHIND), (A,)),
    ("ANY 1", (BEHIND, BEHIND, BEHIND), None),
    ("ANY 1", (DOWN, DOWN, H), (C,)),
    ("ANY 2", (H, BEHIND, H), (A, C)),
    ("ANY 2", (H, DOWN, BEHIND), None),
    # Ties: both hold; the list order names who satisfied it.
    ("ANY 1 (c:3, a:1)", (H, BEHIND, H), (C,)),
    ("ANY 1 (b:2)", (H, BEHIND, H), None),
    # Acknowledged bytes stay durable at a target that went down since.
    ("ANY 1 (a:1)", (DOWN_HOLDS, BEHIND, BEHIND), (A,)),
    ("ALL", (H, H, H), (A, B, C)),
    ("ALL", (H, H, DOWN), None),
    ("ALL", (H, H, None), None),
    # FIRST waits for the first k that are up: c being ahead does not help while a is up.
    ("FIRST 1 (a:1, c:3)", (BEHIND, BEHIND, H), None),
    ("FIRST 1 (a:1, c:3)", (DOWN, BEHIND, H), (C,)),
    ("FIRST 1 (a:1, c:3)", (None, BEHIND, H), (C,)),
    ("FIRST 2 (a:1, b:2, c:3)", (H, DOWN, H), (A, C)),
    ("FIRST 2 (a:1, b:2, c:3)", (H, DOWN, DOWN), None),
    ("FIRST 2 (a:1, b:2, c:3)", (H, BEHIND, H), None),
    ("FIRST 1 (b:2, a:1, b:2)", (H, H, BEHIND), (B,)),
    ("FIRST 1 (b:2, a:1)", (H, DOWN, BEHIND), (A,)),
    # Every target down: nothing satisfies anything.
    ("ANY 1", (DOWN, DOWN, DOWN), None),
    ("FIRST 1 (a:1, b:2)", (DOWN, DOWN, DOWN), None),
]


@pytest.mark.parametrize(("text", "states", "by"), CASES)
def test_satisfied_table(text: str, states: tuple[TargetPosition | None, ...], by: tuple[str, ...] | None) -> None:
    policy = resolve(parse_policy(text), STREAM)
    positions = {name: state for name, state in zip(STREAM, states, strict=True) if state is not None}
    assert satisfying(policy, positions) == by
    assert satisfied(policy, positions) is (by is not None)


# -- what a target holds, from its acknowledged position (shipper/wait.py) ----------------------

SEG1, SEG2 = "E0000000001.log", "E0000000002.log"


@pytest.mark.parametrize(
    ("acked", "replayed", "need", "expect"),
    [
        ((Position(SEG1, 100), False), None, Need(SEG1, 100), True),
        ((Position(SEG1, 99), False), None, Need(SEG1, 100), False),
        ((Position(SEG1, 100), False), None, Need(SEG1, None), False),
        ((Position(SEG1, 100), True), None, Need(SEG1, None), True),
        ((Position(SEG2, 0), False), None, Need(SEG1, None), True),
        ((Position(SEG1, 100), True), None, Need(SEG1, 50, "replayed"), False),
        ((Position(SEG1, 100), True), Position(SEG1, 100), Need(SEG1, 50, "replayed"), True),
        # A replayed position beyond the durable one proves nothing the durable one does not.
        ((Position(SEG1, 10), False), Position(SEG2, 0), Need(SEG1, 50, "replayed"), False),
    ],
)
def test_holds(acked: AckKey, replayed: Position | None, need: Need, expect: bool) -> None:
    assert holds(acked, replayed, need) is expect


def test_behind() -> None:
    segs = [SegmentInfo(SEG1, 100, 0, True), SegmentInfo(SEG2, 50, 0, False)]
    names = [SEG1, SEG2]
    assert behind(segs, names, (Position(SEG1, 40), False), Need(SEG2, 30)) == (2, 90)
    assert behind(segs, names, (Position(SEG1, 100), True), Need(SEG2, None)) == (1, 50)


def test_positions_only_from_what_the_target_said_since_start(tmp_path: Path) -> None:
    """A position not learnt from the target since start, or replaced by a lower WELCOME, holds nothing."""
    secret = tmp_path / "s"
    secret.write_text("x" * 64)
    secret.chmod(0o600)
    doc = {"name": "db", "source": str(tmp_path), "secret_file": str(secret), "target": [{"address": "h:1"}]}
    service = ShipperService(from_doc({"stream": [doc]}).streams[0], "n")
    waiters = Waiters(service)
    sender = service.senders[0]
    sender.stats.acked, sender.stats.acked_sealed = Position(SEG2, 0), False
    need = Need(SEG1, 10)
    assert not waiters.positions(need)["h:1"].holds  # not known: never counted
    sender.stats.known = True
    assert waiters.positions(need)["h:1"].holds
    (tmp_path / SEG1).write_bytes(b"x" * 10)
    sender._start_at(StreamResume("db", 0, Position(SEG1, 5), False, b""))  # the target came back with less
    assert not waiters.positions(need)["h:1"].holds
