"""Tiny real PostgreSQL clusters for the standby tests: initdb, configure, start, query, promote, stop.

The server refuses to run as root, so when the tests run as root every PostgreSQL program runs as the
``postgres`` user (``runuser -u postgres --``) and the scratch directory is handed to that user.
Clusters listen only on a unix socket inside the scratch directory, never on TCP: the port number only
names the socket file (``.s.PGSQL.<port>``) in a directory no one else uses, so a fixed number per
cluster cannot collide with another process the way a free TCP port picked in advance could.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

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

    def touch(self, name: str) -> None:
        path = self.data / name
        path.touch()
        give_to_pg_user(path)

    def start(self) -> None:
        run([self.bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"], timeout=90)

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
