"""A group of per-stream settings of the receiver (replay, standby retention): its config keys, which are
also its flags' names, their checks, and the merge of the config file's top level, the flags and each
stream's own table (receiver/replay_config.py and receiver/retention_config.py define the two groups)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from logship.config import Check, ConfigError, checked, checked_flags

S = TypeVar("S")

Flag = tuple[str, str | tuple[str, ...], str]
"""One flag of a group: its key (``replay_lag`` is ``--replay-lag``), its metavar or its choices, its help."""


def as_table(value: Any, where: str) -> dict[str, Any]:
    """Return ``value`` as a TOML table, or raise ConfigError naming ``where``."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    return value


def given(values: Mapping[str, Any], key: str, base: Any) -> Any:
    """``values[key]``, or ``base`` where it is missing or None (not given)."""
    value = values.get(key)
    return base if value is None else value


def one_of(value: str, choices: tuple[str, ...], key: str, where: str) -> str:
    """Return ``value`` if it is one of ``choices``; raises ConfigError naming ``where`` and ``key``."""
    if value not in choices:
        raise ConfigError(f"{where}: {key} must be one of {', '.join(choices)}, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class SettingsGroup(Generic[S]):
    """One group of settings that every stream has, with defaults for all and a stream's own overrides."""

    checks: Mapping[str, Check]
    """The form of each value, parsed at start; a bad one is one line naming file, table and key."""
    build: Callable[[dict[str, Any], S, str], S]
    """``build(values, base, where)``: the settings of ``values`` (None or missing keep ``base``'s);
    raises ConfigError naming ``where``."""
    base: S
    """The built-in defaults."""
    title: str
    """The heading of its flags in --help."""
    flag_list: tuple[Flag, ...]
    """Its flags, in --help order: one per config key, named after it (``replay_lag``: ``--replay-lag``)."""
    default_where: str | None = None
    """What an error in the defaults for every stream names (None: the config file)."""

    @property
    def keys(self) -> tuple[str, ...]:
        """Its config keys (each also its flag's dest)."""
        return tuple(key for key, _, _ in self.flag_list)

    def add_flags(self, p: argparse.ArgumentParser) -> None:
        """Add the group's flags (defaults for every stream) to ``p``."""
        g = p.add_argument_group(self.title)
        for key, form, text in self.flag_list:
            flag = "--" + key.replace("_", "-")
            if isinstance(form, tuple):
                g.add_argument(flag, choices=form, help=text)
            else:
                g.add_argument(flag, metavar=form, help=text)

    def flags(self, args: argparse.Namespace) -> dict[str, Any]:
        """Return the settings given as flags, under their config-file names (None: not given)."""
        return {key: getattr(args, key, None) for key in self.keys}

    def from_doc(
        self, doc: dict[str, Any], args: argparse.Namespace, origin: str = "config file"
    ) -> tuple[S, dict[str, S]]:
        """Return the defaults for every stream (the file's top level, then the flags) and each configured
        stream's own (its table over those defaults).

        ``origin`` names the file in error messages. Raises ConfigError for a bad value, naming its key.
        """
        flags = checked_flags(self.flags(args), self.checks)
        top = checked({k: doc.get(k) for k in self.keys}, self.checks, origin)
        default = self.build({**top, **flags}, self.base, self.default_where or origin)
        per_stream: dict[str, S] = {}
        for name, raw in as_table(doc.get("streams", {}), f"{origin}: streams").items():
            table = as_table(raw, f"{origin}: streams.{name}")
            own = {k: table[k] for k in self.keys if k in table}
            if own:
                per_stream[name] = self.build(own, default, f"{origin}: streams.{name}")
        return default, per_stream
