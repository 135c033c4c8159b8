"""Fixtures of the WAN tests: one pair of namespaces per test run, torn down whatever happens."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ROOT, Proc
from tests.wan.lab import RECEIVER_LISTEN, TARGET, Wan, WanUnavailable, remove_stale_test_namespaces, unavailable_reason

# Small and quick on purpose (the whole of tests/wan runs in about two minutes on 2 shared cores).
TEST_RATE_BPS = 40e6
TEST_RTT = 0.03


@pytest.fixture(scope="session")
def wan() -> Iterator[Wan]:
    """dc1 and dc2 of this run (named t<pid>-dc1/dc2), at TEST_RATE_BPS and TEST_RTT."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"WAN tests need network namespaces: {reason}")
    remove_stale_test_namespaces()
    lab = Wan(f"t{os.getpid()}-", TEST_RATE_BPS, TEST_RTT)
    try:
        try:
            lab.up()
        except WanUnavailable as e:
            pytest.skip(f"WAN tests cannot create network namespaces here: {e}")
        yield lab
    finally:
        lab.down()


class NsProc(Proc):
    """A `python -m receiver|shipper` process inside dc1 or dc2 (ip netns exec keeps the pid)."""

    def __init__(self, wan: Wan, host: str, module: str, args: list[str], log_path: Path) -> None:
        super().__init__(module, args, log_path)
        self.wan = wan
        self.host = host

    def start(self) -> NsProc:
        assert self.popen is None or self.popen.poll() is not None
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.wan.cmd(self.host, [sys.executable, "-m", self.module, *self.args]),
                stdout=log,
                stderr=log,
                cwd=ROOT,
            )
        self.starts += 1
        return self


def wan_receiver(wan: Wan, tmp: Path, secret: Path, extra: list[str] | None = None) -> NsProc:
    """A receiver in dc2 behind the delay proxy; its copies go to tmp/receiver."""
    args = ["--listen", RECEIVER_LISTEN, "--data-dir", str(tmp / "receiver"), "--secret-file", str(secret)]
    return NsProc(wan, "dc2", "receiver", args + (extra or []), tmp / "receiver.log")


def wan_shipper(wan: Wan, tmp: Path, stream: str, source: Path, secret: Path, extra: list[str] | None = None) -> NsProc:
    """A shipper in dc1 shipping ``source`` across the link to the receiver in dc2."""
    args = ["--stream", stream, "--source", str(source), "--target", TARGET, "--secret-file", str(secret)]
    return NsProc(wan, "dc1", "shipper", args + (extra or []), tmp / f"shipper-{stream}.log")
