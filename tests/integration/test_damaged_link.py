"""A link that keeps damaging DATA payloads heals by resending in smaller chunks; the copy never Fails."""

from __future__ import annotations

import random
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.copies import assert_copy_converged, check_no_corrupt, wait_converged
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
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


def test_back_to_back_chunk_damage_converges_without_failing_the_copy(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    rnd = random.Random(13)
    sizes = [rnd.randint(256 * 1024, 2 * 1024 * 1024) for _ in range(32)]
    source = tmp_path / "src"
    source.mkdir()
    receiver = receiver_proc(tmp_path, secret, extra=["--admin", "127.0.0.1:0"])
    procs.append(receiver.start())
    copy = tmp_path / "receiver" / "damaged"
    seen: dict[str, str] = {}
    with ProxyThread(FaultProxy(receiver)) as proxy:
        shipper = shipper_proc(
            tmp_path, "damaged", source, [proxy.port], secret, ["--chunk-size", "256k", "--admin", "127.0.0.1:0"]
        )
        procs.append(shipper.start())
        admin = shipper.admin_port()
        writer = SourceWriter(source, sizes, rate=8e6, seed=13).start()
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
