"""A copy's state: JSON load/save in the state.json format, and its transitions, legal and illegal."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from protocol.messages import START, Position
from receiver.state import ROLE_MOVES, Activated, CopyState, IllegalTransition, Role, load_state, save_state
from receiver.store import SegmentStore

S1, S2 = "E00000001.log", "E00000002.log"


@pytest.fixture
def store(tmp_path: Path) -> SegmentStore:
    return SegmentStore(tmp_path / "s")


# -- state.json ---------------------------------------------------------------------------------


def test_load_state_defaults_when_missing(store: SegmentStore) -> None:
    state = load_state(store.state_path)
    assert state == CopyState()
    assert (state.epoch, state.failed) == (0, None)


def test_state_round_trip(store: SegmentStore) -> None:
    doc = {"epoch": 7, "failed": "E1: chunk digest mismatch (3 times)", "extra": [1, 2]}
    save_state(store.state_path, CopyState.from_json(doc))
    loaded = load_state(store.state_path)
    assert loaded == CopyState(epoch=7, failed=doc["failed"], extra={"extra": [1, 2]})
    # Keys this version does not know are written back as they were.
    assert json.loads(store.state_path.read_text())["extra"] == [1, 2]
    save_state(store.state_path, CopyState(epoch=8))
    assert load_state(store.state_path) == CopyState(epoch=8)
    assert sorted(p.name for p in store.root.iterdir()) == ["incoming", "log", "quarantine", "state.json"]


def test_load_state_rejects_a_non_object(store: SegmentStore) -> None:
    store.state_path.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="not a JSON object"):
        load_state(store.state_path)


def test_a_state_json_of_the_old_writer_loads_and_keeps_its_keys(store: SegmentStore) -> None:
    # As the receiver wrote it before CopyState: a dict edited in place, only the keys ever set.
    old = {
        "activated": {"at": 1700000300.5, "epoch": 3, "previous_epoch": 2},
        "comment": "backup",
        "epoch": 3,
        "failed": None,
        "inspected": S2,
        "inspected_at": 1700000200.0,
        "last_error": None,
        "replay_failed": None,
        "replay_failed_at": None,
        "replayed": S2,
        "replayed_at": 1700000201.0,
        "replayed_size": 300,
        "suspended": False,
        "suspended_at": 1700000100.0,
    }
    store.state_path.write_text(json.dumps(old, sort_keys=True, indent=1))
    state = load_state(store.state_path)
    assert state.activated == Activated(1700000300.5, 3, 2)
    assert state.role is Role.ACTIVATED
    assert state.replayed_position == Position(S2, 300)
    assert state.to_json() == old
    save_state(store.state_path, state)
    assert store.state_path.read_text() == json.dumps(old, sort_keys=True, indent=1)


# -- transitions --------------------------------------------------------------------------------


def test_role_follows_failure_and_activation() -> None:
    state = CopyState()
    assert state.role is Role.STANDBY
    state.adopt_epoch(2)
    assert (state.epoch, state.role) == (2, Role.STANDBY)
    state.fail("E1: segment digest mismatch (3 times)")
    assert state.role is Role.FAILED
    state.fail("again")
    assert state.failed == "again"
    assert state.activate(100.0)
    assert state.role is Role.ACTIVATED
    assert state.activated == Activated(100.0, 3, 2) and state.epoch == 3
    # Activating again changes nothing (the operator may run it twice).
    assert not state.activate(200.0)
    assert state.activated == Activated(100.0, 3, 2) and state.epoch == 3


@pytest.mark.parametrize(
    ("make", "move"),
    [
        (lambda: CopyState(epoch=3), lambda s: s.adopt_epoch(3)),
        (lambda: CopyState(epoch=3), lambda s: s.adopt_epoch(2)),
        (lambda: CopyState(activated=Activated(1.0, 1, 0), epoch=1), lambda s: s.adopt_epoch(5)),
        (lambda: CopyState(activated=Activated(1.0, 1, 0), epoch=1), lambda s: s.fail("late")),
        (lambda: CopyState(replayed=S2, replayed_size=10), lambda s: s.replayed_up_to(S1, 10, 1.0)),
        (lambda: CopyState(replayed=S2, replayed_size=10), lambda s: s.replayed_up_to(S2, 10, 1.0)),
    ],
    ids=["same-epoch", "older-epoch", "epoch-after-activation", "fail-after-activation", "replay-back", "replay-again"],
)
def test_an_illegal_transition_raises_and_changes_nothing(
    make: Callable[[], CopyState], move: Callable[[CopyState], object]
) -> None:
    state = make()
    before = state.to_json()
    with pytest.raises(IllegalTransition):
        move(state)
    assert state.to_json() == before


def test_nothing_leads_out_of_activated() -> None:
    assert not [move for (role, move) in ROLE_MOVES if role is Role.ACTIVATED]
    assert {after for (_, _), after in ROLE_MOVES.items()} == set(Role)


def test_replay_moves_forward_and_records_its_failures() -> None:
    state = CopyState()
    assert state.replayed_position == START
    state.inspected_ok(S1, 10.0)
    state.replay_retrying("inspector vetoed")
    assert state.last_error == "inspector vetoed"
    state.replayed_up_to(S1, 300, 11.0)
    assert state.replayed_position == Position(S1, 300) and state.last_error is None
    assert (state.inspected, state.inspected_at, state.replayed_at) == (S1, 10.0, 11.0)
    state.fail_replay("gap", 12.0)
    assert (state.replay_failed, state.replay_failed_at) == ("gap", 12.0)
    state.retry_replay()
    # An activation's fresh attempt clears the reason only; the time of the failure stays.
    assert (state.replay_failed, state.replay_failed_at) == (None, 12.0)


def test_suspend_and_resume() -> None:
    state = CopyState()
    state.suspend(5.0, "backup")
    assert (state.suspended, state.suspended_at, state.comment) == (True, 5.0, "backup")
    state.fail_replay("bad", 6.0)
    state.resume(None)
    assert (state.suspended, state.replay_failed, state.replay_failed_at, state.comment) == (False, None, None, None)
    # The role axis is not touched by replay: suspended and activated at once is allowed.
    state.activate(7.0)
    state.suspend(8.0, None)
    assert state.role is Role.ACTIVATED and state.suspended


def test_clear_failure_lets_shippers_in_again() -> None:
    state = CopyState(epoch=2)
    state.fail("E1: segment digest mismatch (3 times)")
    assert state.clear_failure() == "E1: segment digest mismatch (3 times)"
    assert (state.role, state.failed, state.epoch) == (Role.STANDBY, None, 2)
    # Only a Failed copy has a failure to clear; an activated one stays what it is.
    with pytest.raises(IllegalTransition):
        state.clear_failure()
    with pytest.raises(IllegalTransition):
        CopyState(activated=Activated(1.0, 1, 0), epoch=1, failed="old").clear_failure()
