"""A stream's history: the epochs it has been through and where each forked from the one before. No I/O.

Every activation starts an epoch. Its fork is the last byte of the previous epoch that the new primary
holds (``Fork.position``), with the xxh3_128 of that segment's bytes up to it (``Fork.digest``), so a
copy can tell whether the bytes it holds before the fork are the new primary's bytes too. Epoch 0 has
no fork. A fork whose position is unknown (``position`` None) comes from a shipper that claimed an
epoch without sending its history: it is kept, so that nothing later is rewound on a guess.

``decide()`` is the whole decision a receiver takes at the handshake: given the shipper's history, the
history the copy's bytes were written under and where the copy stands, resume, rewind to a fork, or
refuse. Its callers do the I/O (check the digest, cut the tail into quarantine/).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.fields import MAX_FORKS, WireFork
from protocol.messages import START, Position
from protocol.names import check_segment_name


@dataclass(frozen=True, slots=True)
class Fork:
    """Where ``epoch`` began: the last byte of the epoch before it that its primary held."""

    epoch: int
    position: Position | None
    """None: the fork is not known (a shipper claimed the epoch without a history)."""
    digest: bytes = b""
    """xxh3_128 of ``position.segment``'s first ``position.offset`` bytes; empty at START or unknown."""

    def __str__(self) -> str:
        return f"epoch {self.epoch} at {self.position if self.position is not None else '?'}"

    def to_json(self) -> dict[str, Any]:
        pos = self.position
        return {
            "epoch": self.epoch,
            "fork": None if pos is None else {"seg": pos.segment, "off": pos.offset},
            "xxh": self.digest.hex(),
        }

    @classmethod
    def from_json(cls, doc: Any) -> Fork:
        """Raises ValueError for anything that is not a fork as ``to_json()`` writes it."""
        if not isinstance(doc, dict):
            raise ValueError("a fork must be an object")
        try:
            fork = doc.get("fork")
            pos = None if fork is None else Position(_segment(fork["seg"]), _count(fork["off"]))
            return cls(_count(doc["epoch"]), pos, bytes.fromhex(str(doc.get("xxh", ""))))
        except (KeyError, TypeError) as e:
            raise ValueError(f"bad fork {doc!r}: {e}") from None

    def to_wire(self) -> WireFork:
        pos = self.position
        return (self.epoch, None if pos is None else pos.segment, 0 if pos is None else pos.offset, self.digest)


@dataclass(frozen=True, slots=True)
class History:
    """The forks of a stream's epochs after 0, oldest first, epochs strictly growing."""

    forks: tuple[Fork, ...] = ()

    def __post_init__(self) -> None:
        epochs = [f.epoch for f in self.forks]
        if any(e < 1 for e in epochs) or epochs != sorted(set(epochs)):
            raise ValueError(f"epochs of a history must grow from 1: {epochs}")
        known = [f.position for f in self.forks if f.position is not None]
        if known != sorted(known):
            raise ValueError("forks of a history must not go back in the log")
        if len(self.forks) > MAX_FORKS:
            raise ValueError(f"a history lists at most {MAX_FORKS} epochs")

    @property
    def epoch(self) -> int:
        """The current epoch (0 without forks)."""
        return self.forks[-1].epoch if self.forks else 0

    def fork_of(self, epoch: int) -> Fork | None:
        return next((f for f in self.forks if f.epoch == epoch), None)

    def fork_after(self, epoch: int) -> Fork | None:
        """The first fork of an epoch newer than ``epoch``: where bytes of ``epoch`` stop being shared."""
        return next((f for f in self.forks if f.epoch > epoch), None)

    def extended(self, fork: Fork) -> History:
        """Return this history with ``fork`` appended. Raises ValueError if it does not fit after it."""
        return History((*self.forks, fork))

    def claimed(self, epoch: int) -> History:
        """This history as the one of a shipper claiming ``epoch``: an unknown fork added if it is newer."""
        return self if epoch <= self.epoch else self.extended(Fork(epoch, None))

    def describe(self) -> str:
        return ", ".join(str(f) for f in self.forks) or "epoch 0 only"

    def proof_text(self) -> str:
        """The canonical text a handshake proof binds ("" for epoch 0 only: older peers' proofs stay valid)."""
        return "|".join(
            f"{f.epoch}:{'?' if f.position is None else f'{f.position.segment}@{f.position.offset}'}:{f.digest.hex()}"
            for f in self.forks
        )

    def to_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.forks]

    @classmethod
    def from_json(cls, doc: Any) -> History:
        """Raises ValueError for anything that is not a history as ``to_json()`` writes it."""
        if not isinstance(doc, list):
            raise ValueError("a history must be a list of forks")
        return cls(tuple(Fork.from_json(f) for f in doc))

    def to_wire(self) -> tuple[WireFork, ...]:
        return tuple(f.to_wire() for f in self.forks)

    @classmethod
    def from_wire(cls, forks: Sequence[WireFork]) -> History:
        """Build the history of a HELLO (fields.forks() checked the types). Raises RemoteProtocolError."""
        try:
            return cls(
                tuple(Fork(e, None if seg is None else Position(seg, off), digest) for e, seg, off, digest in forks)
            )
        except ValueError as e:
            raise _bad(str(e)) from None


