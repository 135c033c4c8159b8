"""scripts/benchmarks/mac_cost.py measures what it says: the frames it times with the MAC on carry a
payload MAC and the receive path checks it, those with it off carry none, and each repetition's
extra CPU is set against the GMAC of the same repetition."""

from __future__ import annotations

import os
import sys

import pytest

from protocol.auth import PAYLOAD_MAC, TO_RECEIVER, FrameAuthFailed
from protocol.buffers import BufferPool
from tests.helpers.source import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from benchmarks.mac_cost import MAC_CHUNK, MacCost, _heads, _mac_keys, _receive, _ship


def _payloads(n: int) -> list[memoryview]:
    return [memoryview(os.urandom(MAC_CHUNK)) for _ in range(n)]


def test_frames_with_the_mac_on_carry_it_and_the_receive_path_checks_it() -> None:
    payloads = _payloads(2)
    on = _heads(_mac_keys(TO_RECEIVER, True)[0], payloads, 3)
    off = _heads(_mac_keys(TO_RECEIVER, False)[0], payloads, 3)
    assert all(PAYLOAD_MAC.encode() in head for head in on)
    assert not any(PAYLOAD_MAC.encode() in head for head in off)
    pool = BufferPool()
    _receive(_mac_keys(TO_RECEIVER, True)[1], on, payloads, pool)
    _receive(_mac_keys(TO_RECEIVER, False)[1], off, payloads, pool)
    # Other bytes under the same heads: the timed path verifies every payload's MAC.
    with pytest.raises(FrameAuthFailed):
        _receive(_mac_keys(TO_RECEIVER, True)[1], on, payloads[::-1], pool)


def test_the_shipper_path_makes_a_mac_only_when_on() -> None:
    payloads = _payloads(1)
    sink = memoryview(bytearray(MAC_CHUNK))
    sealer_on, sealer_off = _mac_keys(TO_RECEIVER, True)[0], _mac_keys(TO_RECEIVER, False)[0]
    _ship(sealer_on, payloads, 2, sink)
    _ship(sealer_off, payloads, 2, sink)
    assert sealer_on.sequence == sealer_off.sequence == 2
    assert sealer_on._macked == 1 and sealer_off._macked == -1
    assert sink == payloads[0]


def test_each_repetition_is_set_against_its_own_gmac() -> None:
    a = MacCost([1.2, 1.0], [1.0, 0.9], [1.5, 1.4], [1.0, 1.0], [0.2, 0.05], [0.2, 0.2])
    assert a.ratios(a.seal_on, a.seal_off) == pytest.approx([1.0, 2.0])
    assert a.receiver_ratio == pytest.approx((2.5 + 8.0) / 2)
    both = a + MacCost([1.0], [1.0], [1.0], [1.0], [0.1], [0.1])
    assert both.seal_on == [1.2, 1.0, 1.0] and both.gmac == [0.2, 0.05, 0.1]
    assert both.shipper_ratio == pytest.approx(1.0)
    assert "x GMAC" in both.side(both.open_on, both.open_off)
