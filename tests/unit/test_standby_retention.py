"""Standby retention (receiver/retention.py): the pure decision as tables with a fake clock, the manifest's
compaction, one retainer step on a real store (and after a crash between its steps), and the settings."""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import receiver.__main__ as receiver_main
from logship.config import ConfigError
from protocol.digest import segment_digest
from protocol.history import Fork
from protocol.messages import Position
from receiver.activation import missing_after_activation
from receiver.config import settings_from_args
from receiver.manifest import Base, Installed, chain_problem, record_digest
from receiver.manifest_file import ManifestFile
from receiver.retention import StandbyRetainer, decide, hold_reason, retention_fields
from receiver.retention_config import RetentionSettings
from receiver.rewind import cut_tail, prefix_digest
from receiver.state import CopyState
from receiver.status import render_rows
from receiver.store import SegmentStore


def name(i: int) -> str:
    return f"E{i:08X}.log"


def records(n: int, size: int = 100) -> list[Installed]:
    """A chained manifest of ``n`` segments, in memory."""
    out: list[Installed] = []
    for i in range(1, n + 1):
        prev = out[-1] if out else None
        pdx = record_digest(prev) if prev else b""
        out.append(Installed(name(i), size, bytes(16), prev.name if prev else "", 1000.0 + i, pdx))
    return out


LOG = records(20)
LAG2 = RetentionSettings(truncation_lag=2.0, keep_min=5)


def at(times: dict[str, float], default: float = 0.0):  # type: ignore[no-untyped-def]
    return lambda n: times.get(n, default)


# -- the decision ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "replayed, now, settings, through, next_at",
    [
        # Nothing replayed: nothing goes, whatever the clock says.
        ("", 10_000.0, LAG2, "", None),
        # Replayed up to 10, every one replayed at t=i: at t=7, segments replayed by 5 are past the 2s lag.
        (name(10), 7.0, LAG2, name(5), 8.0),
        # Later, all but the last replayed one (it stays: a restart resumes after it).
        (name(10), 100.0, LAG2, name(9), None),
        # Replayed to the end: keep_min 5 keeps 16-20.
        (name(20), 100.0, LAG2, name(15), None),
        # keep_min bigger than the log: nothing.
        (name(20), 100.0, RetentionSettings(truncation_lag=0, keep_min=50), "", None),
        # keep_min 0 still keeps the last replayed segment.
        (name(20), 100.0, RetentionSettings(truncation_lag=0, keep_min=0), name(19), None),
        # keep = all: nothing, ever.
        (name(20), 100.0, RetentionSettings(keep="all", truncation_lag=0, keep_min=0), "", None),
        # The lag covers everything replayed: nothing yet, look again when the first is past it.
        (name(10), 2.5, RetentionSettings(truncation_lag=2.0, keep_min=0), "", 3.0),
    ],
)
def test_what_may_go(replayed: str, now: float, settings: RetentionSettings, through: str, next_at: float) -> None:
    times = {name(i): float(i) for i in range(1, 21)}
    trim = decide(LOG, replayed, now, settings, at(times))
    assert (trim.through, trim.next_at) == (through, next_at)
    n = int(through[1:9], 16) if through else 0
    assert (trim.segments, trim.bytes) == (n, 100 * n)


def test_a_held_copy_keeps_everything() -> None:
    trim = decide(LOG, name(20), 1e9, LAG2, at({}), held="Suspended")
    assert trim.through == "" and trim.replica_gone == () and trim.held == "Suspended"
    suspended = CopyState(replayed=name(3), suspended=True)
    failed = CopyState(replayed=name(3), replay_failed="inspector vetoed")
    assert hold_reason(suspended) == "Suspended" and hold_reason(failed) == "Failed"
    assert hold_reason(CopyState(failed="bad digest")) == "Failed"
    assert hold_reason(CopyState(replayed=name(3)), activating=True) == "Activated"
    assert hold_reason(CopyState(replayed=name(3))) is None


def test_a_segment_replayed_before_a_restart_counts_as_replayed_at_the_start() -> None:
    # Only the times this process saw are known; the default (the start) is never earlier than the truth.
    trim = decide(LOG, name(10), 101.0, LAG2, at({name(9): 100.5}, default=100.0))
    assert trim.through == "" and trim.next_at == 102.0
    trim = decide(LOG, name(10), 102.2, LAG2, at({name(9): 100.5}, default=100.0))
    assert trim.through == name(8) and trim.next_at == 102.5


