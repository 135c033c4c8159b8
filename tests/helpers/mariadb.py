"""Tiny real MariaDB servers for the binlog tests: install a datadir, start, query, stop by pid.

Each server listens only on a unix socket in its own directory (``--skip-networking``), so no TCP port
is picked and nothing collides with another server on the host. As root the server runs as root
(``--user=root``): it refuses to otherwise, and the scratch directory is root's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from tests.helpers.waiting import wait_until

PROGRAMS = ("mariadbd", "mariadb-install-db", "mariadb", "mariadb-binlog")


def why_unavailable() -> str | None:
    """Say why real MariaDB servers cannot run here, or None when they can."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]
    if missing:
        return f"no {', '.join(missing)} (Debian's mariadb-server; scripts/_setup.sh installs it as root)"
    return None


def program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class MariaDB:
    """One server: datadir ``root/name``, socket ``root/name.sock``, error log ``root/name.err``."""

    def __init__(
        self,
        root: Path,
        name: str,
        binlog_dir: Path | None = None,
        max_binlog_size: int = 4096,
        config: Path | None = None,
    ) -> None:
        """``config``: an option file read instead of none (``--defaults-file``); its binlog settings
        are then the file's, and ``binlog_dir`` only says where binlogs() looks."""
        self.root = root
        self.config = config
        self.name = name
        self.data = root / name
        self.socket = root / f"{name}.sock"
        self.log = root / f"{name}.err"
        self.binlog_dir = binlog_dir
        self.max_binlog_size = max_binlog_size
        self.popen: subprocess.Popen[bytes] | None = None

    def install(self) -> MariaDB:
        subprocess.run(
            [
                program("mariadb-install-db"),
                "--no-defaults",
                f"--datadir={self.data}",
                f"--user={_user()}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return self

    def argv(self) -> list[str]:
        args = [
            program("mariadbd"),
            f"--defaults-file={self.config}" if self.config is not None else "--no-defaults",
            f"--datadir={self.data}",
            f"--user={_user()}",
            f"--socket={self.socket}",
            "--skip-networking",
            f"--pid-file={self.root / self.name}.pid",
            f"--log-error={self.log}",
            "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=16M",
            "--performance-schema=off",
            "--skip-name-resolve",
        ]
        if self.binlog_dir is not None and self.config is None:
            self.binlog_dir.mkdir(exist_ok=True)
            args += [
                f"--log-bin={self.binlog_dir / 'mysql-bin'}",
                f"--max-binlog-size={self.max_binlog_size}",
                "--server-id=1",
                "--binlog-format=ROW",
            ]
        return args

    def start(self, timeout: float = 60) -> MariaDB:
        self.popen = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: self.try_query("SELECT 1") == "1", timeout, 0.1, f"MariaDB {self.name} to accept queries")
        return self

    def restart(self) -> MariaDB:
        """What ``systemctl restart mariadb`` does: stop (cleanly) if running, start again."""
        self.stop()
        return self.start()

    def kill9(self) -> None:
        """The server is lost: SIGKILL by pid."""
        assert self.popen is not None
        self.popen.kill()
        self.popen.wait(10)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM by pid (a clean shutdown), SIGKILL if it does not end in ``timeout``."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)

    def client(self) -> list[str]:
        return [program("mariadb"), "--no-defaults", f"--socket={self.socket}", "-uroot"]

    def query(self, sql: str, timeout: float = 60) -> str:
        done = subprocess.run([*self.client(), "-N", "-B", "-e", sql], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{self.name}: {sql[:80]!r} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def try_query(self, sql: str) -> str | None:
        try:
            return self.query(sql, timeout=10)
        except (RuntimeError, subprocess.TimeoutExpired):
            return None

    def binlogs(self) -> list[Path]:
        assert self.binlog_dir is not None
        return sorted(p for p in self.binlog_dir.iterdir() if p.name.startswith("mysql-bin.0"))


def _user() -> str:
    return "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
