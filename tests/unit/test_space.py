"""receiver/space.py: the min_free setting, the guard's verdict on a real file system, and a state save
that waits out a full disk (a real 256 KiB tmpfs, root only) instead of failing."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from logship.config import ConfigError
from protocol.digest import chunk_digest, segment_hasher
from protocol.failures import Kind, classify_os_error
from protocol.messages import Error, Position
from receiver.committer import Attachment
from receiver.manifest import Installed
from receiver.ops import Install, Op, Write
from receiver.space import SpaceGuard, is_no_space, write_until_room
from receiver.space_config import MinFree, parse_min_free
from receiver.store import SegmentStore
from shipper.handshake import refusal

MiB = 1 << 20


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("64MiB", MinFree(size=64 * MiB)),
        ("0", MinFree(size=0)),
        (4096, MinFree(size=4096)),
        ("1%", MinFree(percent=1.0)),
        (" 0.5% ", MinFree(percent=0.5)),
    ],
)
def test_parse_min_free(text: str | int, expect: MinFree) -> None:
    assert parse_min_free(text) == expect


@pytest.mark.parametrize("text", ["", "-1", "100%", "x%", "5 parsecs", "%"])
def test_parse_min_free_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="min_free"):
        parse_min_free(text)


def test_thresholds() -> None:
    assert MinFree(size=5).threshold(1 << 40) == 5
    assert MinFree(percent=2).threshold(1000 * MiB) == 20 * MiB
    # The default: 64 MiB, but at most 1% of a small file system.
    assert MinFree().threshold(1 << 40) == 64 * MiB
    assert MinFree().threshold(100 * MiB) == MiB


def test_no_space_is_transient() -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    assert is_no_space(full) and classify_os_error(full) is Kind.TRANSIENT
    assert not is_no_space(OSError(errno.EACCES, "Permission denied"))


def test_no_space_and_another_shipper_are_back_off_refusals() -> None:
    for code in ("no-space", "another-shipper"):
        refused = refusal(Error(code, "why"), "db1")
        assert refused.code == code and not refused.permanent and "why" in str(refused)


def test_guard_on_a_real_file_system(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    assert SpaceGuard(tmp_path, MinFree(size=0)).problem() is None
    guard = SpaceGuard(tmp_path, MinFree(size=free + (1 << 40)), interval=0)
    with caplog.at_level(logging.WARNING, logger="receiver"):
        for _ in range(5):
            problem = guard.problem()
            assert problem is not None and "it keeps free" in problem
        guard.min_free = MinFree(size=0)
        assert guard.problem() is None
    # One line when it filled, one when space returned, however often it was asked.
    assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING"], caplog.text


@contextlib.contextmanager
def tiny_tmpfs(where: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (mount -t tmpfs)")
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(filler: Path) -> None:
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"x" * 4096)
    finally:
        os.close(fd)


def test_after_enospc_full_until_there_is_clearly_more_room(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "fs") as fs:
        fill(fs / "filler")
        os.truncate(fs / "filler", 128 * 1024)  # half free again: above min_free 0, as after a large write
        guard = SpaceGuard(fs, MinFree(size=0), interval=0)
        assert guard.problem() is None
        assert "disk full" in guard.enospc(OSError(errno.ENOSPC, "No space left on device"))
        # The same free space that failed is not "space returned": no fail-recover-fail cycle.
        assert guard.problem() is not None
        (fs / "filler").unlink()
        assert guard.problem() is None


def test_state_save_waits_for_space(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "fs") as fs:
        filler = fs / "filler"
        fill(filler)
        state = fs / "state.json"
        versions = iter(range(1000))

        async def scenario() -> int:
            save = asyncio.create_task(write_until_room(state, lambda: b'{"v": %d}' % next(versions), max_pause=0.1))
            await asyncio.sleep(0.5)
            assert not save.done() and not state.exists()
            filler.unlink()
            async with asyncio.timeout(5):
                return await save

        tries = asyncio.run(scenario())
        # What was written is the newest state (produced again for the try that succeeded).
        assert state.read_bytes() == b'{"v": %d}' % tries
    assert tries >= 2


def test_state_save_raises_what_space_cannot_fix(tmp_path: Path) -> None:
    async def scenario() -> None:
        await write_until_room(tmp_path / "missing" / "state.json", lambda: b"{}")

    with pytest.raises(FileNotFoundError):
        asyncio.run(scenario())


class _Conn:
    """What a committer needs of a connection: the frames it sent, and whether it was closed."""

    closing = False

    def __init__(self) -> None:
        self.sent: list[object] = []
        self.writer = self
        self.closed = False

    def send(self, msg: object) -> int:
        self.sent.append(msg)
        return 0

    def close(self) -> None:
        self.closed = True


class _Copy:
    name = "db1"
    replayed_position = Position("", 0)

    def __init__(self, store: SegmentStore) -> None:
        self.store = store
        self.installed: list[Installed] = []

    def on_installed(self, records: list[Installed]) -> None:
        self.installed += records


def test_a_batch_that_fills_the_disk_after_an_install_still_reports_the_install(tmp_path: Path) -> None:
    # Replay learns of installs only from the committer: one lost here was a gap replay Failed on.
    with tiny_tmpfs(tmp_path / "fs") as fs:
        store = SegmentStore(fs / "db1")
        first, second = b"a" * 4096, os.urandom(1 << 20)  # the second does not fit in 256 KiB
        h = segment_hasher()
        h.update(first)
        ops: list[Op] = [
            Write("E1", 0, first, chunk_digest("E1", 0, first)),
            Install("E1", len(first), h.digest(), ""),
            Write("E2", 0, second, chunk_digest("E2", 0, second)),
        ]
        copy, conn = _Copy(store), _Conn()
        guard = SpaceGuard(fs, MinFree(size=0))

        async def scenario() -> Attachment[_Copy]:
            att = Attachment(copy, conn, None, Position("", 0), True, 1 << 30, None, guard)  # type: ignore[arg-type]
            att.submit(ops)
            async with asyncio.timeout(10):
                await att.task
            return att

        att = asyncio.run(scenario())
        assert is_no_space(att.error) and conn.closed  # type: ignore[arg-type]
        assert [r.name for r in copy.installed] == ["E1"]
        assert [m.code for m in conn.sent if isinstance(m, Error)] == ["no-space"]
        assert guard.problem() is not None