def test_replica_follows_log_or_keeps_the_newest_n_replayed() -> None:
    replica = [name(i) for i in range(1, 21)]
    times = at({}, 0.0)
    trim = decide(LOG, name(20), 100.0, LAG2, times, replica=replica)
    assert trim.replica_floor == name(16) and trim.replica_gone == tuple(replica[:15])
    # replica_keep 8: replica/ keeps 13-20 although log/ lets 13-15 go.
    keep8 = RetentionSettings(truncation_lag=2.0, keep_min=5, replica_keep=8)
    trim = decide(LOG, name(20), 100.0, keep8, times, replica=replica)
    assert trim.through == name(15) and trim.replica_floor == name(13) and trim.replica_gone == tuple(replica[:12])
    # replica_keep 2: replica/ never loses what log/ still records (activation checks it; the bytes are shared).
    keep2 = RetentionSettings(truncation_lag=2.0, keep_min=5, replica_keep=2)
    assert decide(LOG, name(20), 100.0, keep2, times, replica=replica).replica_floor == name(16)
    # Fewer replayed segments in replica/ than replica_keep: it keeps them all.
    keep50 = RetentionSettings(truncation_lag=2.0, keep_min=5, replica_keep=50)
    assert decide(LOG, name(20), 100.0, keep50, times, replica=replica).replica_gone == ()


def test_status_fields_and_the_kept_column() -> None:
    base = Base(name(5), None, 1.0, "retention", 5, 500)
    fields = retention_fields(LOG[5:], base)
    assert fields == {
        "kept_segments": 15,
        "kept_bytes": 1500,
        "oldest_kept": name(6),
        "removed_segments": 5,
        "removed_bytes": 500,
    }
    text = render_rows([{"stream": "db1", "epoch": 0, "state": "Healthy", **fields}], 0.0)
    assert "KEPT" in text and f"15 seg, 1.5 KiB from {name(6)} (5 removed, 500 B)" in text


# -- the manifest's compaction ----------------------------------------------------------------------


def chain_file(path: Path, n: int) -> ManifestFile:
    m = ManifestFile(path)
    prev = ""
    for i in range(1, n + 1):
        m.append(name(i), 100, bytes(16), prev, 1000.0 + i)
        prev = name(i)
    return m


def test_compaction_moves_the_base_and_counts_what_went(tmp_path: Path) -> None:
    m = chain_file(tmp_path / "manifest", 10)
    whole = m.read()
    base, kept = m.compact(name(4), 2000.0) or (None, [])
    assert base == Base(name(4), record_digest(whole[3]), 2000.0, "retention", 4, 400)
    assert kept == whole[4:] and m.read() == whole[4:] and m.read_base() == base
    assert chain_problem(m.read(), base=m.read_base()) == ""
    # Appends go on after it, chained to the kept records; a second compaction adds to the counts.
    m.append(name(11), 100, bytes(16), name(10), 3000.0)
    second = m.compact(name(7), 4000.0)
    assert second is not None and (second[0].removed, second[0].removed_bytes) == (7, 700)
    assert [r.name for r in m.read()] == [name(i) for i in range(8, 12)]
    assert chain_problem(m.read(), base=m.read_base()) == ""
    # A name without a record (already gone, or never here) changes nothing.
    assert m.compact(name(3), 5000.0) is None and m.read_base() == second[0]
    m.close()


def test_an_append_during_compaction_is_not_lost(tmp_path: Path) -> None:
    m = chain_file(tmp_path / "manifest", 50)
    done = threading.Event()

    def appender() -> None:
        for i in range(51, 251):
            m.append(name(i), 100, bytes(16), name(i - 1), 1000.0 + i)
        done.set()

    t = threading.Thread(target=appender)
    t.start()
    through = 1
    while not done.is_set() and through < 40:
        m.compact(name(through), 2000.0)
        through += 1
    t.join(30)
    names = [r.name for r in m.read()]
    assert names == [name(i) for i in range(int(names[0][1:9], 16), 251)] and names[-1] == name(250)
    assert chain_problem(m.read(), base=m.read_base()) == ""
    m.close()


# -- one retainer step on a real store ---------------------------------------------------------


@dataclass
class FakeCopy:
    """The parts of a StreamCopy the retainer uses."""

    store: SegmentStore
    name: str = "db1"
    state: CopyState = field(default_factory=CopyState)
    installed: list[Installed] = field(default_factory=list)
    base: Base | None = None
    activating: bool = False


