"""A link that keeps damaging DATA payloads heals by resending in smaller chunks; the copy never Fails."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.copies import assert_copy_converged, check_no_corrupt, wait_converged
from tests.helpers.frames import TagTracker, read_frame
from tests.helpers.procs import Listener, Proc, ReceiverProc, ShipperProc, receiver_proc, shipper_proc
from tests.helpers.proxies import FaultProxy, ProxyThread
from tests.helpers.source import SourceWriter, sealed_in_source
from tests.helpers.status_watch import StatusWatch
from tests.helpers.waiting import wait_until


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.read().decode()


def counter(port: int, name: str) -> float:
    """The value of counter ``name`` (its one sample) at /metrics."""
    for family in text_string_to_metric_families(get(port, "/metrics")):
        if family.name == name:
            assert family.type == "counter" and family.documentation, family
            (sample,) = family.samples
            assert sample.name == f"{name}_total"
            return float(sample.value)
    raise AssertionError(f"no {name} at /metrics")


P = TypeVar("P", bound=FaultProxy)


@contextlib.contextmanager
def damaged_link(
    tmp_path: Path, secret: Path, procs: list[Proc], proxy_of: Callable[[ReceiverProc], P], seed: int
) -> Iterator[tuple[Path, Path, ReceiverProc, ShipperProc, P, SourceWriter]]:
    """A receiver, ``proxy_of(receiver)`` in front of it and a shipper of stream ``damaged`` through it
    (256 KiB chunks, both with an admin endpoint), and an application writing 32 segments of 256 KiB to
    2 MiB at 8 MB/s (started, stopped on the way out). Yields the source, the copy, the receiver,
    shipper, proxy and writer."""
    rnd = random.Random(seed)
    sizes = [rnd.randint(256 * 1024, 2 * 1024 * 1024) for _ in range(32)]
    source = tmp_path / "src"
    source.mkdir()
    receiver = receiver_proc(tmp_path, secret, extra=["--admin", "127.0.0.1:0"])
    procs.append(receiver.start())
    with ProxyThread(proxy_of(receiver)) as proxy:
        argv = ["--chunk-size", "256k", "--admin", "127.0.0.1:0"]
        shipper = shipper_proc(tmp_path, "damaged", source, [proxy.port], secret, argv)
        procs.append(shipper.start())
        writer = SourceWriter(source, sizes, rate=8e6, seed=seed).start()
        try:
            yield source, tmp_path / "receiver" / "damaged", receiver, shipper, proxy, writer
        finally:
            writer.stop()  # stopping twice is harmless; a test that fails midway leaves no thread


def test_back_to_back_chunk_damage_converges_without_failing_the_copy(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    seen: dict[str, str] = {}
    with damaged_link(tmp_path, secret, procs, FaultProxy, 13) as (source, copy, receiver, shipper, proxy, writer):
        admin = shipper.admin_port()
        try:
            with StatusWatch(admin, interval=0.05) as watch:
                # Flips queued back to back hit the same chunk again and again as it is resent: under
                # the old three-strikes rule the third one Failed the copy for good.
                for _ in range(24):
                    proxy.pending.append("flip_data_mid")
                    wait_until(lambda: not proxy.pending, 30, interval=0.01, what="a flip to fire")
                    check_no_corrupt(source, copy, seen)
                writer.done_full.wait(60)
        finally:
            writer.stop()
        expect = sealed_in_source(source)
        wait_converged(source, copy, expect, seen, 90)
        total = assert_copy_converged(source, copy, expect)
    resends = receiver.count("asking for a resend")
    states = sorted(watch.states())
    print(
        f"\nfigures: flips={len(proxy.done)} resends={resends} connections={proxy.connections} bytes={total} "
        f"polls={watch.polls} states={states}"
    )
    assert receiver.count("Failed") == 0
    # Seen from outside while it ran: Retrying with its reason, never Failed.
    assert "Failed" not in states, watch.distinct()
    retrying = [failure for state, failure in watch.distinct() if state == "Retrying"]
    assert retrying and all(f and f.startswith("chunk digest mismatch x") for f in retrying), watch.distinct()
    # The resend counters: the shipper's counts the NACKs it honoured, the receiver's those it sent.
    assert counter(admin, "logship_shipper_resends") >= resends
    assert counter(receiver.admin_port(), "logship_receiver_resends") == resends
    assert resends >= 3, receiver.count("bad-digest")
    # The shipper shrank its chunks after the NACKs (256 KiB halved at least once).
    assert shipper.count("chunk 131072") + shipper.count("chunk 65536") >= 1


class RateFlipProxy(FaultProxy):
    """Flip one payload byte (not in a segment's first chunk) every 512 KiB - 1 MiB of DATA forwarded,
    on average, for as long as it runs: the issue's damaging link."""

    def __init__(self, upstream: int | Listener, seed: int) -> None:
        super().__init__(upstream)
        self.rnd = random.Random(seed)
        self.forwarded = 0
        self.next_at = self.rnd.randint(512 * 1024, 1024 * 1024)

    async def _forward(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        tracker = TagTracker(to_receiver=True)
        while True:
            prefix, header_raw, header, payload, tag = await read_frame(r, tracker)
            if header.get("t") == "DATA":
                self.forwarded += len(payload)
                if self.forwarded >= self.next_at and header.get("off", 0) > 0 and len(payload) > 16:
                    self.next_at = self.forwarded + self.rnd.randint(512 * 1024, 1024 * 1024)
                    self.done.append("flip_data_mid")
                    b = bytearray(payload)
                    b[len(b) // 2] ^= 0x5A
                    payload = bytes(b)
            w.write(prefix + header_raw + tag + payload)
            await w.drain()


def test_a_link_damaging_a_byte_per_512k_to_1m_converges(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    seen: dict[str, str] = {}
    start = time.monotonic()
    link = damaged_link(tmp_path, secret, procs, lambda r: RateFlipProxy(r, 17), 17)
    with link as (source, copy, receiver, shipper, proxy, writer):
        try:
            with StatusWatch(shipper.admin_port(), interval=0.05) as watch:
                assert writer.done_full.wait(60)
                writer.stop()  # its active segment exists now: every other one is sealed
                expect = sealed_in_source(source)
                wait_converged(source, copy, expect, seen, 120)
        finally:
            writer.stop()
        total = assert_copy_converged(source, copy, expect)
    took = time.monotonic() - start
    states = sorted(watch.states())
    per = proxy.forwarded / max(1, len(proxy.done))
    print(
        f"\nfigures: flips={len(proxy.done)} forwarded={proxy.forwarded} (one flip per {per / 1024:.0f} KiB) "
        f"resends={receiver.count('asking for a resend')} connections={proxy.connections} bytes={total} "
        f"converged_s={took:.1f} states={states}"
    )
    assert len(proxy.done) >= 30, len(proxy.done)
    assert receiver.count("Failed") == 0
    assert "Failed" not in states and "Retrying" in states, watch.distinct()
