"""The directory replay target's ways into replica/ (hard link, kernel copy, plain copy) and the
inspection's two paths (the install stamp, a full re-read)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from protocol.digest import chunk_digest, segment_digest
from receiver.manifest import Installed
from receiver.ops import Install, Write
from receiver.store import ReplicaError, SegmentStore
from receiver.targets import DirectoryTarget

S1, S2 = "000000010000000000000001", "000000010000000000000002"


def install(store: SegmentStore, name: str, data: bytes, prev: str = "") -> Installed:
    (record,) = store.apply(
        [Write(name, 0, data, chunk_digest(name, 0, data)), Install(name, len(data), segment_digest(data), prev)]
    )
    return record


def _unsupported(*_: object) -> None:
    raise OSError(errno.EXDEV, "Invalid cross-device link")


def test_same_filesystem_is_a_hard_link_and_replaying_again_replaces_it(store: SegmentStore) -> None:
    record = install(store, S1, b"x" * 5000)
    target = DirectoryTarget(store)
    target.apply(record)
    target.apply(record)  # a retry after a crash before state.json was saved
    assert os.stat(store.replica / S1).st_ino == os.stat(store.log_dir / S1).st_ino
    assert os.stat(store.log_dir / S1).st_nlink == 2
    assert target.how == {"link": 1, "linked already": 1}
    assert target.replica_names() == {S1}


def test_another_filesystem_is_copied_in_the_kernel_and_read_back(
    store: SegmentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = install(store, S1, os.urandom(3 << 20))
    monkeypatch.setattr(os, "link", _unsupported)
    target = DirectoryTarget(store)
    target.apply(record)
    assert (store.replica / S1).read_bytes() == (store.log_dir / S1).read_bytes()
    assert os.stat(store.replica / S1).st_ino != os.stat(store.log_dir / S1).st_ino
    assert set(target.how) <= {"clone", "copy_file_range"}


def test_plain_copy_is_the_last_resort_and_checks_the_bytes(
    store: SegmentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = install(store, S1, b"a" * 1000)
    monkeypatch.setattr(os, "link", _unsupported)
    monkeypatch.setattr(os, "copy_file_range", _unsupported)
    monkeypatch.setattr("receiver.targets.fcntl.ioctl", _unsupported)
    target = DirectoryTarget(store)
    target.apply(record)
    assert (store.replica / S1).read_bytes() == b"a" * 1000 and target.how == {"copy": 1}
    # Bytes that are not those verified never reach replica/, whatever the way.
    (store.log_dir / S1).write_bytes(b"b" * 1000)
    (store.replica / S1).unlink()
    with pytest.raises(ReplicaError, match="changed in log/") as e:
        target.apply(record)
    assert e.value.corrupt and not (store.replica / S1).exists()
    assert not any(store.replica.iterdir())


def test_inspection_trusts_the_install_stamp_once_then_reads(store: SegmentStore) -> None:
    record = install(store, S1, b"one" * 1000)
    assert store.verify_sealed(record) == "stamp"
    assert store.verify_sealed(record) == "read"  # a retry, a second look: the bytes themselves
    assert install(store, S2, b"two", S1) and store.verify_sealed(store.read_manifest()[1], full=True) == "read"


@pytest.mark.parametrize("how", ["same size, at once", "truncated", "replaced"])
def test_any_write_to_log_after_install_forces_the_full_read(store: SegmentStore, how: str) -> None:
    record = install(store, S1, b"a" * 4096)
    path = store.log_dir / S1
    if how == "same size, at once":
        # In the same clock tick as the install: the install mark is a time no write can set.
        with open(path, "r+b") as f:
            f.write(b"X")
    elif how == "truncated":
        os.truncate(path, 100)
    else:
        tmp = path.with_name("x")
        tmp.write_bytes(b"a" * 4096)
        os.replace(tmp, path)
        with open(path, "r+b") as f:
            f.write(b"Y")
    with pytest.raises(ReplicaError) as e:
        store.verify_sealed(record)
    assert e.value.corrupt


def test_a_restarted_store_reads_everything_again(store: SegmentStore, tmp_path: Path) -> None:
    install(store, S1, b"one" * 1000)
    again = SegmentStore(tmp_path / "db1")
    again.recover()
    assert again.verify_sealed(again.read_manifest()[0]) == "read"