def filled(tmp_path: Path, n: int, replayed: int) -> FakeCopy:
    """A copy of ``n`` installed segments, the first ``replayed`` of them linked into replica/."""
    store = SegmentStore(tmp_path / "db1")
    store.replica.mkdir()
    prev = ""
    for i in range(1, n + 1):
        (store.log_dir / name(i)).write_bytes(b"x" * 100)
        store.manifest.append(name(i), 100, bytes(16), prev, 1000.0 + i)
        prev = name(i)
        if i <= replayed:
            os.link(store.log_dir / name(i), store.replica / name(i))
    copy = FakeCopy(store, installed=store.read_manifest())
    copy.state.replayed_up_to(name(replayed), 100, 1000.0)
    return copy


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_step_removes_from_log_replica_and_manifest(tmp_path: Path) -> None:
    copy = filled(tmp_path, 20, 18)
    clock = Clock(5000.0)
    retainer = StandbyRetainer(copy, LAG2, clock=clock)
    # Just started: what was replayed before counts as replayed now; nothing is past the 2s lag.
    trim = asyncio.run(retainer.step())
    assert trim.through == "" and trim.next_at == 5002.0 and len(os.listdir(copy.store.log_dir)) == 20
    clock.now = 5002.5
    trim = asyncio.run(retainer.step())
    # Keep 16-20 (keep_min 5); 18 is the last replayed one.
    assert trim.through == name(15)
    assert sorted(os.listdir(copy.store.log_dir)) == [name(i) for i in range(16, 21)]
    assert sorted(os.listdir(copy.store.replica)) == [name(i) for i in range(16, 19)]
    assert [r.name for r in copy.installed] == [name(i) for i in range(16, 21)]
    assert copy.base == copy.store.read_manifest_base() and copy.base is not None and copy.base.removed == 15
    assert copy.store.read_manifest() == copy.installed
    assert retainer.disk_bytes == 500
    copy.store.close_manifest()


def test_a_crash_between_compaction_and_unlink_is_mended_by_the_next_step(tmp_path: Path) -> None:
    copy = filled(tmp_path, 20, 20)
    # As if killed right after the manifest's rename: the base moved, the files are all still there.
    copy.store.manifest.compact(name(12), 2000.0)
    copy.store.close_manifest()
    restarted = FakeCopy(copy.store, state=copy.state, installed=copy.store.read_manifest())
    restarted.base = copy.store.read_manifest_base()
    retainer = StandbyRetainer(restarted, RetentionSettings(truncation_lag=3600.0, keep_min=5), clock=Clock(1e6))
    trim = asyncio.run(retainer.step())
    assert trim.through == ""  # the lag holds the rest; the leftovers outside the chain go anyway
    assert sorted(os.listdir(copy.store.log_dir)) == [name(i) for i in range(13, 21)]
    assert sorted(os.listdir(copy.store.replica)) == [name(i) for i in range(13, 21)]
    assert chain_problem(restarted.installed, base=restarted.base) == ""


def test_a_suspended_copy_keeps_everything_and_the_cleanup_command_gets_the_floor(tmp_path: Path) -> None:
    copy = filled(tmp_path, 20, 20)
    copy.state.suspend(1.0, "looking")
    retainer = StandbyRetainer(copy, RetentionSettings(truncation_lag=0, keep_min=5), clock=Clock(1e6))
    assert asyncio.run(retainer.step()).held == "Suspended"
    assert len(os.listdir(copy.store.log_dir)) == 20 and len(os.listdir(copy.store.replica)) == 20
    copy.state.resume(None)
    out = tmp_path / "cleanup.out"
    settings = RetentionSettings(truncation_lag=0, keep_min=5, replica_cleanup_command=f"echo {{oldest}} >> {out}")
    retainer = StandbyRetainer(copy, settings, clock=Clock(1e6))
    asyncio.run(retainer.step())
    asyncio.run(retainer.step())  # the floor did not move: not run again
    assert out.read_text().split() == [name(16)]
    # The command cleans replica/, not us; log/ went as usual.
    assert len(os.listdir(copy.store.replica)) == 20 and len(os.listdir(copy.store.log_dir)) == 5


# -- settings ------------------------------------------------------------------------------------


