"""A stream copy's persisted state (``state.json``) and every transition of it. No I/O but load/save.

Rule 1: everything that changes a copy's state lives in this file. Other modules read a ``CopyState``'s
fields and call its transitions; none assigns a field. A transition that is illegal where the copy
stands raises ``IllegalTransition`` at once: that is a bug of ours, never a peer's doing (the session
and the control handler look at the state first and answer the peer themselves).

Two axes:

- The copy's ``Role``, what shippers may do with it: STANDBY (takes shippers of its epoch or a newer
  one), FAILED (its copy failed verification; shippers are refused until an operator's ``resume``
  clears it), ACTIVATED (the new primary: every shipper is fenced; nothing leads out of it). The
  moves are the table ``ROLE_MOVES``.
- Its replay: replaying, suspended by an operator, Failed at a segment. These are flags, legal in every
  role (an activated copy still replays what it verified, and an operator may suspend it); replay only
  ever moves forward in log order.

On disk: one JSON object with the keys of ``to_json()``, written temp + fsync + rename + fsync dir. A
missing file is a fresh copy; keys this version does not know are kept and written back.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from logship.files import write_atomic
from protocol.messages import START, Position
from receiver.seed_state import Seeding, parse_seeding


class IllegalTransition(Exception):
    """A transition was asked of a copy's state where it is not allowed."""


class Role(enum.Enum):
    """What shippers may do with a copy (see the module docstring)."""

    STANDBY = "standby"
    FAILED = "failed"
    ACTIVATED = "activated"
    SEEDING = "seeding"
    """Reseeded by an operator: waits for its base image (receiver/seed.py); takes no segments until then."""


ROLE_MOVES: dict[tuple[Role, str], Role] = {
    (Role.STANDBY, "adopt_epoch"): Role.STANDBY,
    # A session that passed its checks and then waited for the stream's lock while the writer before it
    # failed the copy still attaches (the check after the lock looks at activation only), so a Failed
    # copy can take an epoch and fail again.
    (Role.FAILED, "adopt_epoch"): Role.FAILED,
    (Role.STANDBY, "fail"): Role.FAILED,
    (Role.FAILED, "fail"): Role.FAILED,
    # An operator's resume: the source or the link was fixed, shippers may try again.
    (Role.FAILED, "clear_failure"): Role.STANDBY,
    (Role.STANDBY, "activate"): Role.ACTIVATED,
    (Role.FAILED, "activate"): Role.ACTIVATED,
    # Reseed (issue 17): a standby or Failed copy starts over from a base image; a primary is not
    # reseeded (fence it first: that is the operator's decision, not a side effect).
    (Role.STANDBY, "begin_seed"): Role.SEEDING,
    (Role.FAILED, "begin_seed"): Role.SEEDING,
    (Role.SEEDING, "begin_seed"): Role.SEEDING,
    (Role.SEEDING, "adopt_epoch"): Role.SEEDING,
    (Role.SEEDING, "seeded"): Role.STANDBY,
}
"""(role, transition) -> the role after it; a pair not listed is an illegal transition."""


@dataclass(frozen=True, slots=True)
class Activated:
    """When and at which epoch a copy became the new primary."""

    at: float | None
    """Wall-clock time of the activation."""
    epoch: int
    """The epoch it raised the copy to."""
    previous_epoch: int | None
    """The epoch before it."""

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "epoch": self.epoch, "previous_epoch": self.previous_epoch}


@dataclass(frozen=True, slots=True)
class Replaying:
    """The durable "replaying X, attempt N" record of a command replay, written before the command starts."""

    segment: str
    attempt: int
    """1 for the first run of ``segment``, counted across restarts (the command's LOGSHIP_ATTEMPT)."""
    kind: str = "replay"
    """``replay`` (the replay command) or ``recover`` (the recover command, after an interrupted run)."""
    interrupted: bool = False
    """An earlier run of ``segment`` ended without a recorded exit: the target may hold part of it."""
    at: float | None = None
    settled: bool = False
    """How this attempt ended is already known and acted on: a restart need not look at its run again."""

    def to_json(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "attempt": self.attempt,
            "kind": self.kind,
            "interrupted": self.interrupted,
            "at": self.at,
            "settled": self.settled,
        }


