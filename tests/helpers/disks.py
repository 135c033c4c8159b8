"""Small filesystems the fault tests mount (tmpfs, root only) to fill a disk for real."""

from __future__ import annotations

import subprocess
from pathlib import Path


def mount(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``mount ARGS`` (root only), its outcome returned rather than raised."""
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


def umount(path: Path) -> None:
    """Unmount ``path``; lazily if it is busy (a daemon that has not let go yet)."""
    if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)
