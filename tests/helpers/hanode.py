"""One HA node for the failover tests and bench: a real receiver, a ``logship ha`` agent that runs the
node's shipper when it leads, and the hooks recording what happened in files the test reads.

Every process is started here and ended by pid: the receiver and agent through their Popen objects,
the shipper the agent started through the pid its control socket reports.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from logship.admin import control
from tests.helpers.procs import ReceiverProc, receiver_proc, stop_popen
from tests.helpers.source import ROOT
from tests.helpers.source import write_segment as write_segment  # re-exported: the HA tests use it from here
from tests.helpers.waiting import wait_until

SHIPPER_ADMIN = re.compile(r"(?<!ha )admin endpoint on http://([0-9.]+):(\d+)/status and /metrics")
"""The line the agent's shipper logs (into the agent's log, its stdout) when ``admin`` is set in [ha.shipper]."""


class HaNode:
    def __init__(
        self,
        root: Path,
        name: str,
        secret: Path,
        source: Path | None = None,
        receiver_extra: Sequence[str] = (),
        hooks: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root / name
        self.root.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.secret = secret
        self.source = source
        self.receiver: ReceiverProc = receiver_proc(self.root, secret, name="recv", extra=list(receiver_extra))
        self.agent: subprocess.Popen[bytes] | None = None
        self.hooks = dict(hooks or {})

    @property
    def data_dir(self) -> Path:
        return self.root / "recv"

    @property
    def ship_dir(self) -> Path:
        return self.root / "ship"

    @property
    def agent_log(self) -> Path:
        return self.root / "agent.log"

    def copy(self, stream: str = "sg1") -> Path:
        return self.data_dir / stream

    def write_config(
        self,
        endpoints: Sequence[str],
        peers: Mapping[str, str],
        ttl: float = 3,
        dial: str = "lossless",
        shipper: Mapping[str, str] | None = None,
        cluster: str = "c1",
        **more: str,
    ) -> Path:
        d = self.root
        eps = ", ".join(json.dumps(e) for e in endpoints)
        # Each hook also stamps the wall clock at its end into ``events`` (read by ``events()``).
        hooks = {
            "on_promote": f"touch {d}/primary; echo promote >> {d}/roles; echo promote $(date +%s.%N) >> {d}/events",
            "on_demote": f"rm -f {d}/primary; echo demote >> {d}/roles; echo demote $(date +%s.%N) >> {d}/events",
            "on_follow": f"echo follow {{primary}} >> {d}/roles; echo follow $(date +%s.%N) {{primary}} >> {d}/events",
            **self.hooks,
        }
        lines = [
            "[ha]",
            f'cluster = "{cluster}"',
            f'node = "{self.name}"',
            'stream = "sg1"',
            f"etcd = [{eps}]",
            f"ttl = {ttl}",
            f'dial = "{dial}"',
            f"data_dir = {json.dumps(str(self.data_dir))}",
            f"shipper_state_dir = {json.dumps(str(self.ship_dir))}",
            f"secret_file = {json.dumps(str(self.secret))}",
            *(f"{k} = {json.dumps(v)}" for k, v in {**hooks, **more}.items()),
        ]
        if self.source is not None:
            lines.append(f"source = {json.dumps(str(self.source))}")
        lines += ["", "[ha.peers]", *(f"{n} = {json.dumps(a)}" for n, a in peers.items())]
        if shipper:
            lines += ["", "[ha.shipper]", *(f"{k} = {json.dumps(v)}" for k, v in shipper.items())]
        path = d / "node.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_agent(self, python: Sequence[str] = (sys.executable,), user: str | None = None) -> None:
        """Start the agent; ``user`` runs it (and so the shipper it starts) as that user, by name."""
        assert self.agent is None or self.agent.poll() is not None
        ids = pwd.getpwnam(user) if user else None
        with open(self.agent_log, "ab") as log:
            self.agent = subprocess.Popen(
                [*python, "-m", "logship.ha", "--config", str(self.root / "node.toml")],
                stdout=log,
                stderr=log,
                cwd="/" if ids else ROOT,  # another user may not enter this checkout's parents
                user=ids.pw_uid if ids else None,
                group=ids.pw_gid if ids else None,
                extra_groups=[] if ids else None,
            )

    def kill_agent(self) -> None:
        assert self.agent is not None
        self.agent.kill()
        self.agent.wait(10)

    def shipper_pid(self) -> int | None:
        try:
            reply = control.call(self.ship_dir / "control.sock", {"op": "status"}, 2)
        except (control.ControlUnavailable, control.ControlError, OSError, ValueError):
            return None
        pid = reply.get("pid")
        return pid if isinstance(pid, int) else None

    def kill_shipper(self) -> bool:
        """kill -9 the shipper the agent started (by the pid it reports); False when none runs."""
        pid = self.shipper_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):  # bounded: the control socket stops answering once it is gone
            if self.shipper_pid() is None:
                break
            time.sleep(0.05)
        return True

    def primary(self) -> bool:
        return (self.root / "primary").exists()

    def roles(self) -> str:
        p = self.root / "roles"
        return p.read_text() if p.exists() else ""

    def events(self) -> list[tuple[str, float]]:
        """The hooks that ran, in order, each with the wall-clock time it ended: ``("demote", 1764750000.1)``."""
        p = self.root / "events"
        out = []
        for line in p.read_text().splitlines() if p.exists() else []:
            kind, _, rest = line.partition(" ")
            out.append((kind, float(rest.split()[0])))
        return out

    def admin_url(self) -> str | None:
        """The agent's /status address from its log (``admin = "127.0.0.1:0"``); None before it listens."""
        found = re.findall(r"ha admin endpoint on (http://\S+)/status", self.log_text())
        return found[-1] if found else None

    def ha_status(self, timeout: float = 1.0) -> dict[str, object] | None:
        """The agent's own /status (logship/ha/admin.py), or None when it does not answer."""
        url = self.admin_url()
        if url is None:
            return None
        try:
            with urllib.request.urlopen(url + "/status", timeout=timeout) as r:
                doc = json.loads(r.read())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def shipper_admin_url(self) -> str | None:
        """The admin address of the shipper the agent started last (``[ha.shipper] admin``), from the log."""
        found = SHIPPER_ADMIN.findall(self.log_text())
        return f"http://{found[-1][0]}:{found[-1][1]}" if found else None

    def log_text(self) -> str:
        return self.agent_log.read_text(errors="replace") if self.agent_log.exists() else ""

    def stop(self) -> None:
        """Everything of this node, by pid: the agent (which stops its shipper), a shipper left, the receiver."""
        if self.agent is not None:
            stop_popen(self.agent)
        self.kill_shipper()
        self.receiver.stop(timeout=5)