def test_settings_from_the_file_per_stream_and_flags(tmp_path: Path, secret: Path) -> None:
    conf = tmp_path / "receiver.toml"
    conf.write_text(
        f'listen = "127.0.0.1:0"\ndata_dir = "{tmp_path}/data"\nsecret_file = "{secret}"\n'
        'truncation_lag = "1h"\nkeep_min = 3\n'
        '[streams.pg]\nreplica_keep = 64\nreplica_cleanup_command = "pg_archivecleanup {replica} {oldest}"\n'
        '[streams.audit]\nkeep = "all"\n[streams.pg2]\nreplica_keep = "consumer"\n'
    )
    args = receiver_main.build_parser().parse_args(["--config", str(conf), "--truncation-lag", "2s"])
    settings = settings_from_args(args)
    assert settings.retention_for("other") == RetentionSettings(truncation_lag=2.0, keep_min=3)
    pg = settings.retention_for("pg")
    assert (pg.truncation_lag, pg.keep_min, pg.replica_keep) == (2.0, 3, 64)
    assert pg.replica_cleanup_command == "pg_archivecleanup {replica} {oldest}"
    assert settings.retention_for("audit").keep == "all"
    assert settings.retention_for("pg2").replica_keep == "consumer"
    conf.write_text(conf.read_text() + '[streams.bad]\nkeep = "some"\n')
    with pytest.raises(ConfigError, match=r"streams\.bad: keep must be one of replayed, all"):
        settings_from_args(receiver_main.build_parser().parse_args(["--config", str(conf)]))
    conf.write_text(conf.read_text().replace('keep = "some"', 'truncation_lag = "soon"'))
    with pytest.raises(ConfigError, match=r"streams\.bad: truncation_lag"):
        settings_from_args(receiver_main.build_parser().parse_args(["--config", str(conf)]))


def test_a_trimmed_copy_can_be_rewound_to_its_last_replayed_segment(tmp_path: Path) -> None:
    copy = filled(tmp_path, 20, 12)
    asyncio.run(StandbyRetainer(copy, RetentionSettings(truncation_lag=0, keep_min=0), clock=Clock(1e6)).step())
    assert copy.installed[0].name == name(12) and copy.base is not None
    # A new primary forked at the end of 12, the last replayed segment: it is still here to check.
    fork = Fork(1, Position(name(12), 100), segment_digest(b"x" * 100))
    assert prefix_digest(copy.store, fork.position) == fork.digest  # type: ignore[arg-type]
    cut, _ = cut_tail(copy.store, fork, "test")
    assert cut == 8 * 100
    assert [r.name for r in copy.store.read_manifest()] == [name(12)]
    assert copy.store.read_manifest_base() == copy.base
    assert chain_problem(copy.store.read_manifest(), base=copy.store.read_manifest_base()) == ""
    copy.store.close_manifest()


def test_a_reseed_base_is_trimmed_after_like_any_other(tmp_path: Path) -> None:
    # A reseeded copy: its chain starts at the image's segment, with no record digest to check.
    store = SegmentStore(tmp_path / "db1")
    store.manifest.rebase(Base(name(100), None, 1.0, "reseed"), [])
    prev = name(100)
    for i in range(101, 111):
        (store.log_dir / name(i)).write_bytes(b"y" * 100)
        store.manifest.append(name(i), 100, bytes(16), prev, 1000.0 + i)
        prev = name(i)
    copy = FakeCopy(store, installed=store.read_manifest(), base=store.read_manifest_base())
    copy.state.replayed_up_to(name(100), 0, 1.0)
    retainer = StandbyRetainer(copy, RetentionSettings(truncation_lag=0, keep_min=3), clock=Clock(1e6))
    # Replayed only up to the image: nothing of the log goes, and nothing before the base is looked for.
    assert asyncio.run(retainer.step()).through == "" and len(os.listdir(store.log_dir)) == 10
    copy.state.replayed_up_to(name(110), 100, 2.0)
    assert asyncio.run(retainer.step()).through == name(107)
    assert copy.base is not None and (copy.base.why, copy.base.removed) == ("retention", 7)
    assert sorted(os.listdir(store.log_dir)) == [name(i) for i in range(108, 111)]
    assert chain_problem(store.read_manifest(), base=store.read_manifest_base()) == ""
    store.close_manifest()


def test_a_replica_its_consumer_prunes_is_left_to_it_and_activation_accepts_the_gap() -> None:
    replica = [name(i) for i in range(1, 21)]
    consumer = RetentionSettings(truncation_lag=0, keep_min=5, replica_keep="consumer")
    trim = decide(LOG, name(20), 100.0, consumer, at({}), replica=replica)
    assert trim.through == name(15) and trim.replica_floor == "" and trim.replica_gone == ()
    # The database removed 1-17 (pg_archivecleanup at its restartpoint); log/ still records 16-20.
    left = {name(i) for i in range(18, 21)}
    assert missing_after_activation(LOG[15:], name(20), left, None, False, None) == [
        f"{name(16)}: replayed but not in replica/",
        f"{name(17)}: replayed but not in replica/",
    ]
    assert missing_after_activation(LOG[15:], name(20), left, None, False, None, pruned_before=name(18)) == []
    retainer = StandbyRetainer(FakeCopy(SegmentStore.__new__(SegmentStore)), consumer)
    assert retainer.pruned_before(left | {".x.tmp", f"{name(21)}.partial"}) == name(18)
    assert StandbyRetainer(FakeCopy(SegmentStore.__new__(SegmentStore)), LAG2).pruned_before(left) == ""
