"""decide(view, now): tables and a fake clock, no I/O."""

from __future__ import annotations

from dataclasses import replace

import pytest

from logship.ha.decide import (
    Action,
    Dial,
    Kind,
    Mark,
    Member,
    Policy,
    View,
    best_candidate,
    decide,
    dial_limits,
    ineligible,
)

HEAD = Mark("E05", 500, 5, 5500)


def member(name: str, total: int = 5500, index: int = 5, **kw: object) -> Member:
    return Member(name, kw.pop("epoch", 3), Mark("E05", total - 5000, index, total), **kw)  # type: ignore[arg-type]


def standby(**kw: object) -> View:
    """Node b, a standby; leader a is gone; b and c are in sync."""
    base = View(
        me="b",
        epoch=3,
        leader=None,
        primary=False,
        members={"b": member("b"), "c": member("c", 5400)},
        head=HEAD,
        sync=frozenset({"b", "c"}),
        following="a",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def primary(**kw: object) -> View:
    base = View(me="a", epoch=3, leader="a", primary=True, members={"a": member("a")}, last_keepalive=100.0)
    return replace(base, **kw)  # type: ignore[arg-type]


LOSSY = Policy(dial=Dial.GOOD, max_segments_behind=1, max_bytes_behind=1000)


@pytest.mark.parametrize(
    ("view", "now", "kind", "reason"),
    [
        # The primary renews while its keep-alive is fresh; demotes on its own clock before TTL.
        (primary(), 101.9, Kind.RENEW, ""),
        (primary(), 102.1, Kind.DEMOTE, "last lease keep-alive 2.1s ago"),
        (primary(last_keepalive=None), 100.0, Kind.DEMOTE, "never"),
        (primary(leader="b"), 100.5, Kind.DEMOTE, "b holds the leader key"),
        (primary(leader=None), 100.5, Kind.DEMOTE, "leader key is gone"),
        (primary(epoch=4), 100.5, Kind.DEMOTE, "epoch 4 is newer"),
        (primary(switchover_to="b"), 100.5, Kind.HANDOVER, "switchover to b"),
        (primary(switchover_to="a"), 100.5, Kind.RENEW, ""),
        # A standby that sees a newer epoch is fenced before anything else.
        (standby(epoch=4, leader="c"), 0, Kind.FENCE, "epoch 4"),
        (standby(leader="c"), 0, Kind.FOLLOW, "c is the leader"),
        (standby(leader="c", following="c"), 0, Kind.HOLD, "following c"),
        (standby(leader="b"), 0, Kind.ACQUIRE, "promotion to finish"),
        # Leader gone: b is in sync and ahead of c.
        (standby(), 10.0, Kind.ACQUIRE, "best eligible"),
        (standby(last_ack=8.5), 10.0, Kind.HOLD, "still attached and acknowledging"),
        (standby(last_ack=7.9), 10.0, Kind.ACQUIRE, ""),
        (standby(sync=frozenset({"c"})), 0, Kind.HOLD, "not in the sync set"),
        (standby(members={"b": member("b", state="Failed")}), 0, Kind.HOLD, "copy is Failed"),
        (standby(members={"b": member("b", state="Suspended")}), 0, Kind.HOLD, "copy is Suspended"),
        (standby(members={"b": member("b", state="Seeding")}), 0, Kind.HOLD, "copy is Seeding"),
        (standby(members={"b": member("b", failover="manual")}), 0, Kind.HOLD, "failover = manual"),
        (standby(members={"b": member("b", epoch=2)}, epoch=2, leader=None), 0, Kind.ACQUIRE, ""),
        (standby(members={}), 0, Kind.HOLD, "not registered"),
        (standby(members={"b": Member("b", 3, None)}), 0, Kind.HOLD, "no copy position"),
        # No eligible member may be ahead; ties go to the lower name.
        (standby(members={"b": member("b", 5400), "c": member("c", 5500)}), 0, Kind.HOLD, "c is ahead"),
        (standby(members={"b": member("b"), "c": member("c")}), 0, Kind.ACQUIRE, ""),
        (standby(me="c", members={"b": member("b"), "c": member("c")}), 0, Kind.HOLD, "b is ahead"),
        # A member ahead but not eligible does not block.
        (
            standby(members={"b": member("b", 5400), "c": member("c", 5500, state="Failed")}),
            0,
            Kind.ACQUIRE,
            "",
        ),
        (
            standby(members={"b": member("b", 5400), "c": member("c", 5500, failover="manual")}),
            0,
            Kind.ACQUIRE,
            "",
        ),
        # The lossy dial: bounded by segments and bytes behind the head; sync set not needed.
        (standby(policy=LOSSY, sync=frozenset(), members={"b": member("b", 4600, 4)}), 0, Kind.ACQUIRE, ""),
        (standby(policy=LOSSY, members={"b": member("b", 4400, 4)}), 0, Kind.HOLD, "1100 bytes behind"),
        (standby(policy=LOSSY, members={"b": member("b", 5000, 3)}), 0, Kind.HOLD, "2 segments behind"),
        (standby(policy=LOSSY, head=None), 0, Kind.HOLD, "no leader head"),
        # Bootstrap: epoch 0 has no leader history, nothing acknowledged to lose.
        (standby(epoch=0, members={"b": member("b", epoch=0)}, sync=frozenset(), head=None), 0, Kind.ACQUIRE, ""),
        # Operator keys: switchover and forced failover name their node; the others hold.
        (standby(switchover_to="b", last_ack=9.9), 10.0, Kind.ACQUIRE, "planned switchover"),
        (standby(switchover_to="c"), 0, Kind.HOLD, "switchover to c"),
        (standby(force_to="b", sync=frozenset()), 0, Kind.ACQUIRE, "loss accepted"),
        (standby(force_to="c"), 0, Kind.HOLD, "forced failover to c"),
    ],
)
def test_decide_table(view: View, now: float, kind: Kind, reason: str) -> None:
    action = decide(view, now)
    assert action.kind is kind, action
    assert reason in action.reason


def test_acquire_expects_the_current_epoch() -> None:
    assert decide(standby(epoch=7, members={"b": member("b", epoch=7)}), 0) == Action(
        Kind.ACQUIRE, "leader key gone; this node is the best eligible standby", 7
    )


def test_fake_clock_primary_demotes_before_ttl() -> None:
    """Renewals every 0.5 s keep it; when they stop it demotes at TTL - margin, before the key expires."""
    policy = Policy(ttl=3.0, margin=1.0)
    view = primary(policy=policy, last_keepalive=0.0)
    now = 0.0
    while now < 10:
        assert decide(view, now).kind is Kind.RENEW
        view = replace(view, last_keepalive=now)
        now += 0.5
    stopped = view.last_keepalive
    assert stopped is not None
    t = stopped
    while decide(view, t).kind is Kind.RENEW:
        t += 0.01
    assert stopped + policy.ttl - policy.margin <= t < stopped + policy.ttl


def test_blip_shorter_than_ack_window_no_failover() -> None:
    """The leader key vanished but ACKs keep coming: no promotion while they do, promotion after."""
    view = standby()
    for t in range(20):
        assert decide(replace(view, last_ack=t - 0.5), t).kind is Kind.HOLD
    assert decide(replace(view, last_ack=17.0), 20.0).kind is Kind.ACQUIRE


def test_only_one_candidate_when_all_see_the_same_view() -> None:
    members = {n: member(n, 5500) for n in ("b", "c", "d")}
    winners = [n for n in members if decide(standby(me=n, members=members), 0).kind is Kind.ACQUIRE]
    assert winners == ["b"]
    assert best_candidate(standby(members=members)) == "b"
    assert ineligible(standby(members=members), "x") == "not registered (no members key)"


def test_each_lossy_dial_has_its_own_limits_unless_the_policy_sets_them() -> None:
    """good allows one segment behind the head, best six (Exchange's Good/BestAvailability); an
    explicit limit wins; lossless measures nothing (the sync set decides)."""
    assert dial_limits(Policy(dial=Dial.GOOD)) == (1, 16 * 1024 * 1024)
    assert dial_limits(Policy(dial=Dial.BEST)) == (6, 96 * 1024 * 1024)
    assert dial_limits(Policy(dial=Dial.BEST, max_segments_behind=2)) == (2, 96 * 1024 * 1024)
    head = Mark("E", 0, 10, 10_000)
    for dial, behind, why in ((Dial.GOOD, 1, None), (Dial.GOOD, 2, "2 segments behind"), (Dial.BEST, 6, None)):
        view = standby(
            policy=Policy(dial=dial), head=head, sync=frozenset(), members={"b": member("b", 9000, 10 - behind)}
        )
        got = ineligible(view, "b")
        assert (got is None) if why is None else (got is not None and why in got), (dial, behind, got)
    view = standby(policy=Policy(dial=Dial.BEST), head=head, sync=frozenset(), members={"b": member("b", 9000, 3)})
    assert "7 segments behind the head (dial best allows 6)" in str(ineligible(view, "b"))
