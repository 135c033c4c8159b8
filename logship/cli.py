"""Command-line plumbing both daemons share: subcommand dispatch, logging set-up and exit codes.

Exit codes: 0 done, 1 the running daemon refused or a check failed, 2 a usage or configuration error,
130 interrupted.
"""

from __future__ import annotations

import logging
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
