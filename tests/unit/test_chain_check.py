"""The chain check a handshake runs (receiver/chain_check.py): the same verdicts as ``chain_problem`` for
every list it is given, with the records it already found linked not hashed again."""

from __future__ import annotations

import dataclasses

import pytest

from receiver import manifest
from receiver.chain_check import ChainCheck
from receiver.manifest import Base, Installed, chain_problem, record_digest


def chain(n: int, start: int = 0, before: Installed | None = None) -> list[Installed]:
    out: list[Installed] = []
    prev = before
    for i in range(start, start + n):
        r = Installed(
            f"E{i:011d}.log",
            100,
            b"\x01" * 16,
            prev.name if prev else "",
            1.7e9 + i,
            record_digest(prev) if prev else b"",
        )
        out.append(r)
        prev = r
    return out


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The records whose digest was computed (the real digest, counted)."""
    seen: list[str] = []
    real = manifest.record_digest

    def counted(record: Installed) -> bytes:
        seen.append(record.name)
        return real(record)

    monkeypatch.setattr(manifest, "record_digest", counted)
    return seen


def test_appended_records_are_the_only_ones_hashed_again(hashed: list[str]) -> None:
    check = ChainCheck()
    records = chain(50)
    assert check.problem(records, None) == ""
    assert len(hashed) == 49
    hashed.clear()
    records += chain(3, 50, records[-1])  # three installs later
    assert check.problem(records, None) == ""
    assert len(hashed) <= 4  # the last one found linked, and the new ones but the newest
    hashed.clear()
    assert check.problem(records, None) == ""  # unchanged: one digest, of the last one found linked
    assert len(hashed) <= 1


def test_a_record_that_breaks_the_chain_is_found_where_chain_problem_finds_it() -> None:
    check = ChainCheck()
    records = chain(20)
    assert check.problem(records, None) == ""
    stranger = dataclasses.replace(chain(1, 20, records[-1])[0], pdx=b"\x02" * 16)
    broken = [*records, stranger]
    assert check.problem(broken, None) == chain_problem(broken, names=False) != ""
    # A record in the middle replaced (a rewind read again from disk): checked whole, found.
    middle = [*records[:10], dataclasses.replace(records[10], pdx=b"\x03" * 16), *records[11:]]
    assert check.problem(middle, None) == chain_problem(middle, names=False) != ""
    assert check.problem(records, None) == ""


def test_a_new_base_or_a_trimmed_front_is_checked_whole(hashed: list[str]) -> None:
    check = ChainCheck()
    records = chain(30)
    assert check.problem(records, None) == ""
    hashed.clear()
    trimmed = records[10:]
    base = Base(records[9].name, record_digest(records[9]), 1.7e9)
    hashed.clear()
    assert check.problem(trimmed, base) == ""
    assert len(hashed) == len(trimmed) - 1
    wrong = Base(records[9].name, b"\x04" * 16, 1.7e9)
    assert check.problem(trimmed, wrong) == chain_problem(trimmed, names=False, base=wrong) != ""
