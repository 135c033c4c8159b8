"""The manifest's base (receiver/manifest.py ``Base``): where the chain starts once the records before it
are trimmed (standby retention) or were never here (a reseed), in the file, the chain check and replay."""

from __future__ import annotations

from pathlib import Path

from receiver.manifest import Base, chain_problem, parse_base, parse_manifest, record_digest
from receiver.manifest_file import ManifestFile
from receiver.replayer import Gap, Replay, next_to_replay


def _names(n: int) -> list[str]:
    return [f"E{i:08X}.log" for i in range(1, n + 1)]


def _chain(path: Path, n: int) -> ManifestFile:
    m = ManifestFile(path)
    prev = ""
    for name in _names(n):
        m.append(name, 100, name.encode().ljust(16, b"-"), prev, 1000.0)
        prev = name
    m.close()
    return m


def test_a_rebased_manifest_keeps_its_chain_checkable_from_the_base(tmp_path: Path) -> None:
    m = _chain(tmp_path / "manifest", 6)
    records = m.read()
    base = Base(records[2].name, record_digest(records[2]), 2000.0)
    m.rebase(base, records[3:])
    kept = m.read()
    assert [r.name for r in kept] == _names(6)[3:]
    assert m.read_base() == base
    assert chain_problem(kept, base=base) == ""
    # Without the base the same records no longer start a chain: the check is not vacuous.
    assert "recorded after" in chain_problem(kept)
    # A base naming the wrong record digest is another history.
    wrong = Base(records[2].name, record_digest(records[1]), 2000.0)
    assert "another history" in chain_problem(kept, base=wrong)


def test_appends_after_a_base_chain_onto_it_and_rewrite_keeps_the_base(tmp_path: Path) -> None:
    m = _chain(tmp_path / "manifest", 4)
    records = m.read()
    base = Base(records[-1].name, record_digest(records[-1]), 2000.0)
    m.rebase(base, [])
    assert m.read() == []
    appended = m.append("E00000005.log", 100, b"5" * 16, records[-1].name, 3000.0)
    assert appended.pdx == record_digest(records[-1])
    m.rewrite(m.read())
    assert m.read_base() == base and [r.name for r in m.read()] == ["E00000005.log"]
    m.close()


def test_a_reseed_base_without_a_record_digest_is_checked_by_name(tmp_path: Path) -> None:
    m = ManifestFile(tmp_path / "manifest")
    base = Base("E00000009.log", None, 1.0, "reseed")
    m.rebase(base, [])
    first = m.append("E0000000A.log", 10, b"a" * 16, "E00000009.log", 2.0)
    assert first.pdx is None
    second = m.append("E0000000B.log", 10, b"b" * 16, "E0000000A.log", 3.0)
    assert second.pdx == record_digest(first)
    assert chain_problem(m.read(), base=base) == ""
    assert "recorded after" in chain_problem(m.read(), base=Base("E00000007.log", None, 1.0, "reseed"))
    m.close()


def test_records_at_or_before_the_base_are_not_part_of_the_chain() -> None:
    lines = [b'{"at": 1.0, "pdx": "", "prev": "", "seg": "E1", "size": 1, "xxh": "00"}']
    lines.append(Base("E1", None, 2.0).to_line().rstrip())
    lines.append(b'{"at": 3.0, "prev": "E1", "seg": "E2", "size": 1, "xxh": "00"}')
    data = b"\n".join(lines) + b"\n"
    assert [r.name for r in parse_manifest(data)] == ["E2"]
    assert parse_base(data) == Base("E1", None, 2.0)
    # A torn base line is no base.
    assert parse_base(lines[0] + b"\n" + lines[1][:20]) is None


def test_replay_starts_after_the_base_and_refuses_another_history(tmp_path: Path) -> None:
    m = _chain(tmp_path / "manifest", 5)
    records = m.read()
    base = Base(records[1].name, record_digest(records[1]), 2000.0)
    kept = records[2:]
    decision = next_to_replay(kept, records[1].name, 5000.0, 0.0, base)
    assert isinstance(decision, Replay) and decision.record.name == records[2].name
    other = Base(records[1].name, b"\x07" * 16, 2000.0)
    assert isinstance(next_to_replay(kept, records[1].name, 5000.0, 0.0, other), Gap)
    # Replay that stopped before the base cannot go on: the segments in between are gone.
    assert isinstance(next_to_replay(kept, records[0].name, 5000.0, 0.0, base), Gap)
    m.close()
