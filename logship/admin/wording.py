"""Log wording both daemons share (no imports beyond the standard library: the daemons load it at start)."""

from __future__ import annotations


def resume_text(segment: str, offset: int, sealed: bool) -> str:
    """Return where a connection resumes, for the log: ``resuming at SEG@OFF (sealed)``, or, for a copy
    that holds nothing yet, ``starting from the first segment (empty copy)``."""
    if not segment:
        return "starting from the first segment (empty copy)"
    return f"resuming at {segment}@{offset}{' (sealed)' if sealed else ''}"
