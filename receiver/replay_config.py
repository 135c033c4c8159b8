"""Replay settings of the receiver: the flags, the config keys and the per-stream tables that say how
each stream is replayed into its standby (receiver/config.py merges them with the rest)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from logship.config import Check, ConfigError, checked, parse_count, parse_duration, parse_text
from receiver.settings_group import Flag, SettingsGroup, given, one_of
from receiver.settings_group import as_table as as_table  # re-exported: receiver/config.py imports it from here
from receiver.space_config import MinFree

REPLAY_MODES = ("directory", "command")
REPLAY_RERUN = ("never", "safe")
REPLAY_FLAGS: tuple[Flag, ...] = (
    (
        "replay",
        REPLAY_MODES,
        "directory (default): install replayed segments into DIR/<stream>/replica/; command: run "
        "--replay-command per segment",
    ),
    ("replay_command", "CMD", "shell command run per segment in log order; {path} {name} {stream}"),
    ("inspect_cmd", "CMD", "inspector run before replay with the segment's path; non-zero vetoes"),
    ("replay_lag", "DURATION", "replay only segments installed this long ago: 0 (default), 90s, 24h"),
    ("replay_retries", "N", "retries of a failing segment (default 3)"),
    ("replay_backoff", "DURATION", "pause before the first retry, doubled after (1s)"),
    (
        "replay_rerun",
        REPLAY_RERUN,
        "never (default): a replay command interrupted half-way (receiver killed, timeout) stops the copy; "
        "safe: the target tolerates running it again",
    ),
    (
        "replay_recover_command",
        "CMD",
        "run instead after an interrupted replay; must finish the segment from where the target stopped",
    ),
)
REPLAY_KEYS = tuple(key for key, _, _ in REPLAY_FLAGS)

# The form of every replay value: each is parsed at start, and a bad one is one line naming file, table and key.
REPLAY_CHECKS: dict[str, Check] = {
    **dict.fromkeys(("replay_lag", "replay_backoff"), parse_duration),
    **dict.fromkeys(("replay", "replay_command", "inspect_cmd", "replay_rerun", "replay_recover_command"), parse_text),
    "replay_retries": parse_count,
}


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
    min_free: MinFree = field(default_factory=MinFree)
    """The receiver's ``min_free``, not a replay setting of its own: a replay command that fails while
    replica/ or the data dir is below it failed for lack of space and waits (receiver/space.py)."""


def replay_settings(values: dict[str, Any], base: ReplaySettings, where: str) -> ReplaySettings:
    """Build replay settings from ``values`` (config keys; None or missing keep ``base``).

    Raises ConfigError for a bad mode, duration or count, or command mode without a command.
    """
    mode = one_of(values.get("replay") or base.mode, REPLAY_MODES, "replay", where)
    command = values.get("replay_command") or base.command
    if mode == "command" and not command:
        raise ConfigError(f"{where}: replay = command needs a replay command (--replay-command / replay_command)")
    values = checked(values, REPLAY_CHECKS, where)
    return ReplaySettings(
        mode=mode,
        command=command,
        inspect_cmd=values.get("inspect_cmd") or base.inspect_cmd,
        lag=given(values, "replay_lag", base.lag),
        retries=given(values, "replay_retries", base.retries),
        backoff=given(values, "replay_backoff", base.backoff),
        command_timeout=base.command_timeout,
        rerun=one_of(values.get("replay_rerun") or base.rerun, REPLAY_RERUN, "replay_rerun", where),
        recover_command=values.get("replay_recover_command") or base.recover_command,
    )


REPLAY = SettingsGroup(
    REPLAY_CHECKS,
    replay_settings,
    ReplaySettings(),
    "replay (defaults for every stream; per-stream tables in --config override them)",
    REPLAY_FLAGS,
    default_where="replay",
)
"""The replay settings group: a bad value among the defaults for every stream is named ``replay: ...``."""
add_replay_flags = REPLAY.add_flags
"""Add the replay flags (of the daemon, and of ``activate`` when no receiver runs) to a parser."""


replay_flags = REPLAY.flags
"""Return the replay settings given as flags, under their config-file names."""
replay_from_doc = REPLAY.from_doc
"""Return the default replay settings (file, then flags) and each configured stream's own; raises ConfigError."""
