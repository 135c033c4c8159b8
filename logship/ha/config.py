"""The HA agent's ``[ha]`` table (docs/failover.md "Running the agent")."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from logship.ha import daemons
from logship.ha.decide import Dial, Policy
from logship.ha.rejoin import MODES
from logship.ha.shipping import ShipperPlan
from protocol.names import check_stream_name
from shipper.policy import PolicyError, parse_policy


@dataclass(frozen=True, slots=True)
class AgentConfig:
    cluster: str
    node: str
    endpoints: list[str]
    daemon: daemons.Node
    policy: Policy = field(default_factory=Policy)
    failover: str = "auto"
    """``manual``: this node is never promoted automatically."""
    source: Path | None = None
    """The application's own log dir: shipped while this node leads the epoch it took with it."""
    shipping: ShipperPlan | None = None
    """How to ship when primary; None: the agent runs no shipper (hooks only)."""
    admin: str | None = None
    """HOST:PORT of the agent's read-only /status and /metrics (logship/ha/admin.py)."""
    rejoin: str = "auto"
    """How a copy this node led from rejoins a newer epoch: ``auto`` (keep what it led up to the new
    epoch's fork, checked; else reseed), ``reseed`` or ``manual`` (logship/ha/rejoin.py)."""


def load(doc: dict[str, object]) -> AgentConfig:
    """The agent's settings from the ``[ha]`` table. Raises ValueError naming the bad key."""
    ha = doc.get("ha")
    if not isinstance(ha, dict):
        raise ValueError("missing [ha] table")

    def s(key: str, default: str | None = None) -> str | None:
        v = ha.get(key, default)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"[ha] {key}: expected a string")
        return v

    endpoints = ha.get("etcd")
    if not (isinstance(endpoints, list) and endpoints and all(isinstance(e, str) for e in endpoints)):
        raise ValueError("[ha] etcd: expected a list of endpoint URLs")
    cluster, node, stream = s("cluster"), s("node"), s("stream")
    if not (cluster and node and stream):
        raise ValueError("[ha] cluster, node and stream are required")
    ttl = ha.get("ttl", 3)
    if not isinstance(ttl, int | float) or ttl < 2:
        raise ValueError("[ha] ttl: expected a number of seconds >= 2")
    data_dir, state_dir, source = s("data_dir"), s("shipper_state_dir"), s("source")

    daemon = daemons.Node(
        stream,
        Path(data_dir) if data_dir else None,
        Path(state_dir) if state_dir else None,
        s("on_promote"),
        s("on_demote"),
        s("on_follow"),
    )
    try:
        dial = Dial(s("dial", "lossless"))
    except ValueError:
        raise ValueError("[ha] dial: expected lossless, good or best") from None
    policy = Policy(ttl=float(ttl), margin=float(ttl) / 3, dial=dial)
    failover = s("failover", "auto")
    if failover not in ("auto", "manual"):
        raise ValueError("[ha] failover: expected auto or manual")
    admin = s("admin")
    if admin is not None and not admin.rpartition(":")[2].isdigit():
        raise ValueError("[ha] admin: expected HOST:PORT")
    rejoin = s("rejoin", "auto")
    if rejoin not in MODES:
        raise ValueError("[ha] rejoin: expected auto, reseed or manual")
    plan = _plan(ha, daemon)
    src = Path(source) if source else None
    return AgentConfig(cluster, node, list(endpoints), daemon, policy, failover, src, plan, admin, str(rejoin))


def _plan(ha: dict[str, object], daemon: daemons.Node) -> ShipperPlan | None:
    peers = ha.get("peers", {})
    if not isinstance(peers, dict) or not all(isinstance(v, str) for v in peers.values()):
        raise ValueError('[ha.peers]: expected node = "HOST:PORT" (each other node\'s receiver)')
    for name in peers:
        check_stream_name(name)
    if not peers:
        return None
    secret, sync = ha.get("secret_file"), ha.get("sync", "ANY 1")
    if daemon.shipper_state_dir is None or not isinstance(secret, str):
        raise ValueError("[ha] with peers: shipper_state_dir and secret_file are required")
    if not isinstance(sync, str):
        raise ValueError("[ha] sync: expected a policy text (ALL, ANY k)")
    try:
        parsed = parse_policy(sync)
    except PolicyError as e:
        raise ValueError(f"[ha] sync: {e}") from None
    if parsed.targets is not None:
        # The policy may name nodes; the shipper knows its targets by address.
        sync = str(replace(parsed, targets=tuple(peers.get(t, t) for t in parsed.targets)))
    extra = ha.get("shipper", {})
    if not isinstance(extra, dict):
        raise ValueError("[ha.shipper]: expected a table of shipper stream settings")
    return ShipperPlan(daemon.stream, daemon.shipper_state_dir, secret, dict(peers), sync, dict(extra))
