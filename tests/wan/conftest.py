"""Fixtures of the WAN tests: one pair of namespaces per test run, torn down whatever happens."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wan.lab import (
    RECEIVER_LISTEN,
    TARGET,
    NsProc,
    Wan,
    WanUnavailable,
    remove_stale_test_namespaces,
    unavailable_reason,
)

# Small and quick on purpose (the whole of tests/wan runs in about two minutes on 2 shared cores).
TEST_RATE_BPS = 40e6
TEST_RTT = 0.03


def lab_for_tests(prefix: str, rate_bps: float, rtt: float) -> Iterator[Wan]:
    """Bring up the pair of ``prefix`` for a test (skip, with the reason, where it cannot be), then down."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"WAN tests need network namespaces: {reason}")
    lab = Wan(prefix, rate_bps, rtt)
    try:
        try:
            lab.up()
        except WanUnavailable as e:
            pytest.skip(f"WAN tests cannot create network namespaces here: {e}")
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="session")
def wan() -> Iterator[Wan]:
    """dc1 and dc2 of this run (named t<pid>-dc1/dc2), at TEST_RATE_BPS and TEST_RTT."""
    remove_stale_test_namespaces()  # does nothing where namespaces cannot be made
    yield from lab_for_tests(f"t{os.getpid()}-", TEST_RATE_BPS, TEST_RTT)


def wan_receiver(wan: Wan, tmp: Path, secret: Path, extra: list[str] | None = None) -> NsProc:
    """A receiver in dc2 behind the delay proxy; its copies go to tmp/receiver."""
    args = ["--listen", RECEIVER_LISTEN, "--data-dir", str(tmp / "receiver"), "--secret-file", str(secret)]
    return NsProc(wan, "dc2", "receiver", args + (extra or []), tmp / "receiver.log")


def wan_shipper(wan: Wan, tmp: Path, stream: str, source: Path, secret: Path, extra: list[str] | None = None) -> NsProc:
    """A shipper in dc1 shipping ``source`` across the link to the receiver in dc2."""
    args = ["--stream", stream, "--source", str(source), "--target", TARGET, "--secret-file", str(secret)]
    return NsProc(wan, "dc1", "shipper", args + (extra or []), tmp / f"shipper-{stream}.log")
