"""The HA agent's one decision: ``decide(view, now) -> Action``, pure, fed the time.

The agent's glue reads etcd and the local daemons into a ``View``, calls ``decide`` and carries the
action out (Patroni's ``ha.py`` rules without its I/O). Rules (issue 16):

- A primary renews its lease, and demotes itself on its own clock when its last successful
  keep-alive is older than TTL minus a margin, without waiting for etcd to drop the key.
- A member that sees a newer epoch than its copy's is fenced first, then follows the leader.
- A standby takes over only when the leader key is gone, it is eligible (not Failed, Suspended or
  manual-only; its epoch is the cluster's; it passes the mount dial), no eligible member is ahead of
  it (ties: the lowest node name), and no shipper of the current epoch still attaches and
  acknowledges to it (the primary lost etcd, not its life).
- A planned switchover or a forced failover names its node; everyone else holds.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Dial(enum.Enum):
    """How much loss an automatic failover may accept (Exchange's AutoDatabaseMountDial)."""

    LOSSLESS = "lossless"
    GOOD = "good"
    BEST = "best"


@dataclass(frozen=True, slots=True)
class Mark:
    """A copy position as members publish it."""

    segment: str
    offset: int
    index: int
    """Ordinal of the segment in log order (for "segments behind")."""
    total: int
    """Bytes of the log up to this position (for "bytes behind" and "ahead of")."""


@dataclass(frozen=True, slots=True)
class Member:
    """What ``members/<node>`` says, bound to that node's lease."""

    name: str
    epoch: int
    mark: Mark | None
    state: str = "Healthy"
    """The copy's state (``Failed`` and ``Suspended`` are never promoted)."""
    failover: str = "auto"
    """``auto`` or ``manual`` (never races: an SCR target in another datacenter)."""


@dataclass(frozen=True, slots=True)
class Policy:
    ttl: float = 3.0
    """The leader lease's TTL in seconds."""
    margin: float = 1.0
    """Demote this long before the TTL can have run out since the last successful keep-alive."""
    dial: Dial = Dial.LOSSLESS
    max_segments_behind: int | None = None
    """``good`` / ``best``: at most this many segments behind the leader's last published head
    (None: the dial's own, ``DIAL_LIMITS``)."""
    max_bytes_behind: int | None = None
    """``good`` / ``best``: at most this many bytes behind the head (None: the dial's own)."""
    ack_fresh: float = 2.0
    """A shipper that acknowledged within this many seconds counts as still attached."""


DIAL_LIMITS = {Dial.GOOD: (1, 16 * 1024 * 1024), Dial.BEST: (6, 96 * 1024 * 1024)}
"""(segments, bytes) a standby may be behind the head under each lossy dial, unless the policy says.
Like Exchange's GoodAvailability and BestAvailability (6 and 12 logs of 1 MiB there): ``good`` loses at
most about one segment, ``best`` prefers a promotion to up to six (96 MiB of 16 MiB WAL files)."""


def dial_limits(p: Policy) -> tuple[int, int]:
    """The (segments, bytes) behind the head the policy's lossy dial allows."""
    segments, nbytes = DIAL_LIMITS.get(p.dial, (0, 0))
    return (
        segments if p.max_segments_behind is None else p.max_segments_behind,
        nbytes if p.max_bytes_behind is None else p.max_bytes_behind,
    )


@dataclass(frozen=True, slots=True)
class View:
    """One node's picture of one stream: etcd's keys plus the local daemons."""

    me: str
    epoch: int
    """The cluster's epoch (the ``epoch`` key)."""
    leader: str | None
    """Who holds the ``leader`` key, None when it is gone."""
    primary: bool
    """This node currently acts as the primary (shipping, application writable)."""
    members: Mapping[str, Member]
    last_keepalive: float | None = None
    """When (agent clock) this node's lease was last renewed successfully."""
    head: Mark | None = None
    """The leader's last published log head (``status``)."""
    sync: frozenset[str] = frozenset()
    """Nodes that hold everything acknowledged (``sync``)."""
    following: str | None = None
    """The primary this node's receiver was last pointed at."""
    last_ack: float | None = None
    """When a shipper of the current epoch last had an ACK from this node's receiver."""
    switchover_to: str | None = None
    force_to: str | None = None
    """``failover --to NODE --force``: promote NODE without the dial."""
    policy: Policy = field(default_factory=Policy)


class Kind(enum.Enum):
    HOLD = "hold"
    RENEW = "renew"
    DEMOTE = "demote"
    HANDOVER = "handover"
    FENCE = "fence"
    FOLLOW = "follow"
    ACQUIRE = "acquire"


@dataclass(frozen=True, slots=True)
class Action:
    kind: Kind
    reason: str = ""
    epoch: int = 0
    """FENCE: the epoch to fence at; ACQUIRE: the epoch the transaction expects to find."""
    node: str | None = None
    """FOLLOW: the primary; HANDOVER: the node taking over."""


def ineligible(view: View, name: str) -> str | None:
    """Why ``name`` may not take over now (None: it may), apart from who is ahead."""
    m = view.members.get(name)
    p = view.policy
    if m is None:
        return "not registered (no members key)"
    if m.state in ("Failed", "Suspended", "Seeding"):  # Seeding: its old bytes moved aside (a reseed)
        return f"copy is {m.state}"
    if m.failover == "manual":
        return "failover = manual"
    if m.epoch != view.epoch:
        return f"copy epoch {m.epoch} is not the cluster's {view.epoch}"
    if m.mark is None:
        return "no copy position published"
    if view.epoch == 0:
        return None  # bootstrap: no leader ever, nothing acknowledged that could be lost
    if p.dial is Dial.LOSSLESS:
        return None if name in view.sync else "not in the sync set (dial lossless)"
    if view.head is None:
        return "no leader head published to measure the dial against"
    seg_behind = view.head.index - m.mark.index
    bytes_behind = view.head.total - m.mark.total
    max_segments, max_bytes = dial_limits(p)
    if seg_behind > max_segments:
        return f"{seg_behind} segments behind the head (dial {p.dial.value} allows {max_segments})"
    if bytes_behind > max_bytes:
        return f"{bytes_behind} bytes behind the head (dial {p.dial.value} allows {max_bytes})"
    return None


def _ahead(a: Member, b: Member) -> bool:
    """Whether ``a`` should win over ``b``: more bytes, then the lower name."""
    assert a.mark is not None and b.mark is not None
    return (a.mark.total, b.name) > (b.mark.total, a.name)


def best_candidate(view: View) -> str | None:
    """The eligible member that should take over, or None."""
    best: Member | None = None
    for name in sorted(view.members):
        if ineligible(view, name) is None:
            m = view.members[name]
            if best is None or _ahead(m, best):
                best = m
    return best.name if best else None


def _decide_primary(view: View, now: float) -> Action:
    p = view.policy
    if view.last_keepalive is None or now - view.last_keepalive > p.ttl - p.margin:
        age = "never" if view.last_keepalive is None else f"{now - view.last_keepalive:.1f}s ago"
        return Action(Kind.DEMOTE, f"last lease keep-alive {age} (TTL {p.ttl:g}s, margin {p.margin:g}s)")
    if view.leader is None:
        # A fresh keep-alive on a lease granted anew does not bring back the key the old lease held: a
        # primary without the key would write on while a standby may win it (etcd unreadable keeps the
        # last view, so this is a key really gone, not a blip).
        return Action(Kind.DEMOTE, "the leader key is gone (our lease expired or the key was deleted)")
    if view.leader != view.me:
        return Action(Kind.DEMOTE, f"{view.leader} holds the leader key")
    mine = view.members.get(view.me)
    if mine is not None and view.epoch > mine.epoch:
        return Action(Kind.DEMOTE, f"cluster epoch {view.epoch} is newer than ours {mine.epoch}")
    target = view.switchover_to or view.force_to
    if target is not None and target != view.me:
        return Action(Kind.HANDOVER, f"switchover to {target} requested", view.epoch, target)
    return Action(Kind.RENEW)


def decide(view: View, now: float) -> Action:
    """The one thing this node should do next for this stream."""
    if view.primary:
        return _decide_primary(view, now)
    mine = view.members.get(view.me)
    if mine is not None and view.epoch > mine.epoch:
        return Action(Kind.FENCE, f"cluster epoch {view.epoch} is newer than the copy's {mine.epoch}", view.epoch)
    if view.leader == view.me:
        # We hold the key (won the transaction) but are not acting yet: finish the promotion.
        return Action(Kind.ACQUIRE, "leader key is ours; promotion to finish", view.epoch)
    if view.leader is not None:
        if view.following != view.leader:
            return Action(Kind.FOLLOW, f"{view.leader} is the leader", node=view.leader)
        return Action(Kind.HOLD, f"following {view.leader}")
    return _decide_takeover(view, now)


def _decide_takeover(view: View, now: float) -> Action:
    me = view.me
    if view.force_to is not None:
        if view.force_to != me:
            return Action(Kind.HOLD, f"forced failover to {view.force_to}")
        return Action(Kind.ACQUIRE, "forced failover to this node (loss accepted)", view.epoch)
    if view.switchover_to is not None:
        if view.switchover_to != me:
            return Action(Kind.HOLD, f"switchover to {view.switchover_to} under way")
        return Action(Kind.ACQUIRE, "planned switchover to this node", view.epoch)
    why = ineligible(view, me)
    if why is not None:
        return Action(Kind.HOLD, f"not eligible: {why}")
    best = best_candidate(view)
    if best != me:
        return Action(Kind.HOLD, f"{best} is ahead or preferred")
    if view.last_ack is not None and now - view.last_ack <= view.policy.ack_fresh:
        return Action(Kind.HOLD, "a shipper of the current epoch is still attached and acknowledging")
    return Action(Kind.ACQUIRE, "leader key gone; this node is the best eligible standby", view.epoch)
