"""The ``min_free`` setting of the receiver (receiver/space.py acts on it): parsing only, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from logship.config import ConfigError, parse_size

DEFAULT_BYTES = 64 * 1024 * 1024
DEFAULT_PERCENT = 1.0


@dataclass(frozen=True, slots=True)
class MinFree:
    """Bytes that must stay free: ``size`` bytes, or ``percent`` of the file system.

    Neither given (the default): 64 MiB, but never more than 1% of the file system, so that a small
    data dir (a test's tmpfs, a small volume) is still usable.
    """

    size: int | None = None
    percent: float | None = None

    def threshold(self, total: int) -> int:
        """Return the bytes that must stay free on a file system of ``total`` bytes."""
        if self.size is not None:
            return self.size
        if self.percent is not None:
            return int(total * self.percent / 100)
        return min(DEFAULT_BYTES, int(total * DEFAULT_PERCENT / 100))

    def __str__(self) -> str:
        if self.size is not None:
            return f"{self.size} bytes"
        if self.percent is not None:
            return f"{self.percent:g}%"
        return "64MiB or 1% (the smaller)"


def parse_min_free(value: str | int) -> MinFree:
    """Parse ``min_free``: a size (``64MiB``, ``0``, a TOML integer) or a percentage (``1%``, ``0.5%``).

    Raises ConfigError for anything else.
    """
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            percent = float(value.strip()[:-1])
        except ValueError:
            percent = -1.0
        if not 0 <= percent < 100:
            raise ConfigError(f"bad min_free {value!r}: expected a size (64MiB) or a percentage from 0 to 99 (1%)")
        return MinFree(percent=percent)
    try:
        return MinFree(size=parse_size(value))
    except ConfigError:
        raise ConfigError(f"bad min_free {value!r}: expected a size (64MiB) or a percentage (1%)") from None
