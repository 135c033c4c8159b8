"""A former primary's activated copy turned back into a standby (receiver/rejoin.py), on real files, and
the agent's choice of the fork (logship/ha/rejoin.py) and its [ha] rejoin key (issue 16)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from logship.ha.config import load
from logship.ha.rejoin import rejoin_fork
from protocol.digest import segment_digest
from protocol.history import Fork
from protocol.messages import START, Position
from receiver.history_file import load_history
from receiver.manifest import Base, chain_problem, parse_base, parse_manifest
from receiver.manifest_file import ManifestFile
from receiver.rejoin import RejoinRefused, demote_and_reseed, rejoin_dir
from receiver.state import CopyState, Role, load_state, save_state

rnd = random.Random(1619)
DATA = {i: rnd.randbytes(rnd.randint(100, 3000)) for i in range(1, 9)}


def seg(i: int) -> str:
    return f"E{i:010d}.log"


def activated_copy(root: Path, received: int = 3, led: int = 6, tail: bool = True) -> Path:
    """A copy that received 1..``received`` as a standby of epoch 1, was activated at epoch 2, and whose
    application wrote received+1..``led`` into replica/ while this node led; with an unsealed tail of
    epoch 1 beside the replica and in incoming/, as an activation leaves them."""
    for d in ("log", "incoming", "quarantine", "replica"):
        (root / d).mkdir(parents=True, exist_ok=True)
    manifest = ManifestFile(root / "manifest")
    prev = ""
    for i in range(1, received + 1):
        (root / "log" / seg(i)).write_bytes(DATA[i])
        manifest.append(seg(i), len(DATA[i]), segment_digest(DATA[i]), prev, 1.0)
        prev = seg(i)
    manifest.close()
    for i in range(1, led + 1):
        (root / "replica" / seg(i)).write_bytes(DATA[i])
    if tail:
        (root / "replica" / f"{seg(received + 1)}.partial").write_bytes(b"old epoch tail")
        (root / "incoming" / f"{seg(received + 1)}.partial").write_bytes(b"old epoch tail")
        (root / "incoming" / f"{seg(received + 1)}.idx").write_bytes(b"")
    state = CopyState(epoch=1)
    state.replayed_up_to(seg(received), len(DATA[received]), 1.0)
    state.activate(2.0, 2)
    save_state(root / "state.json", state)
    return root


def fork_at(i: int, epoch: int = 3, data: bytes | None = None) -> Fork:
    body = DATA[i] if data is None else data
    return Fork(epoch, Position(seg(i), len(body)), segment_digest(body))


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_keeps_what_it_led_up_to_the_fork_and_quarantines_the_rest(tmp_path: Path) -> None:
    root = activated_copy(tmp_path / "sg1")
    report = rejoin_dir(root, 3, fork_at(5), now=100.0)
    assert report["adopted_segments"] == [seg(4), seg(5)] and report["adopted_how"] == ["link"]
    assert os.path.samefile(root / "log" / seg(4), root / "replica" / seg(4))  # linked, as replay links
    # log/ and the manifest now hold everything up to the fork, as if received; one chain, digests recomputed.
    data = (root / "manifest").read_bytes()
    records = parse_manifest(data)
    assert [r.name for r in records] == [seg(i) for i in range(1, 6)]
    assert chain_problem(records, base=parse_base(data)) == ""
    for r in records:
        assert (root / "log" / r.name).read_bytes() == DATA[int(r.name[1:11])]
        assert r.digest == segment_digest(DATA[int(r.name[1:11])])
    # Past the fork: segment 6 and the unsealed tails of epoch 1, intact, with the reason and old manifest.
    q = Path(report["quarantine"])
    assert (q / "replica" / seg(6)).read_bytes() == DATA[6]
    assert (q / "replica" / f"{seg(4)}.partial").exists() and (q / "incoming" / f"{seg(4)}.partial").exists()
    assert "past that fork" in (q / "reason").read_text() and (q / "manifest").exists()
    assert sorted(p.name for p in (root / "replica").iterdir()) == [seg(i) for i in range(1, 6)]
    assert list((root / "incoming").iterdir()) == []
    state = load_state(root / "state.json")
    assert state.role is Role.STANDBY and state.epoch == 3 and state.activated is None
    assert state.replayed_position == Position(seg(5), len(DATA[5]))
    assert load_history(root).fenced[3] == Position(seg(5), len(DATA[5]))


def test_files_the_shipper_did_not_ship_stay_where_they_are(tmp_path: Path) -> None:
    root = activated_copy(tmp_path / "sg1", tail=False)
    (root / "replica" / "README").write_text("the application's")
    (root / "replica" / f"{seg(9)}.tmp").write_text("half written")
    report = rejoin_dir(root, 3, fork_at(5), pattern=r"E[0-9]{10}\.log")
    assert report["moved_aside"] == [f"replica/{seg(6)}"]
    assert (root / "replica" / "README").exists() and (root / "replica" / f"{seg(9)}.tmp").exists()


def test_a_fork_at_the_end_of_what_it_received_keeps_nothing_it_led(tmp_path: Path) -> None:
    root = activated_copy(tmp_path / "sg1", tail=False)
    report = rejoin_dir(root, 3, fork_at(3))  # the new leader got nothing of epoch 2
    assert report["adopted_segments"] == [] and sorted(report["moved_aside"]) == [
        f"replica/{seg(i)}" for i in (4, 5, 6)
    ]
    assert load_state(root / "state.json").replayed_position == Position(seg(3), len(DATA[3]))


@pytest.mark.parametrize(
    ("fork", "why"),
    [
        (fork_at(5, data=DATA[5][:-1] + b"x"), "another history"),  # same name and size, other bytes
        (Fork(3, Position(seg(5), len(DATA[5])), b""), "no digest"),
        (fork_at(2), "before this node's own epoch began"),  # the new leader lacks what it received
        (Fork(3, Position(seg(5), 10), segment_digest(DATA[5][:10])), "inside this node's"),
        (fork_at(8), "does not hold"),  # a segment this node never wrote
        (Fork(3, None), "not known"),
        (fork_at(5, epoch=2), "not newer"),
    ],
)
def test_a_check_that_fails_changes_nothing(tmp_path: Path, fork: Fork, why: str) -> None:
    root = activated_copy(tmp_path / "sg1")
    before = snapshot(root)
    with pytest.raises(RejoinRefused, match=why):
        rejoin_dir(root, 3, fork)
    assert snapshot(root) == before


def test_not_activated_or_not_newer_is_refused(tmp_path: Path) -> None:
    root = activated_copy(tmp_path / "sg1")
    with pytest.raises(RejoinRefused, match="not newer"):
        rejoin_dir(root, 2, fork_at(5, epoch=2))
    rejoin_dir(root, 3, fork_at(5))
    with pytest.raises(RejoinRefused, match="not activated"):
        rejoin_dir(root, 4, fork_at(5, epoch=4))


def test_redone_after_a_crash_half_way_ends_the_same(tmp_path: Path) -> None:
    """A crash after the moves and one adopted segment (copied and recorded): the redo finishes the job."""
    want = snapshot(rejoin_dir_done(tmp_path / "once"))
    root = activated_copy(tmp_path / "crash" / "sg1", tail=False)
    os.rename(root / "replica" / seg(6), root / "quarantine" / seg(6))  # moved aside before the crash
    (root / "log" / seg(4)).write_bytes(DATA[4])
    ManifestFile(root / "manifest").append(seg(4), len(DATA[4]), segment_digest(DATA[4]), seg(3), 100.0)
    rejoin_dir(root, 3, fork_at(5), now=100.0)
    got = snapshot(root)
    for name in ("manifest", *(f"log/{seg(i)}" for i in range(1, 6)), *(f"replica/{seg(i)}" for i in range(1, 6))):
        assert got[name] == want[name], name
    assert load_state(root / "state.json").epoch == 3


def rejoin_dir_done(root: Path) -> Path:
    copy = activated_copy(root / "sg1", tail=False)
    rejoin_dir(copy, 3, fork_at(5), now=100.0)
    return copy


def test_a_copy_activated_right_after_a_reseed_is_reseeded_again(tmp_path: Path) -> None:
    root = activated_copy(tmp_path / "sg1", tail=False)
    ManifestFile(root / "manifest").rebase(Base(seg(3), None, 1.0, "reseed"), [])
    with pytest.raises(RejoinRefused, match="no manifest record after its base"):
        rejoin_dir(root, 3, fork_at(5))


def test_demote_and_reseed_moves_the_copy_aside_whole(tmp_path: Path) -> None:
    root = activated_copy(tmp_path / "sg1")
    before = snapshot(root)
    report = demote_and_reseed(root, 3, "no fork published")
    state = load_state(root / "state.json")
    assert state.role is Role.SEEDING and state.epoch == 3
    moved = Path(report["moved_to"])
    assert (moved / "replica" / seg(6)).read_bytes() == DATA[6] and report["reseeded"]
    assert (moved / "manifest").read_bytes() == before["manifest"]


def test_the_agent_rejoins_at_the_earliest_fork_after_its_epoch() -> None:
    f3, f4 = fork_at(5, 3), fork_at(4, 4)
    assert rejoin_fork({3: f3, 4: f4}, 2, 4) == (f4, [])  # epoch 4 took fewer of epoch 2's bytes
    assert rejoin_fork({3: f3}, 2, 4) == (f3, [4])
    assert rejoin_fork({}, 2, 3) == (None, [3])
    assert rejoin_fork({1: Fork(1, START)}, 2, 3) == (None, [3])


def test_rejoin_key() -> None:
    doc = {"ha": {"cluster": "c1", "node": "a", "stream": "sg1", "etcd": ["http://127.0.0.1:2379"]}}
    assert load(doc).rejoin == "auto"
    assert load({"ha": {**doc["ha"], "rejoin": "manual"}}).rejoin == "manual"
    with pytest.raises(ValueError, match="rejoin"):
        load({"ha": {**doc["ha"], "rejoin": "always"}})
