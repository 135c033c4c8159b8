"""The installed version, on its own so that the daemons can name it without importing the
``logship`` command (which imports the daemons: an import circle)."""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "logship-replication"
"""The distribution's name on the package index (``logship`` there is an unrelated project)."""


def version() -> str:
    """Return the installed version (``unknown`` when run from a tree that was never installed)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"
