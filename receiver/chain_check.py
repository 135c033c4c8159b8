"""The manifest chain check of one copy at each handshake (receiver/manifest.py ``chain_problem``),
without hashing again the records it already found linked: 100 000 records took 0.4 s, on the event
loop, at every connection.

What was found linked stays linked: ``chain_problem`` judges each record by its own contents and its
predecessor's, so once records ``[0, k)`` formed a chain under a base, a list that starts with those
same k records under the same base needs only ``[k, n)`` checked, each against its predecessor's record
digest (for record k, the last one found linked: a base after it says just that). Any other list, a
trimmed front, a new base, a rewind read again from disk, is checked whole.
"""

from __future__ import annotations

from collections.abc import Sequence

from receiver.manifest import Base, Installed, chain_problem, record_digest


class ChainCheck:
    """``chain_problem(records, names=False, base=base)`` of one copy, remembering the chain it last found."""

    def __init__(self) -> None:
        self._base: Base | None = None
        self._linked: list[Installed] = []
        """A copy of the records last found to form one chain under ``_base`` (empty: none yet)."""

    def problem(self, records: Sequence[Installed], base: Base | None) -> str:
        """Say where ``records`` do not form one chain after ``base`` ('' if they do)."""
        linked = self._linked
        k = len(linked)
        if k and base == self._base and len(records) >= k and list(records[:k]) == linked:
            last = linked[-1]
            found = chain_problem(records[k:], names=False, base=Base(last.name, record_digest(last), last.at))
        else:
            found = chain_problem(records, names=False, base=base)
        if found:
            self._base, self._linked = None, []
        else:
            self._base, self._linked = base, list(records)
        return found