@dataclass(slots=True)
class CopyState:
    """The persisted state of one stream's copy; each field is the state.json key of the same name."""

    epoch: int = 0
    """The newest epoch this copy knows of; shippers of an older one are fenced."""
    failed: str | None = None
    """Why the copy itself Failed (it refuses shippers); None: it did not."""
    activated: Activated | None = None
    """Set once the copy was activated."""
    replayed: str | None = None
    """The last segment replayed into the replica."""
    replayed_size: int | None = None
    replayed_at: float | None = None
    inspected: str | None = None
    """The last segment that passed inspection."""
    inspected_at: float | None = None
    last_error: str | None = None
    """The last replay attempt's failure while it is being retried."""
    replay_failed: str | None = None
    """Why replay Failed and stopped; None: it did not."""
    replay_failed_at: float | None = None
    replaying: Replaying | None = None
    """The command replay under way or last tried (cleared once its segment is replayed)."""
    suspended: bool = False
    """Replay suspended by an operator (copying goes on)."""
    suspended_at: float | None = None
    comment: str | None = None
    """The operator's comment of the last suspend or resume."""
    seeding: Seeding | None = None
    """Set while the copy waits for its base image (``reseed``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys of state.json this version does not know, written back as they were."""

    # -- reading ------------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        if self.activated is not None:
            return Role.ACTIVATED
        if self.seeding is not None:
            return Role.SEEDING
        return Role.FAILED if self.failed else Role.STANDBY

    @property
    def replayed_position(self) -> Position:
        name = self.replayed or ""
        return Position(name, self.replayed_size or 0) if name else START

    # -- the copy's role ----------------------------------------------------------------------

    def adopt_epoch(self, epoch: int) -> None:
        """Take the newer epoch a shipper claims (it was activated elsewhere meanwhile)."""
        after = self._check("adopt_epoch")
        if epoch <= self.epoch:
            raise IllegalTransition(f"epoch {epoch} is not newer than {self.epoch}")
        self.epoch = epoch
        self._arrived(after)

    def fail(self, reason: str) -> None:
        """Mark the copy Failed: it refuses shippers from now on and keeps everything received."""
        after = self._check("fail")
        self.failed = reason
        self._arrived(after)

    def clear_failure(self) -> str:
        """Let shippers in again after a copy-level failure (an operator's resume); return the reason cleared."""
        after = self._check("clear_failure")
        reason, self.failed = self.failed or "", None
        self._arrived(after)
        return reason

    def activate(self, at: float, epoch: int | None = None) -> bool:
        """Make the copy the new primary at ``epoch`` (None: the next one); return False, changing nothing,
        if it was already."""
        if self.activated is not None:
            return False
        after = self._check("activate")
        new = self.epoch + 1 if epoch is None else epoch
        if new <= self.epoch:
            raise IllegalTransition(f"epoch {new} is not newer than {self.epoch}")
        self.activated = Activated(at, new, self.epoch)
        self.epoch = new
        self._arrived(after)
        return True

    def begin_seed(self, at: float, manual_resume: bool) -> None:
        """Wait for a base image (an operator's reseed); the copy's old bytes were moved aside."""
        after = self._check("begin_seed")
        self.failed = None
        self.seeding = Seeding(at, manual_resume)
        self._arrived(after)

    def seeded(self, after: str, size: int, at: float) -> None:
        """The base image is installed and holds everything up to segment ``after`` (``size`` bytes):
        replay continues after it (suspended when the reseed asked for a manual resume)."""
        role = self._check("seeded")
        assert self.seeding is not None
        manual = self.seeding.manual_resume
        self.seeding = None
        self.replayed, self.replayed_size, self.replayed_at = (after or None), (size if after else None), at
        self.replaying, self.replay_failed, self.last_error = None, None, None
        if manual:
            self.suspended, self.suspended_at, self.comment = True, at, "reseeded: waiting for resume"
        self._arrived(role)

    # -- replay -------------------------------------------------------------------------------

    def inspected_ok(self, segment: str, at: float) -> None:
        """Note that ``segment`` passed inspection."""
        self.inspected, self.inspected_at = segment, at

    def replay_retrying(self, error: str) -> None:
        """Note a failed replay attempt that will be retried."""
        self.last_error = error

    def replayed_up_to(self, segment: str, size: int, at: float) -> None:
        """Note that ``segment`` (``size`` bytes) is in the replica."""
        if self.replayed and segment <= self.replayed:
            raise IllegalTransition(f"replay of {segment} after {self.replayed}: replay only moves forward")
        self.replayed, self.replayed_size, self.replayed_at, self.last_error = segment, size, at, None
        self.replaying = None

    def replay_begins(self, segment: str, kind: str, at: float) -> Replaying:
        """Record the next command run of ``segment`` (persist it before the command starts); return it."""
        if self.replayed and segment <= self.replayed:
            raise IllegalTransition(f"replay of {segment} after {self.replayed}: replay only moves forward")
        before = self.replaying if self.replaying is not None and self.replaying.segment == segment else None
        attempt = before.attempt + 1 if before is not None else 1
        self.replaying = Replaying(segment, attempt, kind, before is not None and before.interrupted, at)
        return self.replaying

    def replay_interrupted(self, segment: str) -> None:
        """Note that the last run of ``segment`` ended without a recorded exit status."""
        if self.replaying is None or self.replaying.segment != segment:
            raise IllegalTransition(f"{segment} interrupted, but the recorded replay is {self.replaying}")
        self.replaying = replace(self.replaying, interrupted=True, settled=True)

    def replay_forgotten(self) -> None:
        """Drop a replay record that does not belong to the next segment (stale: it was replayed)."""
        self.replaying = None

    def fail_replay(self, reason: str, at: float) -> None:
        """Stop replay at the next segment for ``reason`` until an operator resumes it."""
        self.replay_failed, self.replay_failed_at = reason, at

    def retry_replay(self) -> None:
        """Let a Failed replay be tried once more (an operator's activation is a fresh attempt)."""
        self.replay_failed = None

    def suspend(self, at: float, comment: str | None) -> None:
        """Stop replaying (copying goes on)."""
        self.suspended, self.suspended_at, self.comment = True, at, comment

    def resume(self, comment: str | None) -> None:
        """Replay again from where it stopped, clearing a replay failure."""
        self.suspended, self.replay_failed, self.replay_failed_at, self.comment = False, None, None, comment
        if self.replaying is not None:
            # The operator vouches for the target now (fixed by hand): the next run is an ordinary replay.
            self.replaying = replace(self.replaying, interrupted=False)

    def _check(self, transition: str) -> Role:
        after = ROLE_MOVES.get((self.role, transition))
        if after is None:
            raise IllegalTransition(f"{transition} of a copy that is {self.role.value}")
        return after

    def _arrived(self, after: Role) -> None:
        assert self.role is after, f"{self.role} after a move to {after}"

    # -- JSON ---------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Return the state.json object."""
        # "replaying" only while there is one, so a state.json of a directory replay reads as before.
        replaying = {"replaying": self.replaying.to_json()} if self.replaying is not None else {}
        if self.seeding is not None:
            replaying["seeding"] = self.seeding.to_json()
        return {
            **replaying,
            **self.extra,
            "epoch": self.epoch,
            "failed": self.failed,
            "activated": self.activated.to_json() if self.activated is not None else None,
            "replayed": self.replayed,
            "replayed_size": self.replayed_size,
            "replayed_at": self.replayed_at,
            "inspected": self.inspected,
            "inspected_at": self.inspected_at,
            "last_error": self.last_error,
            "replay_failed": self.replay_failed,
            "replay_failed_at": self.replay_failed_at,
            "suspended": self.suspended,
            "suspended_at": self.suspended_at,
            "comment": self.comment,
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, doc: Any) -> CopyState:
        """Build the state from a state.json object; absent keys take their defaults.

        Raises ValueError if ``doc`` is not an object or a value has the wrong type.
        """
        if not isinstance(doc, dict):
            raise ValueError("state.json is not a JSON object")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        try:
            return cls(
                epoch=int(doc.get("epoch") or 0),
                failed=_text(doc.get("failed")),
                activated=_activated(doc.get("activated"), int(doc.get("epoch") or 0)),
                replayed=_text(doc.get("replayed")),
                replayed_size=_int(doc.get("replayed_size")),
                replayed_at=_float(doc.get("replayed_at")),
                inspected=_text(doc.get("inspected")),
                inspected_at=_float(doc.get("inspected_at")),
                last_error=_text(doc.get("last_error")),
                replay_failed=_text(doc.get("replay_failed")),
                replay_failed_at=_float(doc.get("replay_failed_at")),
                replaying=_replaying(doc.get("replaying")),
                suspended=bool(doc.get("suspended")),
                suspended_at=_float(doc.get("suspended_at")),
                comment=_text(doc.get("comment")),
                seeding=parse_seeding(doc.get("seeding")),
                extra={k: v for k, v in doc.items() if k not in known},
            )
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"state.json holds a bad value: {e}") from None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _activated(value: Any, epoch: int) -> Activated | None:
    if not value:
        return None
    if not isinstance(value, dict):
        # Written by hand: activated all the same, with nothing more known.
        return Activated(None, epoch, None)
    return Activated(_float(value.get("at")), int(value.get("epoch", epoch)), _int(value.get("previous_epoch")))


def _replaying(value: Any) -> Replaying | None:
    if not value:
        return None
    if not isinstance(value, dict):
        raise ValueError("replaying is not an object")
    return Replaying(
        str(value["segment"]),
        int(value.get("attempt", 1)),
        str(value.get("kind", "replay")),
        bool(value.get("interrupted")),
        _float(value.get("at")),
        bool(value.get("settled")),
    )


def load_state(path: Path) -> CopyState:
    """Read a copy's state.json; a fresh state if there is none.

    Raises ValueError if it holds no JSON object (or a value of the wrong type), OSError if unreadable.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return CopyState()
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not a JSON object")
    return CopyState.from_json(doc)


def save_state(path: Path, state: CopyState) -> None:
    """Write ``state`` to ``path`` crash-safely (temp, fsync, rename, fsync dir)."""
    write_atomic(path, state.to_bytes())
