"""Sync policies: which targets must hold bytes before ``wait`` returns, in PostgreSQL's syntax.

Pure: text in, a ``Policy`` out; a policy and what each target holds in, a decision out. No I/O, no
clock. The forms (as ``synchronous_standby_names``)::

    ANY k (host:port, ...)    any k of the listed targets
    FIRST k (host:port, ...)  the first k listed targets that are up (a priority list)
    k (host:port, ...)        the same as FIRST k
    ALL                       every target of the stream
    ANY k                     any k of the stream's targets (ANY 1 is the default)

``*`` in a list means every target of the stream. A target listed twice counts once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_POLICY = "ANY 1"

_FORM = re.compile(r"\s*(?:(ANY|FIRST)\s+)?(\d+)\s*(?:\((.*)\))?\s*", re.IGNORECASE | re.DOTALL)


class PolicyError(ValueError):
    """A policy text that does not parse, or names targets the stream does not have."""


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed sync policy."""

    method: str
    """``any``, ``first`` or ``all``."""
    count: int
    """How many targets must hold the bytes (for ``all``: 0, meaning every one)."""
    targets: tuple[str, ...] | None
    """The listed targets in priority order, without duplicates; None: every target of the stream."""

    def __str__(self) -> str:
        if self.method == "all":
            return "ALL"
        names = "" if self.targets is None else f" ({', '.join(self.targets)})"
        return f"{self.method.upper()} {self.count}{names}"


@dataclass(frozen=True, slots=True)
class TargetPosition:
    """What one target holds, as far as its authenticated ACKs (or WELCOME) say."""

    holds: bool
    """Whether its acknowledged position covers the bytes waited for."""
    up: bool = True
    """Whether it is connected and shipping (not down, suspended, fenced, failed)."""


def parse_policy(text: str) -> Policy:
    """Parse a policy text.

    Raises PolicyError for anything but the forms in this module's docstring.
    """
    if text.strip().upper() == "ALL":
        return Policy("all", 0, None)
    m = _FORM.fullmatch(text)
    if m is None:
        raise PolicyError(f"bad sync policy {text!r}: expected ANY k (host:port, ...), FIRST k (...), or ALL")
    method = (m.group(1) or "first").lower()
    count = int(m.group(2))
    if count < 1:
        raise PolicyError(f"bad sync policy {text!r}: k must be at least 1")
    if m.group(3) is None:
        if m.group(1) is None or method != "any":
            raise PolicyError(f"bad sync policy {text!r}: FIRST k needs a list of targets in priority order")
        return Policy("any", count, None)
    names = [n.strip() for n in m.group(3).split(",")]
    if any(not n for n in names):
        raise PolicyError(f"bad sync policy {text!r}: an empty name in the list")
    if "*" in names:
        return Policy(method, count, None)
    unique = tuple(dict.fromkeys(names))
    if count > len(unique):
        raise PolicyError(f"bad sync policy {text!r}: {count} of {len(unique)} listed target(s) can never be met")
    return Policy(method, count, unique)


def resolve(policy: Policy, stream_targets: Sequence[str]) -> Policy:
    """Return ``policy`` with its target list spelled out from the stream's targets (in their order).

    Raises PolicyError if it names a target the stream does not have, or asks for more than it has.
    """
    unknown = [t for t in policy.targets or () if t not in stream_targets]
    if unknown:
        raise PolicyError(f"sync policy {policy} names target(s) the stream does not have: {', '.join(unknown)}")
    targets = tuple(stream_targets) if policy.targets is None else policy.targets
    if policy.count > len(targets):
        raise PolicyError(f"sync policy {policy} asks for {policy.count} targets; the stream has {len(targets)}")
    count = len(targets) if policy.method == "all" else policy.count
    return Policy(policy.method, count, targets)


def required(policy: Policy, positions: Mapping[str, TargetPosition]) -> tuple[str, ...]:
    """Return the targets the policy waits for now: for FIRST, the first ``count`` listed that are up.

    A listed target that already holds the bytes counts as up: what it acknowledged is durable there
    even if it went down since. Targets missing from ``positions`` are down and hold nothing.
    """
    targets = policy.targets or tuple(positions)
    if policy.method != "first":
        return targets
    live = [t for t in targets if t in positions and (positions[t].up or positions[t].holds)]
    return tuple(live[: policy.count])


def satisfying(policy: Policy, positions: Mapping[str, TargetPosition]) -> tuple[str, ...] | None:
    """Return the targets that satisfy ``policy`` (in list order), or None while it is not satisfied."""
    targets = policy.targets or tuple(positions)
    holding = tuple(t for t in targets if t in positions and positions[t].holds)
    if policy.method == "first":
        chosen = required(policy, positions)
        if len(chosen) < policy.count or not all(positions[t].holds for t in chosen):
            return None
        return chosen
    count = len(targets) if policy.method == "all" else policy.count
    return holding[:count] if len(holding) >= count else None


def satisfied(policy: Policy, positions: Mapping[str, TargetPosition]) -> bool:
    """Return whether enough targets hold the bytes for ``policy``."""
    return satisfying(policy, positions) is not None
