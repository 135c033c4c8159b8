"""What every fault test shares: the shipper's acknowledged positions, checks against the receiver's
disk, and the figures each test records for docs/reliability.md.

The shipper, run at ``--log-level DEBUG``, logs one ``acked stream=.. seg=.. off=.. sealed=..`` line per
acknowledgement. ``check_acked_on_disk`` holds the receiver's disk to the highest of them: every
segment before it sealed and byte-identical to the source, and the acknowledged segment holding at
least the acknowledged bytes, verified by its chunk records exactly as a restarted receiver would.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from protocol.digest import chunk_digest
from receiver import chunk_index
from tests.helpers.copies import digest_file
from tests.helpers.source import ROOT, sealed_in_source
from tests.helpers.waiting import wait_until

HEAVY = os.environ.get("LOGSHIP_HEAVY") == "1"
"""The long variants of the fault tests (LOGSHIP_HEAVY=1): several times every count."""


_ACKED = re.compile(r"acked stream=(\S+) target=(\S+) seg=(\S+) off=(\d+) sealed=([01])\n")


def report_dir() -> Path:
    """Where fault tests write their figures: $LOGSHIP_FAULTS_REPORT or tests/faults/.last-run."""
    return Path(os.environ.get("LOGSHIP_FAULTS_REPORT") or ROOT / "tests" / "faults" / ".last-run")


@dataclass
class FaultFigures:
    """One row of the reliability table."""

    fault: str
    """What was done to the system."""
    injected: int = 0
    """How many times it was done in this run."""
    bytes_verified: int = 0
    """Bytes of the converged copy compared with the source (plus acknowledged bytes checked)."""
    corrupt_installed: int = 0
    """Segments in log/ that differ from the source (must be 0)."""
    acked_lost: int = 0
    """Acknowledged bytes missing from the receiver's disk after a fault (must be 0)."""
    seconds: float = 0.0
    """Wall time of the test."""
    notes: dict[str, int | str] = field(default_factory=dict)
    """Other counters (resends, reconnects, ...)."""


def record(test: str, rows: list[FaultFigures]) -> None:
    """Write this test's rows to the report directory (one JSON file per test)."""
    out = report_dir()
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, object] = {
        "test": test,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "heavy": HEAVY,
    }
    doc["rows"] = [asdict(r) for r in rows]
    tmp = out / f".{test}.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    tmp.replace(out / f"{test}.json")


@dataclass(frozen=True, order=True)
class Acked:
    segment: str
    offset: int
    sealed: bool


def highest_acked(log_text: str) -> Acked | None:
    """The highest position the shipper logged as acknowledged, or None."""
    best: Acked | None = None
    for m in _ACKED.finditer(log_text):
        seg = "" if m.group(3) == "-" else m.group(3)
        a = Acked(seg, int(m.group(4)), m.group(5) == "1")
        if best is None or a > best:
            best = a
    return best


def acked_lines(log_text: str) -> list[Acked]:
    """Every position the shipper logged as acknowledged, in log order."""
    return [
        Acked("" if m.group(3) == "-" else m.group(3), int(m.group(4)), m.group(5) == "1")
        for m in _ACKED.finditer(log_text)
    ]


def recovered_partial(copy_root: Path, segment: str) -> bytes:
    """The bytes of ``segment``'s partial that recovery keeps (read-only): the partial as on disk with
    the inline chunks of its .idx written back (receiver/chunk_index.py), up to the first record that
    does not verify."""
    inc = copy_root / "incoming"
    try:
        records = (inc / f"{segment}.idx").read_bytes()
        data = bytearray((inc / f"{segment}.partial").read_bytes())
    except FileNotFoundError:
        return b""
    end = 0
    for rec in chunk_index.parse(records):
        if rec.inline >= 0:  # bytes made durable in the .idx only; recovery writes them back
            chunk = records[rec.inline : rec.inline + rec.length]
        else:
            chunk = bytes(data[rec.offset : rec.offset + rec.length])
        if rec.offset != end or len(chunk) != rec.length or chunk_digest(segment, rec.offset, chunk) != rec.digest:
            break
        data[rec.offset : rec.offset + rec.length] = chunk
        end += rec.length
    return bytes(data[:end])


def verified_partial_size(copy_root: Path, segment: str) -> int:
    """Bytes of ``segment``'s partial that its chunk records verify (read-only; what recovery keeps)."""
    return len(recovered_partial(copy_root, segment))


class DiskChecker:
    """Checks a receiver's copy of one stream against the source and the shipper's acknowledgements."""

    def __init__(self, source: Path, copy_root: Path) -> None:
        self.source = source
        self.copy_root = copy_root
        self.verified: dict[str, int] = {}
        self.acked_checks = 0
        self.acked_bytes_checked = 0

    def check_log(self) -> None:
        """Every segment in log/ is byte-identical to the source; raise AssertionError otherwise."""
        log_dir = self.copy_root / "log"
        if not log_dir.exists():
            return
        for name in sorted(os.listdir(log_dir)):
            if name in self.verified or name.startswith("."):
                continue
            dst, src = log_dir / name, self.source / name
            size = dst.stat().st_size
            assert src.exists() and size == src.stat().st_size, f"corrupt segment installed: {name} (size)"
            assert digest_file(dst) == digest_file(src), f"corrupt segment installed: {name}"
            self.verified[name] = size

    def lost_bytes(self, acked: Acked) -> int:
        """Acknowledged bytes that the receiver's disk does not hold (0 when all is well)."""
        self.check_log()
        lost = 0
        names = sorted(n for n in os.listdir(self.source) if not n.startswith("."))
        for name in names:
            if name >= acked.segment:
                break
            if name not in self.verified:
                lost += (self.source / name).stat().st_size
        if not acked.segment:
            return lost
        if acked.segment in self.verified:
            return lost + max(0, acked.offset - self.verified[acked.segment])
        if acked.sealed:
            return lost + acked.offset
        kept = recovered_partial(self.copy_root, acked.segment)
        have = len(kept)
        if have >= acked.offset:
            copied = kept[: acked.offset]
            with open(self.source / acked.segment, "rb") as f:
                original = f.read(acked.offset)
            if copied != original:
                return lost + acked.offset
            return lost
        return lost + acked.offset - have

    def wait_converged(self, timeout: float, what: str) -> None:
        """Wait until log/ holds every sealed segment of the source, each checked on the way."""
        wait_until(
            lambda: (self.check_log() or True) and sorted(self.verified) == sealed_in_source(self.source),
            timeout,
            what=what,
        )

    def check_acked(self, shipper_log: str, tries: int = 5) -> int:
        """Assert the highest acknowledged position is on disk; return the bytes it covers.

        Retries a few times, since a live receiver may be renaming a partial into log/ meanwhile.
        """
        acked = highest_acked(shipper_log)
        if acked is None:
            return 0
        lost = 0
        for _ in range(tries):
            try:
                lost = self.lost_bytes(acked)
            except FileNotFoundError:
                lost = -1
            if lost == 0:
                break
            time.sleep(0.1)
        assert lost == 0, f"acknowledged bytes lost: {lost} bytes up to {acked}"
        self.acked_checks += 1
        covered = sum(v for k, v in self.verified.items() if k < acked.segment) + acked.offset
        self.acked_bytes_checked += covered
        return covered
