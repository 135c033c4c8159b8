"""The shipper as the postgres user, and the archive_command that waits for it (docs/postgresql.md).

PostgreSQL runs its archive_command as the postgres user, and the shipper's control socket is 0600,
so the shipper runs as that user too, with a Python it can run: the system python3 with this checkout
and its venv's packages on PYTHONPATH (the venv's own interpreter may live under /root).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

from tests.helpers.pgcluster import BACKUP_PATTERN, PG_USER, WAL_PATTERN, atomic_archive_command, give_to_pg_user
from tests.helpers.procs import Proc
from tests.helpers.source import ROOT

SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"


def pg_python() -> list[str]:
    """A Python command the postgres user can run, with logship and its packages importable."""
    if os.geteuid() != 0:
        return [sys.executable]
    return ["env", f"PYTHONPATH={ROOT}:{SITE}", SYSTEM_PYTHON]


def waiting_archive_command(archive: Path, config: Path, timeout: float) -> str:
    """The recipe's archive_command: copy atomically, then wait until a standby holds the file."""
    py = " ".join(pg_python())
    wait = f"{py} -m shipper wait --config {config} --stream $S --segment %f --sealed --timeout {timeout:g}"
    return f"{{ {atomic_archive_command(archive)}; }} && case %f in *.backup) S=pg-backup;; *) S=pg;; esac && {wait}"


class PgUserShipper(Proc):
    """The shipper, run as the postgres user (like the archive_command that talks to it)."""

    def command(self) -> list[str]:
        return [*pg_python(), "-m", "shipper", *self.argv()]

    def start(self) -> PgUserShipper:
        assert self.popen is None or self.popen.poll() is not None
        user = pwd.getpwnam(PG_USER) if os.geteuid() == 0 else None
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=log,
                cwd="/",
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
            )
        self.starts += 1
        return self


def shipper_config(root: Path, archive: Path, secret: Path, receiver: str) -> Path:
    """The recipe's shipper config (streams pg and pg-backup from ``archive``), readable by postgres."""
    text = f'node = "pg-primary"\nstate_dir = "{root / "shipper-state"}"\n'
    for name, pattern in (("pg", WAL_PATTERN), ("pg-backup", BACKUP_PATTERN)):
        text += f'\n[[stream]]\nname = "{name}"\nsource = "{archive}"\nsecret_file = "{secret}"\n'
        text += f"seal = \"immediate\"\npattern = '{pattern}'\n"
        text += f'[[stream.target]]\naddress = "{receiver}"\n'
    config = root / "shipper.toml"
    config.write_text(text)
    give_to_pg_user(config)
    return config
