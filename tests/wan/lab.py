"""Two test hosts in network namespaces, dc1 and dc2, joined by a capped, delayed link.

Layout (the same for every run; only the namespace names change with ``prefix``)::

    dc1 (198.18.0.1/30) ── veth "wan0" ─ tbf RATE ─── veth "wan0" (198.18.0.2/30) dc2
                                                         198.18.0.2:7400  delay proxy, RTT/2 each way
                                                         127.0.0.1:7401   -> the receiver listens here

The shipper runs in dc1 with ``--target 198.18.0.2:7400``; the receiver runs in dc2 with
``--listen 127.0.0.1:7401``. Every byte between them crosses the veth pair (bandwidth capped by tc tbf
on both ends) and the delay proxy (this kernel has no netem). The addresses come from the benchmarking
range 198.18.0.0/15 (RFC 2544) and exist only inside the two namespaces, which have no route to the
host's network.

Namespaces are named ``<prefix>dc1`` and ``<prefix>dc2``: scripts/wan uses no prefix; each test run
uses its own (``t<pid>-``), so test suites running at the same time never share a namespace, and a
run's leftovers (after kill -9 of pytest) are removed by the next run once that pid is gone.
Creating and deleting are serialized with flock on /run/logship-wan.lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.procs import Proc
from tests.helpers.source import ROOT

STATE_ROOT = Path("/run/logship-wan")
LOCK_PATH = Path("/run/logship-wan.lock")
DEV = "wan0"
DC1_ADDR = "198.18.0.1"
DC2_ADDR = "198.18.0.2"
PREFIX_LEN = 30
# Fixed ports are safe here, unlike on the host: the addresses live only in this run's own namespaces,
# where nothing else listens.
PROXY_PORT = 7400
RECEIVER_PORT = 7401
TARGET = f"{DC2_ADDR}:{PROXY_PORT}"
"""What the shipper in dc1 ships to: the delay proxy in dc2."""
RECEIVER_LISTEN = f"127.0.0.1:{RECEIVER_PORT}"
"""Where the receiver in dc2 listens; the delay proxy forwards to it."""


class WanUnavailable(Exception):
    """The namespaces cannot be made on this machine; the message says why, in one line."""


def unavailable_reason() -> str | None:
    """Say why network namespaces cannot be used here, or None if they can (root, ip, tc)."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, e.g. with sudo)"
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found: install iproute2 (scripts/_setup.sh does so as root)"
    return None