def _bad(text: str) -> RemoteProtocolError:
    return RemoteProtocolError(text, code=ErrorCode.BAD_FRAME)


def _segment(value: Any) -> str:
    try:
        return "" if value == "" else check_segment_name(value)
    except RemoteProtocolError as e:
        raise ValueError(str(e)) from None


def _count(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


def parse_position(text: str) -> Position:
    """Parse ``SEG@OFF`` (an operator's ``--fork``). Raises ValueError."""
    seg, sep, off = text.rpartition("@")
    if not sep or not off.isdigit():
        raise ValueError(f"{text!r} is not SEGMENT@OFFSET")
    return Position(_segment(seg), int(off))


# -- the decision at the handshake ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resume:
    """The copy's bytes all belong to the shipper's history: resume where the copy stands."""


@dataclass(frozen=True, slots=True)
class Rewind:
    """The copy holds bytes past ``fork``: cut them (into quarantine/) and resume at the fork.

    The caller first checks that the copy's bytes up to the fork have ``fork.digest``.
    """

    fork: Fork


@dataclass(frozen=True, slots=True)
class Refuse:
    """The copy cannot take this shipper's history; ``reason`` says why (a reseed, or an operator)."""

    reason: str


Decision = Resume | Rewind | Refuse


def decide(
    shipper: History,
    copy: History,
    position: Position,
    replayed: Position = START,
    expected: Mapping[int, Position] | None = None,
    rewind: bool = True,
) -> Decision:
    """Decide what a copy whose bytes were written under ``copy`` and reach ``position`` does with a
    shipper of history ``shipper``.

    ``replayed``: how far the copy's replica went (bytes replayed past a fork cannot be taken back by a
    rewind of the log). ``expected``: forks an operator gave with ``fence --fork``. ``rewind`` False
    (``--no-rewind``) turns a rewind into a refusal.
    """
    if shipper.epoch < copy.epoch:
        return Refuse(f"the copy's bytes are of epoch {copy.epoch}, newer than the shipper's {shipper.epoch}")
    for epoch, pos in (expected or {}).items():
        theirs = shipper.fork_of(epoch)
        if theirs is not None and theirs.position is not None and theirs.position != pos:
            return Refuse(f"epoch {epoch} was fenced with its fork at {pos}, the shipper's forks at {theirs.position}")
    conflict = _conflict(shipper, copy.forks)
    if conflict:
        return Refuse(conflict)
    fork = shipper.fork_after(copy.epoch)
    if fork is None or fork.position is None or position <= fork.position:
        return Resume()
    cut = f"the copy reaches {position}, past the fork of {fork}"
    if replayed > fork.position:
        return Refuse(f"{cut}, and its replica replayed up to {replayed}: a rewind cannot undo that; reseed")
    if not rewind:
        return Refuse(f"{cut}; the receiver runs with --no-rewind: rewind or reseed by hand")
    return Rewind(fork)


def _conflict(shipper: History, forks: Sequence[Fork]) -> str:
    """Say where the copy's own forks disagree with the shipper's ('' if they do not)."""
    for mine in forks:
        theirs = shipper.fork_of(mine.epoch)
        if theirs is None:
            return f"the shipper's history ({shipper.describe()}) lacks epoch {mine.epoch} of the copy's; reseed"
        if mine.position is None or theirs.position is None:
            continue  # a fork not known on one side: nothing to compare
        if (mine.position, mine.digest) != (theirs.position, theirs.digest):
            return (
                f"two histories of epoch {mine.epoch}: the copy's forks at {mine.position}, the shipper's at "
                f"{theirs.position}; they share nothing to rewind to: reseed"
            )
    return ""