def start_agents(nodes: Sequence[HaNode]) -> None:
    """Start the nodes' agents: the first bootstraps as the primary, then the others follow it."""
    first = nodes[0]
    first.start_agent()
    wait_until(first.primary, 30, what=f"{first.name} bootstraps as the primary")
    for n in nodes[1:]:
        n.start_agent()
    for n in nodes[1:]:
        wait_until(lambda n=n: f"follow {first.name}" in n.roles(), 30, what=f"{n.name} follows {first.name}")


def start_ha_nodes(
    tmp_path: Path,
    endpoints: Sequence[str],
    secret: Path,
    names: Sequence[str] = ("a", "b"),
    ttl: float = 3,
    receiver_extra: Sequence[str] = (),
    **config: object,
) -> list[HaNode]:
    """Nodes ``names``, each a started receiver and agent with every other node as a peer; the first has
    the application's source (``tmp_path/<first>/src``) and bootstraps as the primary, the others follow it.

    ``receiver_extra`` goes to every receiver's command line; ``config`` to ``write_config`` for every
    node (``shipper={...}``, ``admin="127.0.0.1:0"``, ...). On a failure the nodes started so far are stopped.
    """
    first = names[0]
    src = tmp_path / first / "src"
    src.mkdir(parents=True)
    nodes = [HaNode(tmp_path, n, secret, src if n == first else None, receiver_extra) for n in names]
    try:
        for n in nodes:
            n.receiver.start()
        for n in nodes:
            peers = {o.name: o.receiver.address for o in nodes if o is not n}
            n.write_config(endpoints, peers, ttl, **config)  # type: ignore[arg-type]
        start_agents(nodes)
    except BaseException:
        for n in nodes:
            n.stop()
        raise
    return nodes


def pair(
    tmp_path: Path, endpoints: Sequence[str], secret: Path, ttl: float = 3, **more: str
) -> tuple[HaNode, HaNode, Path]:
    """a (with the application's source) and b, their receivers running, their agents not yet (see
    ``start_agents``); both ship with ``seal = "immediate"``, b has an admin endpoint. ``more``: [ha]
    keys, and the shipper's ``seed_command``."""
    src = tmp_path / "a" / "src"
    src.mkdir(parents=True)
    a = HaNode(tmp_path, "a", secret, source=src)
    b = HaNode(tmp_path, "b", secret)
    a.receiver.start()
    b.receiver.start()
    ship = {"seal": "immediate", **{k: v for k, v in more.items() if k == "seed_command"}}
    opts = {k: v for k, v in more.items() if k != "seed_command"}
    a.write_config(endpoints, {"b": b.receiver.address}, ttl, shipper=ship, **opts)
    b.write_config(endpoints, {"a": a.receiver.address}, ttl, shipper=ship, admin="127.0.0.1:0", **opts)
    return a, b, src


def shipper_wait(node: HaNode, segment: str, *how: str) -> subprocess.CompletedProcess[str]:
    """`shipper wait` on the node's shipper state dir for stream sg1 (30 s)."""
    argv = [sys.executable, "-m", "shipper", "wait", "--state-dir", str(node.ship_dir), "--stream", "sg1"]
    return subprocess.run(
        [*argv, "--segment", segment, *how, "--timeout", "30"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def copy_state(node: HaNode) -> dict[str, object]:
    """The node's copy row from `receiver status --json` (offline or through the running receiver)."""
    done = subprocess.run(
        [sys.executable, "-m", "receiver", "status", "--data-dir", str(node.data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    rows = json.loads(done.stdout)["copies"]
    return rows[0] if rows else {}


def readable(path: Path) -> bytes | None:
    """The file's bytes, or None while it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def ha(node: HaNode, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """`python -m logship.ha ARGS` with the node's config; never a traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "logship.ha", *args, "--config", str(node.root / "node.toml")],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def names(d: Path) -> dict[str, bytes]:
    """The segments in ``d``, name to bytes."""
    return {p.name: p.read_bytes() for p in sorted(d.glob("E00*.log"))}