def parse_duration(text: str) -> float:
    """Parse ``50ms``, ``0.05s``, ``50us`` or a bare number of milliseconds into seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(us|ms|s|)\s*", text)
    if not m:
        raise ValueError(f"bad duration {text!r}: expected e.g. 50ms, 0.05s")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "": 1e-3}[m.group(2)]
    return float(m.group(1)) * scale


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise WanUnavailable(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.returncode}")
    return proc


@contextlib.contextmanager
def _locked(timeout: float = 120) -> Iterator[None]:
    """Hold the host-wide lock that serializes creating and deleting namespaces."""
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WanUnavailable(f"{LOCK_PATH} held by someone else for {timeout:.0f}s") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def _namespaces() -> set[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Wan:
    """The two namespaces of one prefix, the link between them, and the delay proxy."""

    prefix: str = ""
    rate_bps: float = 100e6
    """Link rate in bits per second (tbf on both veth ends)."""
    rtt: float = 0.05
    """Round trip added by the delay proxy, in seconds (half in each direction)."""

    @property
    def dc1(self) -> str:
        return f"{self.prefix}dc1"

    @property
    def dc2(self) -> str:
        return f"{self.prefix}dc2"

    @property
    def state_dir(self) -> Path:
        return STATE_ROOT / (self.prefix.rstrip("-") or "default")

    def ns(self, name: str) -> str:
        """Map ``dc1``/``dc2`` (or a full namespace name of ours) to the namespace name."""
        if name in ("dc1", "dc2"):
            return f"{self.prefix}{name}"
        if name in (self.dc1, self.dc2):
            return name
        raise ValueError(f"unknown host {name!r}: expected dc1 or dc2")

    def cmd(self, host: str, argv: list[str]) -> list[str]:
        """The command line that runs ``argv`` inside ``host`` (dc1 or dc2); the pid stays the same."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def is_up(self) -> bool:
        return {self.dc1, self.dc2} <= _namespaces()

    # -- up / down ------------------------------------------------------------------------------

    def up(self) -> None:
        """Create (or bring to the requested rate and RTT) both namespaces, the link and the proxy.

        Idempotent. Raises WanUnavailable with the reason when this machine cannot do it.
        """
        reason = unavailable_reason()
        if reason:
            raise WanUnavailable(reason)
        STATE_ROOT.mkdir(mode=0o755, exist_ok=True)
        with _locked():
            have = _namespaces()
            for ns in (self.dc1, self.dc2):
                if ns not in have:
                    _run(["ip", "netns", "add", ns])
            if _run(["ip", "-n", self.dc1, "link", "show", DEV], check=False).returncode != 0:
                # Create the pair directly inside the namespaces: no interface ever appears in the
                # host's namespace, so nothing of this can touch the host's network.
                _run(
                    [
                        "ip",
                        "link",
                        "add",
                        DEV,
                        "netns",
                        self.dc1,
                        "type",
                        "veth",
                        "peer",
                        "name",
                        DEV,
                        "netns",
                        self.dc2,
                    ]
                )
            for ns, addr in ((self.dc1, DC1_ADDR), (self.dc2, DC2_ADDR)):
                # No IPv6 (and so no link-local addresses): the only addresses are ours below.
                for conf in ("all", "default", DEV):
                    _run(
                        ["ip", "netns", "exec", ns, "sh", "-c", f"echo 1 > /proc/sys/net/ipv6/conf/{conf}/disable_ipv6"]
                    )
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
                _run(["ip", "-n", ns, "addr", "replace", f"{addr}/{PREFIX_LEN}", "dev", DEV])
                _run(["ip", "-n", ns, "link", "set", DEV, "up"])
                _run(["tc", "-n", ns, "qdisc", "replace", "dev", DEV, "root", "tbf", *self._tbf()])
            self.state_dir.mkdir(mode=0o755, exist_ok=True)
            self._start_proxy()

    def _tbf(self) -> list[str]:
        rate = int(self.rate_bps)
        byte_rate = rate / 8
        # A burst of a few ms (at least 64 KiB, so a GSO packet of the veth passes whole) keeps the
        # cap accurate; the queue holds ~20 ms of traffic, enough for TCP to keep the link busy.
        burst = max(64 * 1024, int(byte_rate * 0.004))
        limit = max(3 * burst, int(byte_rate * 0.02))
        return ["rate", f"{rate}bit", "burst", str(burst), "limit", str(limit)]

    def _proxy_pid(self) -> int | None:
        try:
            pid = int((self.state_dir / "proxy.pid").read_text())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"delayproxy" in cmdline else None

    def _start_proxy(self) -> None:
        params = {"rtt": self.rtt, "rate_bps": self.rate_bps}
        params_path = self.state_dir / "params.json"
        pid = self._proxy_pid()
        if pid is not None:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(params_path.read_text())["rtt"] == self.rtt:
                    params_path.write_text(json.dumps(params))
                    return
            self._stop_pid(pid)
        log_path = self.state_dir / "proxy.log"
        argv = [
            sys.executable,
            "-m",
            "tests.helpers.delayproxy",
            "--listen",
            TARGET,
            "--connect",
            RECEIVER_LISTEN,
            "--delay",
            repr(self.rtt / 2),
        ]
        with open(log_path, "ab") as log:
            offset = log.tell()
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            proc = subprocess.Popen(
                self.cmd("dc2", argv),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
        (self.state_dir / "proxy.pid").write_text(f"{proc.pid}\n")
        params_path.write_text(json.dumps(params))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with open(log_path, "rb") as f:
                f.seek(offset)
                if b"delaying" in f.read():
                    return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise WanUnavailable(f"delay proxy did not start; see {log_path}")

    @staticmethod
    def _stop_pid(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _pid_alive(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def down(self) -> None:
        """Stop the proxy and whatever still runs in the two namespaces, and delete them. Idempotent."""
        if unavailable_reason():
            return
        with _locked():
            pid = self._proxy_pid()
            if pid is not None:
                self._stop_pid(pid)
            have = _namespaces()
            for ns in (self.dc1, self.dc2):
                if ns not in have:
                    continue
                # Processes left inside our namespace are ours (started through cmd()); end them by pid.
                for line in _run(["ip", "netns", "pids", ns], check=False).stdout.split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(line), signal.SIGKILL)
                _run(["ip", "netns", "del", ns], check=False)
            shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- the link -------------------------------------------------------------------------------

    def set_link(self, up: bool) -> None:
        """Cut (``up=False``) or restore the link: both veth ends down or up."""
        for ns in (self.dc1, self.dc2):
            _run(["ip", "-n", ns, "link", "set", DEV, "up" if up else "down"])

    def describe(self) -> str:
        if not self.is_up():
            return f"{self.dc1}/{self.dc2}: down"
        qdisc = _run(["tc", "-n", self.dc1, "qdisc", "show", "dev", DEV], check=False).stdout.strip()
        pid = self._proxy_pid()
        return (
            f"{self.dc1} {DC1_ADDR}/{PREFIX_LEN} <-> {self.dc2} {DC2_ADDR}/{PREFIX_LEN}\n"
            f"  link: {qdisc}\n"
            f"  delay proxy: {TARGET} -> {RECEIVER_LISTEN} in {self.dc2}, rtt {self.rtt * 1000:g} ms, "
            f"{'pid ' + str(pid) if pid else 'NOT RUNNING'}\n"
            f"  receiver in {self.dc2}: --listen {RECEIVER_LISTEN}; shipper in {self.dc1}: --target {TARGET}"
        )

    @classmethod
    def current(cls, prefix: str = "") -> Wan:
        """The Wan of ``prefix`` with the rate and RTT it was brought up with (defaults if unknown)."""
        wan = cls(prefix)
        with contextlib.suppress(OSError, ValueError, KeyError):
            params = json.loads((wan.state_dir / "params.json").read_text())
            wan.rate_bps, wan.rtt = float(params["rate_bps"]), float(params["rtt"])
        return wan


class NsProc(Proc):
    """A `python -m receiver|shipper` process inside dc1 or dc2 (ip netns exec keeps the pid)."""

    def __init__(self, wan: Wan, host: str, module: str, args: list[str], log_path: Path) -> None:
        super().__init__(module, args, log_path)
        self.wan = wan
        self.host = host

    def command(self) -> list[str]:
        return self.wan.cmd(self.host, super().command())


def remove_stale_test_namespaces() -> list[str]:
    """Delete per-run pairs (``t<pid>-dc1`` of a test run, ``b<pid>-dc1`` of a benchmark) whose
    process is gone, e.g. after kill -9 of pytest; return their prefixes."""
    if unavailable_reason():
        return []
    removed = []
    for ns in sorted(_namespaces()):
        m = re.fullmatch(r"([a-z](\d+)-)dc1", ns)
        if m and not _pid_alive(int(m.group(2))):
            Wan(m.group(1)).down()
            removed.append(m.group(1))
    return removed
