"""The ``logship`` console command: one entry point for both daemons and every operator command.

``logship ship ...`` runs the shipper and ``logship receive ...`` the receiver, with exactly the flags
of ``python -m shipper`` / ``python -m receiver``. Operator commands go to the side they belong to:
``activate`` and ``fence`` to the receiver, ``wait`` to the shipper; ``status``, ``suspend`` and ``resume`` to the
receiver when given ``--data-dir`` (or a config file with ``data_dir``), else to the shipper.
``logship shipper ...`` and ``logship receiver ...`` name the side explicitly.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Callable, Sequence

from logship.version import DISTRIBUTION, version

__all__ = ["DISTRIBUTION", "main", "side_of", "version"]

USAGE = """\
usage: logship COMMAND [ARGS...]

daemons:
  ship ...           tail a stream's log directory and ship it (python -m shipper)
  receive ...        accept shippers, keep verified copies, replay them (python -m receiver)

operator commands:
  status ...         copy and replay queues, lag and state per stream and target
  suspend ...        stop shipping to a target (--target) or replaying a copy (--data-dir)
  resume ...         undo suspend
  activate ...       make a standby's copy the new primary (receiver)
  fence ...          tell a standby that epoch N exists: older shippers are refused (receiver)
  wait ...           until a segment's bytes are durable at the targets a sync policy requires (shipper)
  loadgen ...        write a test log to ship (segments appended at a rate)
  ha --config F      run a node's HA agent: leader lease in etcd, promote/demote hooks (docs/failover.md)
  ha status|switchover --to N|failover --to N --force   the HA cluster's view; move the primary

  shipper CMD ...    any shipper command, explicitly
  receiver CMD ...   any receiver command, explicitly

logship COMMAND --help explains each. --version prints the version.
"""


def _shipper(argv: list[str]) -> int:
    from shipper.__main__ import main

    return main(argv)


def _receiver(argv: list[str]) -> int:
    from receiver.__main__ import main

    return main(argv)


def _loadgen(argv: list[str]) -> int:
    from logship.loadgen import main

    return main(argv)


def _ha(argv: list[str]) -> int:
    from logship.ha.__main__ import main

    return main(argv)


def _config_has_data_dir(argv: Sequence[str]) -> bool:
    path = _flag_value(argv, "--config")
    if path is None:
        return False
    try:
        with open(path, "rb") as f:
            return "data_dir" in tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return False  # the side that reads it reports the error


def _flag_value(argv: Sequence[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def side_of(command: str, argv: Sequence[str]) -> str:
    """Return ``shipper`` or ``receiver``: the side an operator command belongs to."""
    if command in ("activate", "fence"):
        return "receiver"
    if command == "wait":
        return "shipper"
    if _flag_value(argv, "--data-dir") is not None or _config_has_data_dir(argv):
        return "receiver"
    return "shipper"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] in ("--version", "-V"):
        print(f"logship {version()}")
        return 0
    command, rest = args[0], args[1:]
    sides: dict[str, Callable[[list[str]], int]] = {"shipper": _shipper, "receiver": _receiver}
    if command == "ship":
        return _shipper(rest)
    if command == "receive":
        return _receiver(rest)
    if command in sides:
        return sides[command](rest)
    if command == "loadgen":
        return _loadgen(rest)
    if command == "ha":
        return _ha(rest)
    if command in ("status", "suspend", "resume", "activate", "fence", "wait"):
        return sides[side_of(command, rest)]([command, *rest])
    print(f"logship: unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
