"""Command-line plumbing both daemons share: subcommand dispatch, logging set-up and exit codes.

Exit codes: 0 done, 1 the running daemon refused or a check failed, 2 a usage or configuration error,
130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from logship.admin.control import ControlError
from logship.admin.live import Looker, Watcher
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


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that takes no abbreviations and reports a usage error in one line.

    Abbreviations are off because a unit file's ``--targe`` should fail, and keep failing when a
    flag is added that it would then abbreviate. The one line (``prog: error: ...; see --help``) is
    what a journal shows best, and matches the one-line configuration errors.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_version(p: argparse.ArgumentParser, version: str) -> None:
    """Add ``--version`` to ``p``."""
    p.add_argument("--version", action="version", version=f"logship {version}", help="print the version and exit")


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


def add_status_flags(p: argparse.ArgumentParser, duration: Callable[[str], float]) -> None:
    """Add the flags both sides' ``status`` take: --stream, --watch [SECONDS], --count; ``duration`` parses."""
    p.add_argument("--stream", metavar="S", help="show only this stream (exit 2 if there is none)")
    p.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=duration,
        metavar="SECONDS",
        help="look again every SECONDS (default 2s, at least 100ms) until Ctrl-C: on a terminal a live table "
        "with a catch-up bar, rate and ETA per target; otherwise one key=value line per row and look",
    )
    p.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N looks")


def watch(show: Callable[[], int], interval: float | None, count: int | None = None, look: Looker | None = None) -> int:
    """Run ``show`` (prints one status, returns its exit code) once, or every ``interval`` seconds.

    With an interval and a ``look`` (a table, not JSON), logship.admin.live draws it: a live table with
    a catch-up bar on a terminal, plain ``key=value`` lines otherwise. Without ``look`` (``--json``) it
    prints ``show``'s output again every interval. It runs ``count`` times (None: until Ctrl-C) and
    returns the last exit code; Ctrl-C ends it cleanly, without a traceback.
    """
    if interval is None:
        return show()
    if look is not None:
        return Watcher(look, interval, count).run()
    interval = max(0.1, interval)  # no busy loop against the daemon's control socket
    code, shown = EXIT_OK, 0
    try:
        while count is None or shown < count:
            if shown:
                time.sleep(interval)
                print()
            code = show()
            sys.stdout.flush()
            shown += 1
    except KeyboardInterrupt:
        print()
    return code
