"""A real 3-member etcd cluster on 127.0.0.1 for the failover tests, stopped by pid.

Each member has its own data dir under the test's tmp_path. etcd cannot listen on port 0 and report
the port, so ports are picked below the kernel's ephemeral range (where no outgoing connection takes
one meanwhile: a port from bind(0) was taken by one in a CI run) and checked free by binding; a start
where a member still loses its port is retried with new ports, a bounded number of times.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.procs import stop_popen
from tests.helpers.waiting import wait_until

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def etcd_missing() -> str | None:
    """The reason etcd tests must skip here, or None."""
    if not Path(ETCD).exists():
        return "etcd is not installed (Debian etcd-server; scripts/_setup.sh installs it as root)"
    return None


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port that is free now and below the ephemeral range (20000 up to it)."""
    high = max(_ephemeral_low(), 20001)
    for _ in range(200):
        port = random.randrange(20000, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/health", timeout=1) as r:
                return b'"true"' in r.read()
        except OSError:
            return False


@dataclass
class EtcdCluster:
    """Three etcd members; ``start()``, ``kill(i)``, ``pause(i)``, ``resume(i)``, ``stop_member(i)``,
    ``start_member(i)``, ``stop()``."""

    root: Path
    members: list[Member] = field(default_factory=list)
    paused: set[int] = field(default_factory=set)
    """Members stopped with SIGSTOP (``pause``): ``stop()`` resumes them first, so SIGTERM reaches them."""

    def __post_init__(self) -> None:
        self._pick_ports()

    def _pick_ports(self) -> None:
        ports: set[int] = set()
        while len(ports) < 6:
            ports.add(free_port())
        chosen = sorted(ports, key=lambda _: random.random())
        self.members = [
            Member(f"m{i}", chosen[2 * i], chosen[2 * i + 1], self.root / f"m{i}", self.root / f"m{i}.log")
            for i in range(3)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)

    def start_member(self, i: int) -> None:
        m = self.members[i]
        assert not m.alive()
        m.data_dir.mkdir(parents=True, exist_ok=True)
        peer = f"http://127.0.0.1:{m.peer_port}"
        argv = [
            ETCD,
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={m.endpoint}",
            f"--advertise-client-urls={m.endpoint}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self._initial_cluster()}",
            "--initial-cluster-state=new",
            "--initial-cluster-token=logship-test",
            # Short raft timings so a lost raft leader is replaced within a second on loopback.
            "--heartbeat-interval=100",
            "--election-timeout=1000",
        ]
        with open(m.log_path, "ab") as log:
            m.popen = subprocess.Popen(argv, stdout=log, stderr=log)

    def start(self, timeout: float = 30, attempts: int = 3) -> EtcdCluster:
        for attempt in range(1, attempts + 1):
            for i in range(len(self.members)):
                self.start_member(i)
            try:
                wait_until(self._up_or_lost, timeout, 0.2, "etcd cluster healthy")
            finally:
                lost = any(not m.alive() for m in self.members)
            if not lost:
                return self
            # A member died at start (its port was taken): start again on new ports and fresh dirs.
            self.stop()
            if attempt == attempts:
                raise AssertionError(f"etcd did not start in {attempts} attempts; see {self.root}/m*.log")
            for m in self.members:
                shutil.rmtree(m.data_dir, ignore_errors=True)
            self._pick_ports()
        return self

    def _up_or_lost(self) -> bool:
        """True once every member is healthy, or as soon as one has exited (start() then retries)."""
        if any(not m.alive() for m in self.members):
            return True
        return all(m.healthy() for m in self.members)

    def get(self, key: str) -> str | None:
        """The value of ``key`` read from the first member that answers (etcd's JSON gateway), or None."""
        body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
        for m in self.members:
            if not m.alive():
                continue
            req = urllib.request.Request(m.endpoint + "/v3/kv/range", body, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=2) as r:
                    doc = json.loads(r.read())
            except (OSError, ValueError):
                continue
            kvs = doc.get("kvs") or []
            return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None
        raise AssertionError("no etcd member answered")

    def kill(self, i: int) -> None:
        """kill -9 member ``i`` by its pid."""
        m = self.members[i]
        if m.popen is not None and m.popen.poll() is None:
            m.popen.kill()
            m.popen.wait(10)

    def pause(self, i: int) -> None:
        """SIGSTOP member ``i`` by its pid: a frozen host. Its sockets stay open and accept connections
        (the kernel's backlog) but nothing answers: clients wait for their timeouts, not a refusal."""
        m = self.members[i]
        assert m.popen is not None and m.popen.poll() is None
        os.kill(m.popen.pid, signal.SIGSTOP)
        self.paused.add(i)

    def resume(self, i: int) -> None:
        """SIGCONT member ``i`` by its pid (it goes on where it stopped, its raft state intact)."""
        m = self.members[i]
        if m.popen is not None and m.popen.poll() is None:
            os.kill(m.popen.pid, signal.SIGCONT)
        self.paused.discard(i)

    def stop_member(self, i: int) -> None:
        m = self.members[i]
        if i in self.paused:
            self.resume(i)
        if m.popen is not None:
            stop_popen(m.popen)

    def stop(self) -> None:
        for i in range(len(self.members)):
            self.stop_member(i)
