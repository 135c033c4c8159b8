"""Status rows' history (receiver/history_file.py ``history_rows``): read from history.json once, and again
only when the file changed (a save renames a new one in, an edit changes its size or mtime)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocol.history import Fork, History
from protocol.messages import Position
from receiver import history_file
from receiver.history_file import CopyHistory, history_path, history_rows, save_history


def fork(epoch: int, offset: int) -> Fork:
    return Fork(epoch, Position("E0000000005.log", offset), b"\x01" * 16)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The history files read (the real reads, counted)."""
    seen: list[Path] = []
    real = history_file.load_history

    def counted(root: Path) -> CopyHistory:
        seen.append(root)
        return real(root)

    monkeypatch.setattr(history_file, "load_history", counted)
    return seen


def test_an_unchanged_file_is_read_once_a_saved_or_edited_one_again(tmp_path: Path, reads: list[Path]) -> None:
    assert history_rows(tmp_path) == [] and reads == []  # no file: epoch 0, nothing to read
    save_history(tmp_path, "db1", CopyHistory(History((fork(1, 100),))))
    first = history_rows(tmp_path)
    assert [r["epoch"] for r in first] == [1]
    for _ in range(5):
        assert history_rows(tmp_path) == first
    assert len(reads) == 1
    first[0]["epoch"] = 99  # a caller's change to its rows is its own
    assert history_rows(tmp_path)[0]["epoch"] == 1
    save_history(tmp_path, "db1", CopyHistory(History((fork(1, 100), fork(2, 200)))))
    assert [r["epoch"] for r in history_rows(tmp_path)] == [1, 2]
    assert len(reads) == 2
    # Written in place by hand (same inode): its mtime moved.
    path = history_path(tmp_path)
    text = path.read_text().replace('"off": 200', '"off": 300')
    with open(path, "r+") as f:
        f.write(text)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert history_rows(tmp_path)[1]["fork"]["off"] == 300
    assert len(reads) == 3
    os.unlink(path)
    assert history_rows(tmp_path) == []


def test_a_file_that_is_not_a_history_gives_no_rows(tmp_path: Path) -> None:
    history_path(tmp_path).write_text("[1, 2]")
    assert history_rows(tmp_path) == []
