"""Files are private by default: a receiver's data dir and a shipper's state dir hold nothing that
group or others can read, unless --umask says otherwise; a data dir others can write is refused."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.source import ROOT
from tests.helpers.waiting import wait_until


def modes(root: Path) -> dict[str, int]:
    """Every path under ``root`` (sockets and the lock aside) with its permission bits."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISSOCK(st.st_mode):
                continue
            found[str(p.relative_to(root))] = stat.S_IMODE(st.st_mode)
    return found


def ship_one(tmp_path: Path, secret: Path, procs: list[Proc], extra: list[str]) -> tuple[Path, Path]:
    source = tmp_path / "src"
    source.mkdir()
    (source / "E0000000001.log").write_bytes(os.urandom(50_000))
    receiver = receiver_proc(tmp_path, secret, extra=extra)
    procs.append(receiver.start())
    shipper = shipper_proc(tmp_path, "p", source, [receiver], secret, ["--seal", "immediate", *extra])
    procs.append(shipper.start())
    data = tmp_path / "receiver"
    wait_until(lambda: (data / "p" / "replica" / "E0000000001.log").exists(), 30, what="the segment replayed")
    state_dir = next(tmp_path.glob("st-p-*"))
    return data, state_dir


def test_everything_is_private_by_default(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    data, state_dir = ship_one(tmp_path, secret, procs, [])
    for root in (data, state_dir):
        found = modes(root)
        assert found, root
        leaky = {p: f"{m:04o}" for p, m in found.items() if m & 0o077}
        assert not leaky, f"readable by group or others under {root}: {leaky}"
    assert modes(data)["p/log/E0000000001.log"] == 0o600
    assert modes(data)["p/log"] == 0o700


def test_umask_widens_what_others_may_read(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    data, _ = ship_one(tmp_path, secret, procs, ["--umask", "022"])
    assert modes(data)["p/replica/E0000000001.log"] == 0o644
    assert modes(data)["p/replica"] == 0o755


def test_a_data_dir_others_can_write_is_refused(tmp_path: Path, secret: Path) -> None:
    data = tmp_path / "open"
    data.mkdir()
    data.chmod(0o777)
    args = ["--listen", "127.0.0.1:0", "--data-dir", str(data), "--secret-file", str(secret)]
    run = subprocess.run(
        [sys.executable, "-m", "receiver", *args], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert run.returncode == 2
    assert f"data dir {data} is writable by others (mode 0777); run: chmod o-w {data}" in run.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "receiver", *args, "--umask", "9z"], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert bad.returncode == 2 and "bad umask '9z'" in bad.stderr
