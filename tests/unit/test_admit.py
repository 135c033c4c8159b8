"""The receiver's admission of one claimed stream at the handshake, as a table (no I/O)."""

from __future__ import annotations

import pytest

from receiver.session import Admit, Attach, Fence, Refuse, Rejoining, admit

# claimed epoch, copy's epoch, failed, activated, busy -> decision
TABLE: list[tuple[int, int, str | None, bool, bool, Admit]] = [
    (0, 0, None, False, False, Attach()),
    (5, 3, None, False, False, Attach()),  # a newer epoch is taken (after the lock)
    (3, 3, None, False, True, Attach(take_over=True)),
    (2, 3, None, False, False, Fence("epoch 2 is older than 3 (fenced)")),
    (2, 3, None, False, True, Fence("epoch 2 is older than 3 (fenced)")),  # the writer it would replace stays
    (3, 3, None, True, False, Fence("activated at epoch 3 (fenced; epoch claimed 3)")),
    (2, 3, None, True, False, Fence("activated at epoch 3 (fenced; epoch claimed 2)")),
    # A newer primary's shipper at a former primary: it retries until the copy rejoins (issue 16).
    (9, 3, None, True, True, Rejoining("led epoch 3 here and has not rejoined epoch 9 yet")),
    (3, 3, "E1: bad seal (3 times)", False, False, Refuse("E1: bad seal (3 times)")),
    (3, 3, "E1: bad seal (3 times)", True, False, Refuse("E1: bad seal (3 times)")),  # Failed wins over fencing
    (0, 3, "x", False, True, Refuse("x")),
    (3, 3, "", False, False, Attach()),  # an empty reason is no failure (as state.json was read before)
]


@pytest.mark.parametrize(("claimed", "epoch", "failed", "activated", "busy", "expected"), TABLE)
def test_admit(claimed: int, epoch: int, failed: str | None, activated: bool, busy: bool, expected: Admit) -> None:
    assert admit(claimed, epoch, failed, activated, busy) == expected
