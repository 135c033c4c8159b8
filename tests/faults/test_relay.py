"""A relay (or a listener that is not a receiver) without the secret cannot make the shipper skip data,
delete source data no target holds, or stop shipping: every trick is a failed attempt, and the real
receiver behind the address converges byte-identical once the relay is gone (protocol v3)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from tests.faults.relay import MODES, HostileRelay, drop_connections
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.proxies import ProxyThread
from tests.helpers.waiting import wait_until

STREAM = "relay"


class Writer:
    """Write segments of known content into the source, one every ``every`` seconds."""

    def __init__(self, source: Path, every: float = 0.15) -> None:
        self.source = source
        self.every = every
        self.content: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._rnd = random.Random(3)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        n = 1
        while not self._stop.is_set() and n <= 400:
            name = f"E00{n:08X}.log"
            data = self._rnd.randbytes(self._rnd.randint(16 << 10, 200 << 10))
            self.content[name] = data
            tmp = self.source / f".{name}.tmp"
            tmp.write_bytes(data)
            tmp.rename(self.source / name)
            n += 1
            self._stop.wait(self.every)


def check_invariants(writer: Writer, source: Path, log_dir: Path) -> None:
    """Nothing corrupt in log/, and no segment gone from the source that log/ does not hold."""
    held = {p.name: p.read_bytes() for p in log_dir.iterdir()} if log_dir.is_dir() else {}
    for name, data in held.items():
        assert data == writer.content[name], f"{name} in log/ differs from what was written"
    for name in list(writer.content):
        if not (source / name).exists():
            assert name in held, f"retention removed {name}, which the receiver does not hold"


def test_hostile_relay_cannot_make_the_shipper_skip_delete_or_stop(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    receiver = receiver_proc(tmp_path, secret)
    procs.append(receiver.start())
    log_dir = tmp_path / "receiver" / STREAM / "log"
    writer = Writer(source).start()
    link = ProxyThread(HostileRelay(receiver, STREAM))
    relay = link.proxy

    def steer(mode: str) -> None:
        def switch() -> None:
            relay.mode = mode
            drop_connections(relay)

        link.call_soon(switch)

    with link:
        shipper = shipper_proc(
            tmp_path, STREAM, source, [relay.port], secret, ["--retain", "--retain-until", "durable"]
        )
        procs.append(shipper.start())
        try:
            wait_until(lambda: log_dir.is_dir() and any(log_dir.iterdir()), 30, what="a first segment through")
            for mode in MODES:
                steer(mode)
                tries = 1 if mode == "error" else 2
                wait_until(
                    lambda m=mode, n=tries: relay.connections[m] >= n, 40, interval=0.05, what=f"tries in {mode}"
                )
                check_invariants(writer, source, log_dir)
                assert shipper.popen is not None and shipper.popen.poll() is None, f"the shipper died in {mode}"
            steer("pass")
            time.sleep(1.0)
        finally:
            writer.stop()
        expect = sorted(writer.content)[:-1]  # the newest is still active (seal next)

        def converged() -> bool:
            check_invariants(writer, source, log_dir)
            return all((log_dir / name).exists() for name in expect)

        wait_until(converged, 90, interval=0.2, what="the real receiver to converge once the relay is gone")
    check_invariants(writer, source, log_dir)
    shipper_log, receiver_log = shipper.log_text(), receiver.log_text()
    assert "stops shipping" not in shipper_log and "Fenced" not in shipper_log
    assert "fails its tag" in shipper_log  # the forged and the replayed ACKs
    assert "refused a frame" in receiver_log  # the injected DATA
    assert "does not answer stream" in shipper_log  # the empty WELCOME
    assert "without the receiver's proof" in shipper_log  # the unproven FENCED
    assert "Traceback" not in shipper_log and "Traceback" not in receiver_log
    assert shipper.popen is not None and shipper.popen.poll() is None
    print(f"\nfigures: modes={dict(relay.connections)} forged={dict(relay.forged)} segments={len(expect)}")
