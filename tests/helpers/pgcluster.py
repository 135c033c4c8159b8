"""Tiny real PostgreSQL clusters for the standby tests: initdb, configure, start, query, promote, stop;
the scratch set-up they share (a scratch dir kept on request, an archive, an archiving primary, a base
backup, a hot standby restoring from a receiver's replica/).

The server refuses to run as root, so when the tests run as root every PostgreSQL program runs as the
``postgres`` user (``runuser -u postgres --``) and the scratch directory is handed to that user.
Clusters listen only on a unix socket inside the scratch directory, never on TCP: the port number only
names the socket file (``.s.PGSQL.<port>``) in a directory no one else uses, so a fixed number per
cluster cannot collide with another process the way a free TCP port picked in advance could.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PG_USER = "postgres"


def find_pg_bin() -> Path | None:
    """Return the newest PostgreSQL server bin directory (LOGSHIP_PG_BIN overrides), or None."""
    if env := os.environ.get("LOGSHIP_PG_BIN"):
        return Path(env) if (Path(env) / "initdb").exists() else None
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


def why_unavailable() -> str | None:
    """Say why real PostgreSQL clusters cannot run here, or None when they can."""
    pg_bin = find_pg_bin()
    if pg_bin is None:
        return (
            "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb); scripts/_setup.sh installs them as root"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"running as root but there is no {PG_USER!r} user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root but runuser (util-linux) is missing"
    return None


def as_pg_user(argv: list[str]) -> list[str]:
    """Prefix ``argv`` so it runs as the postgres user when we are root (the server refuses root)."""
    return ["runuser", "-u", PG_USER, "--", *argv] if os.geteuid() == 0 else argv


def give_to_pg_user(path: Path) -> None:
    """Make ``path`` owned by the postgres user when we are root."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam(PG_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def scratch_dir(prefix: str) -> Path:
    """A fresh directory under /tmp that the postgres user can use (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    give_to_pg_user(path)
    return path


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A scratch_dir() removed afterwards, unless LOGSHIP_KEEP_PG is set (then its path is printed)."""
    root = scratch_dir(prefix)
    try:
        yield root
    finally:
        if os.environ.get("LOGSHIP_KEEP_PG"):
            print(f"\nPostgreSQL scenario kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def scratch_fixture(prefix: str) -> Any:
    """A pytest fixture named ``root``: a scratch() directory for one test (``root = scratch_fixture(...)``)."""
    import pytest  # here, not at the top: scripts/benchmarks use this module without pytest

    @pytest.fixture
    def root() -> Iterator[Path]:
        with scratch(prefix) as path:
            yield path

    return root


def archive_dir(root: Path) -> Path:
    """``root``/archive, where a primary's archive_command writes and a shipper reads."""
    archive = root / "archive"
    archive.mkdir()
    give_to_pg_user(archive)
    return archive


def run(argv: list[str], timeout: float = 60) -> str:
    """Run a PostgreSQL program (as the postgres user when root); return stdout, raise with its output."""
    done = subprocess.run(as_pg_user(argv), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


class Cluster:
    """One PostgreSQL cluster: a data directory, a port (its socket's name), a socket dir, a server log."""

    def __init__(self, pg_bin: Path, data: Path, port: int, socket_dir: Path) -> None:
        self.pg_bin = pg_bin
        self.data = data
        self.port = port
        self.socket_dir = socket_dir
        self.log = data.parent / f"{data.name}.log"

    @classmethod
    def under(cls, root: Path, name: str, port: int) -> Cluster:
        """The cluster ``root``/``name`` of the newest server found, its socket in ``root`` too."""
        pg_bin = find_pg_bin()
        assert pg_bin is not None
        return cls(pg_bin, root / name, port, root)

    def bin(self, name: str) -> str:
        return str(self.pg_bin / name)

    def initdb(self) -> None:
        """Create the cluster with 1 MiB WAL segments, so that segments fill and get archived quickly."""
        run([self.bin("initdb"), "-D", str(self.data), "-U", PG_USER, "-A", "trust", "--wal-segsize=1", "-N"])

    def configure(self, settings: dict[str, str | int]) -> None:
        """Append settings to postgresql.conf (later lines win)."""
        lines = [f"{key} = {value if isinstance(value, int) else quote(value)}" for key, value in settings.items()]
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n# logship test settings\n" + "\n".join(lines) + "\n")

    def base_settings(self) -> dict[str, str | int]:
        return {
            "listen_addresses": "",
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "shared_buffers": "16MB",
            "logging_collector": "off",
        }

    def init_primary(self, archive: Path, archive_command: str | None = None) -> None:
        """Create a primary that archives into ``archive`` (by default with the recipe's atomic command),
        switching to a new segment, and so archiving it, at most 1 s after a commit."""
        self.initdb()
        command = archive_command if archive_command is not None else atomic_archive_command(archive)
        self.configure(
            {**self.base_settings(), "archive_mode": "on", "archive_command": command, "archive_timeout": "1s"}
        )

    def base_backup_argv(self) -> list[str]:
        """pg_basebackup of this cluster, through its socket; the caller adds where to and how."""
        return [self.bin("pg_basebackup"), "-h", str(self.socket_dir), "-p", str(self.port), "-U", PG_USER]

    def base_backup(self, dest: Path) -> None:
        """Take a base backup into ``dest`` with no WAL (-X none): a standby replays every WAL byte it
        needs through logship."""
        run([*self.base_backup_argv(), "-D", str(dest), "-X", "none", "-c", "fast", "--no-sync"], timeout=120)

    def touch(self, name: str) -> None:
        path = self.data / name
        path.touch()
        give_to_pg_user(path)

    def start(self, wait: bool = True) -> None:
        """Start the server; ``wait=False``: return at once, not when it is consistent (a standby's
        consistency can be a replay lag, or a loaded machine's minutes, away: pg_ctl -w gives up at -t)."""
        if wait:
            run([self.bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"], timeout=90)
        else:
            run([self.bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-W", "start"], timeout=60)

    def promote(self) -> None:
        run([self.bin("pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "promote"], timeout=90)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop the server: fast shutdown, and kill -9 of its postmaster pid if that does not work."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        try:
            run([self.bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop"], timeout=40)
        except (RuntimeError, subprocess.TimeoutExpired):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def psql(self, sql: str, timeout: float = 30) -> str:
        """Run SQL; return the unaligned, tuples-only output. Raises RuntimeError on any error."""
        argv = [self.bin("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", str(self.socket_dir), "-p", str(self.port), "-U", PG_USER, "-d", "postgres", "-c", sql]
        return run(argv, timeout=timeout).strip()

    def try_psql(self, sql: str) -> str | None:
        """Like psql(), but None while the server does not accept connections or the query fails."""
        try:
            return self.psql(sql, timeout=15)
        except (RuntimeError, subprocess.TimeoutExpired):
            return None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def make_standby(base: Path, cluster: Cluster, restore_from: Path) -> None:
    """Turn a copy of the base backup into a hot standby that restores WAL from ``restore_from`` only."""
    if base != cluster.data:
        shutil.copytree(base, cluster.data, symlinks=True)
    cluster.configure(
        {
            **cluster.base_settings(),
            # The copied postgresql.conf archives into the primary's archive: a standby must not.
            "archive_mode": "off",
            "hot_standby": "on",
            "restore_command": f"cp {restore_from}/%f %p",
            # How soon recovery asks restore_command again after a segment was not there (default 5s).
            "wal_retrieve_retry_interval": "500ms",
            "primary_conninfo": "",
        }
    )
    cluster.touch("standby.signal")
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", str(cluster.data)], check=True)
    cluster.data.chmod(0o700)


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def atomic_archive_command(archive: Path) -> str:
    """The archive_command of the recipe: copy to a dot-temp name, fsync it, rename, fsync the directory.

    The shipper never takes a name starting with '.', and the rename makes each file appear whole, so
    the shipper can run with --seal immediate. A name already archived is never overwritten: asked
    again (after a crash between the rename and PostgreSQL noting it), the command succeeds only if
    the archived file is identical.
    """
    a = str(archive)
    return (
        f"if test -f {a}/%f; then cmp -s %p {a}/%f; "
        f"else cp %p {a}/.%f.tmp && sync {a}/.%f.tmp && mv {a}/.%f.tmp {a}/%f && sync {a}; fi"
    )


# The recipe's two streams from one archive directory. Log order is name order, and PostgreSQL archives
# each .backup file (named after the backup's start segment) after the backup's stop segment, so in one
# stream it would sort before a segment already shipped. WAL segments and timeline history files do come
# in name order: a history file NNNNNNNN.history sorts after every segment of older timelines and before
# every segment of its own.
WAL_PATTERN = r"[0-9A-F]{24}|[0-9A-F]{8}\.history"
BACKUP_PATTERN = r"[0-9A-F]{24}\.[0-9A-F]{8}\.backup"
