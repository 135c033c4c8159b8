"""The pure decisions of receiver/space.py and receiver/storage_retry.py as tables, and the cut of an
unacknowledged tail on a real store directory."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from protocol.digest import chunk_digest
from protocol.messages import START, Position
from receiver import __main__ as receiver_main
from receiver.config import settings_from_args
from receiver.ops import Write
from receiver.space import SpaceGuard, command_lacks_space, free_space
from receiver.space_config import MinFree
from receiver.status import waiting_row
from receiver.storage_retry import StorageTrouble, cut_to, drop_unacknowledged, is_storage_retry
from receiver.store import SegmentStore

MiB = 1 << 20
GiB = 1 << 30
ROOMY = (50 * GiB, 100 * GiB)


@pytest.mark.parametrize(
    ("output", "free", "waits"),
    [
        # The command says so itself, whatever the file systems we can see say (it wrote elsewhere).
        ("cp: error writing '/mnt/x': No space left on device", [ROOMY], True),
        ("cp: error writing '/mnt/x': no space left on device", [], True),
        ("dd: writing: Disk quota exceeded", [ROOMY], True),
        # Silent about it, but replica/ (or the data dir) is below min_free (64 MiB by default).
        ("exit 1", [ROOMY, (10 * MiB, 100 * GiB)], True),
        ("exit 1", [(63 * MiB, 100 * GiB)], True),
        # A small file system: under ENOSPC_ROOM capped at a tenth of it (200 KiB of 2 MiB) is full.
        ("", [(100 * 1024, 2 * MiB)], True),
        ("", [(1 * MiB, 2 * MiB)], False),
        # Room everywhere: an ordinary failure (retried, then Failed).
        ("pg_ctl: could not connect", [ROOMY, ROOMY], False),
        ("", [], False),
        ("", [(0, 0)], False),  # a file system that could not be asked says nothing
    ],
)
def test_command_lacks_space(output: str, free: list[tuple[int, int]], waits: bool) -> None:
    assert (command_lacks_space(output, free) is not None) is waits


def test_command_lacks_space_follows_min_free() -> None:
    free = [(200 * MiB, 100 * GiB)]
    assert command_lacks_space("", free) is None
    assert command_lacks_space("", free, MinFree(size=256 * MiB)) is not None


def test_a_replay_command_judges_space_by_the_receivers_min_free(tmp_path: Path, secret: Path) -> None:
    # The setting reaches the command backend through the replay settings of every stream.
    conf = tmp_path / "receiver.toml"
    conf.write_text(
        f'listen = "127.0.0.1:0"\ndata_dir = "{tmp_path}/data"\nsecret_file = "{secret}"\nmin_free = "5%"\n'
        'replay = "command"\nreplay_command = "true"\n[streams.pg]\nreplay_lag = "1s"\n'
    )
    settings = settings_from_args(receiver_main.build_parser().parse_args(["--config", str(conf)]))
    for stream in ("pg", "other"):
        assert settings.replay_for(stream).min_free == MinFree(percent=5.0)
    free = [(4 * GiB, 100 * GiB)]
    assert command_lacks_space("", free, settings.replay_for("pg").min_free) is not None
    assert command_lacks_space("", free) is None


def test_free_space_skips_what_does_not_exist(tmp_path: Path) -> None:
    (found,) = free_space([tmp_path / "missing", tmp_path])
    assert 0 <= found[0] <= found[1] and found[1] > 0


A, B, C = "E01.log", "E02.log", "E03.log"


@pytest.mark.parametrize(
    ("segment", "acked", "sealed", "keep"),
    [
        (B, Position(B, 4096), False, 4096),  # the acknowledged segment: back to its acknowledged offset
        (C, Position(B, 4096), False, 0),  # a newer one: nothing of it was acknowledged
        (B, Position(A, 100), True, 0),
        (A, START, False, 0),
        (B, Position(B, 100), True, None),  # acknowledged sealed: not the active partial, recovery's job
        (A, Position(B, 4096), False, None),  # an older stray
    ],
)
def test_cut_to(segment: str, acked: Position, sealed: bool, keep: int | None) -> None:
    assert cut_to(segment, acked, sealed) == keep


@pytest.mark.parametrize(
    ("code", "retry"),
    [(errno.EIO, True), (errno.EAGAIN, True), (errno.ETIMEDOUT, True), (errno.ENOSPC, False), (errno.ENOENT, False)],
)
def test_is_storage_retry(code: int, retry: bool) -> None:
    assert is_storage_retry(OSError(code, os.strerror(code))) is retry
    assert not is_storage_retry(ValueError("no errno"))


def test_drop_then_recover_resumes_at_the_acknowledged_offset(tmp_path: Path) -> None:
    store = SegmentStore(tmp_path / "s")
    data = os.urandom(64 * 1024)
    step = 16384
    ops = [
        Write(B, off, data[off : off + step], chunk_digest(B, off, data[off : off + step]))
        for off in range(0, len(data), step)
    ]
    store.apply(ops)
    store.close()
    assert drop_unacknowledged(store, Position(B, 32768), False) == 32768
    rec = store.recover()
    assert (rec.active, rec.offset, rec.discarded) == (B, 32768, 0)
    # Its chunk records were cut with it: a second recovery finds nothing more to cut.
    assert store.recover().offset == 32768


def test_a_cut_that_failed_is_made_before_the_next_recovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SegmentStore(tmp_path / "s")
    (store.incoming / f"{B}.partial").write_bytes(b"x" * 1000)
    trouble = StorageTrouble()
    real = os.ftruncate

    def broken(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "ftruncate", broken)
    text = trouble.failed(store, "s", OSError(errno.EIO, "Input/output error"), Position(B, 10), False)
    assert text.startswith("(EIO) on stream s: Input/output error; the bytes not acknowledged are cut before"), text
    assert (store.incoming / f"{B}.partial").stat().st_size == 1000
    monkeypatch.setattr(os, "ftruncate", real)
    trouble.before_recover(store, "s")
    assert (store.incoming / f"{B}.partial").stat().st_size == 10
    assert trouble.problem("s") == "storage failed (EIO) on stream s: Input/output error x1"
    trouble.acknowledged("s")
    assert trouble.problem("s") is None


@pytest.mark.parametrize(
    ("state", "why", "shown"),
    [
        ("Healthy", "disk full (1.0 MiB free, min_free 64MiB)", "Waiting"),
        ("Disconnected", "replay waiting for space: x", "Waiting"),
        ("Initializing", "storage failed (EIO) on stream s: x x2", "Waiting"),
        ("Healthy", None, "Healthy"),
        ("Failed", "disk full (1.0 MiB free, min_free 64MiB)", "Failed"),  # says more than Waiting
        ("Suspended", "disk full (1.0 MiB free, min_free 64MiB)", "Suspended"),
    ],
)
def test_waiting_row(state: str, why: str | None, shown: str) -> None:
    row = waiting_row({"state": state, "retrying": None}, why)
    assert row["state"] == shown
    assert row["waiting"] == int(shown == "Waiting")
    assert row["retrying"] == (why if shown == "Waiting" else None)


def test_the_guard_names_what_a_copy_waits_for(tmp_path: Path) -> None:
    guard = SpaceGuard(tmp_path, MinFree(percent=100.0))  # never room: the disk counts as full
    assert guard.problem() is not None
    assert guard.waiting("s") is None  # not refused yet: it may have nothing to send
    guard.refused("s")
    why = guard.waiting("s")
    assert why is not None and why.startswith("disk full (") and why.endswith(" free, min_free 100%)"), why
    assert guard.waiting("other", "waiting for space: replica/ full") == "replay waiting for space: replica/ full"
    guard.storage.failed_recovery("other", OSError(errno.EIO, "Input/output error"))
    assert guard.waiting("other") == "storage failed (EIO) on stream other: Input/output error x1"


def test_the_status_table_shows_a_waiting_copy() -> None:
    from receiver.state import CopyState
    from receiver.status import copy_row, render_rows

    row = waiting_row(copy_row("db1", CopyState(), [], 0.0, False, True), "disk full (1.0 MiB free, min_free 64MiB)")
    text = render_rows([row], 0.0)
    assert "Waiting" in text and "retrying: disk full (1.0 MiB free, min_free 64MiB)" in text, text
