"""Replay settings of the receiver: the flags, the config keys and the per-stream tables that say how
each stream is replayed into its standby (receiver/config.py merges them with the rest)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from logship.config import Check, ConfigError, checked, checked_flags, parse_count, parse_duration, parse_text

REPLAY_MODES = ("directory", "command")
REPLAY_RERUN = ("never", "safe")
REPLAY_KEYS = (
    "replay",
    "replay_command",
    "inspect_cmd",
    "replay_lag",
    "replay_retries",
    "replay_backoff",
    "replay_rerun",
    "replay_recover_command",
)

# The form of every replay value: each is parsed at start, and a bad one is one line naming file, table and key.
REPLAY_CHECKS: dict[str, Check] = {
    **dict.fromkeys(("replay_lag", "replay_backoff"), parse_duration),
    **dict.fromkeys(("replay", "replay_command", "inspect_cmd", "replay_rerun", "replay_recover_command"), parse_text),
    "replay_retries": parse_count,
}


def as_table(value: Any, where: str) -> dict[str, Any]:
    """Return ``value`` as a TOML table, or raise ConfigError naming ``where``."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    return value


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """How one stream is replayed."""

    mode: str = "directory"
    """``directory``: copy each segment into DIR/<stream>/replica/; ``command``: run ``command`` per segment."""
    command: str | None = None
    """For ``command`` mode: a shell command with {path}, {name}, {stream} placeholders; non-zero exit fails."""
    inspect_cmd: str | None = None
    """Optional inspector run before replay with the segment's path (or the same placeholders); non-zero vetoes."""
    lag: float = 0.0
    """Seconds a segment must have been installed before it is replayed (activation ignores it)."""
    retries: int = 3
    """Retries of a failing segment before the replay is marked Failed."""
    backoff: float = 1.0
    """Seconds before the first retry; doubled for each further one."""
    command_timeout: float = 600.0
    """Seconds an inspector or replay command may run before it counts as failed."""
    rerun: str = "never"
    """``safe``: a replay command interrupted half-way may simply run again (an idempotent target, such as
    PostgreSQL's restore_command copy); ``never``: the copy stops there unless ``recover_command`` is set."""
    recover_command: str | None = None
    """Run instead of the replay command after an interrupted run: it gets the same placeholders and must
    bring the target to the end of the segment from wherever it stopped (MariaDB: its GTID position)."""


def replay_settings(values: dict[str, Any], base: ReplaySettings, where: str) -> ReplaySettings:
    """Build replay settings from ``values`` (config keys; None or missing keep ``base``).

    Raises ConfigError for a bad mode, duration or count, or command mode without a command.
    """
    mode = values.get("replay") or base.mode
    if mode not in REPLAY_MODES:
        raise ConfigError(f"{where}: replay must be one of {', '.join(REPLAY_MODES)}, not {mode!r}")
    command = values.get("replay_command") or base.command
    if mode == "command" and not command:
        raise ConfigError(f"{where}: replay = command needs a replay command (--replay-command / replay_command)")
    values = checked(values, REPLAY_CHECKS, where)
    lag = base.lag if values.get("replay_lag") is None else values["replay_lag"]
    retries = base.retries if values.get("replay_retries") is None else values["replay_retries"]
    backoff = base.backoff if values.get("replay_backoff") is None else values["replay_backoff"]
    rerun = values.get("replay_rerun") or base.rerun
    if rerun not in REPLAY_RERUN:
        raise ConfigError(f"{where}: replay_rerun must be one of {', '.join(REPLAY_RERUN)}, not {rerun!r}")
    return ReplaySettings(
        mode=mode,
        command=command,
        inspect_cmd=values.get("inspect_cmd") or base.inspect_cmd,
        lag=lag,
        retries=retries,
        backoff=backoff,
        command_timeout=base.command_timeout,
        rerun=rerun,
        recover_command=values.get("replay_recover_command") or base.recover_command,
    )


def add_replay_flags(p: argparse.ArgumentParser) -> None:
    """Add the replay flags (of the daemon, and of ``activate`` when no receiver runs) to ``p``."""
    g = p.add_argument_group("replay (defaults for every stream; per-stream tables in --config override them)")
    g.add_argument(
        "--replay",
        choices=REPLAY_MODES,
        help="directory (default): install replayed segments into DIR/<stream>/replica/; command: run "
        "--replay-command per segment",
    )
    g.add_argument(
        "--replay-command", metavar="CMD", help="shell command run per segment in log order; {path} {name} {stream}"
    )
    g.add_argument(
        "--inspect-cmd", metavar="CMD", help="inspector run before replay with the segment's path; non-zero vetoes"
    )
    g.add_argument(
        "--replay-lag", metavar="DURATION", help="replay only segments installed this long ago: 0 (default), 90s, 24h"
    )
    g.add_argument("--replay-retries", metavar="N", help="retries of a failing segment (default 3)")
    g.add_argument("--replay-backoff", metavar="DURATION", help="pause before the first retry, doubled after (1s)")
    g.add_argument(
        "--replay-rerun",
        choices=REPLAY_RERUN,
        help="never (default): a replay command interrupted half-way (receiver killed, timeout) stops the copy; "
        "safe: the target tolerates running it again",
    )
    g.add_argument(
        "--replay-recover-command",
        metavar="CMD",
        help="run instead after an interrupted replay; must finish the segment from where the target stopped",
    )


def replay_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Return the replay settings given as flags, under their config-file names."""
    return {
        "replay": getattr(args, "replay", None),
        "replay_command": getattr(args, "replay_command", None),
        "inspect_cmd": getattr(args, "inspect_cmd", None),
        "replay_lag": getattr(args, "replay_lag", None),
        "replay_retries": getattr(args, "replay_retries", None),
        "replay_backoff": getattr(args, "replay_backoff", None),
        "replay_rerun": getattr(args, "replay_rerun", None),
        "replay_recover_command": getattr(args, "replay_recover_command", None),
    }


def replay_from_doc(
    doc: dict[str, Any], args: argparse.Namespace, origin: str = "config file"
) -> tuple[ReplaySettings, dict[str, ReplaySettings]]:
    """Return the default replay settings (file, then flags) and each configured stream's own.

    ``origin`` names the file in error messages. Raises ConfigError for a bad value, naming its key.
    """
    flags = checked_flags(replay_flags(args), REPLAY_CHECKS)
    top = checked({k: doc.get(k) for k in REPLAY_KEYS}, REPLAY_CHECKS, origin)
    default = replay_settings({**top, **flags}, ReplaySettings(), "replay")
    per_stream: dict[str, ReplaySettings] = {}
    for name, raw in as_table(doc.get("streams", {}), f"{origin}: streams").items():
        table = as_table(raw, f"{origin}: streams.{name}")
        own = {k: table.get(k) for k in REPLAY_KEYS if k in table}
        if own:
            per_stream[name] = replay_settings(own, default, f"{origin}: streams.{name}")
    return default, per_stream
