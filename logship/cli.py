"""Command-line plumbing both daemons share: subcommand dispatch, logging set-up and exit codes.

Exit codes: 0 done, 1 the running daemon refused or a check failed, 2 a usage or configuration error,
130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from logship.admin.control import ControlError
from logship.config import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

Main = Callable[[list[str]], int]


PRIVATE_UMASK = 0o077
"""Files private by default: dirs 0700, files 0600 (segments of a mail store or database are secrets)."""


def add_umask_flag(p: argparse.ArgumentParser) -> None:
    """Add ``--umask``: what the daemon's files may show to group and others."""
    p.add_argument(
        "--umask",
        metavar="OCTAL",
        help="umask for every file and directory the daemon creates (default 077: private; e.g. 027 with a "
        "setgid group directory lets a database group read the replica, 022 lets everyone read)",
    )


def apply_umask(text: str | None) -> int:
    """Set the process umask from ``--umask`` (private when None); return it.

    Raises ConfigError for anything but an octal number up to 777.
    """
    if text is None:
        mask = PRIVATE_UMASK
    else:
        try:
            mask = int(str(text), 8)
        except ValueError:
            raise ConfigError(f"bad umask {text!r}: expected an octal number such as 077 or 027") from None
        if not 0 <= mask <= 0o777:
            raise ConfigError(f"bad umask {text!r}: expected an octal number such as 077 or 027")
    os.umask(mask)
    return mask


def dispatch(argv: Sequence[str] | None, subcommands: Sequence[str], daemon: Main, operator: Main) -> int:
    """Run ``operator`` when the first argument names a subcommand, else ``daemon``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in subcommands:
        return operator(args)
    return daemon(args)


def daemon_logging(role: str, level: str) -> None:
    """Log to stderr with time, role and pid on every line (what a daemon's journal wants)."""
    logging.basicConfig(
        level=level, format=f"%(asctime)s {role}[%(process)d] %(levelname)s %(message)s", stream=sys.stderr
    )


def operator_logging(role: str) -> None:
    """Log warnings only, without timestamps: an operator command prints its own result."""
    logging.basicConfig(level="WARNING", format=f"{role} %(levelname)s %(message)s", stream=sys.stderr)


def guarded(role: str, body: Callable[[], int]) -> int:
    """Run ``body`` and turn the errors an operator can act on into one stderr line and an exit code."""
    try:
        return body()
    except ConfigError as e:
        print(f"{role}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ControlError as e:
        print(f"{role}: error: the running {role} says: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
