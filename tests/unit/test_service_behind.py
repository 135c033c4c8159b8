"""ShipperService.behind(): the progress log's cheap question agrees with the copy queue of the rows."""

from __future__ import annotations

from pathlib import Path

from protocol.messages import Position
from shipper.config import from_doc
from shipper.service import ShipperService

SEG1, SEG2 = "E0000000001.log", "E0000000002.log"


def test_behind_is_true_exactly_when_a_row_shows_a_copy_queue(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("x" * 64)
    secret.chmod(0o600)
    source = tmp_path / "src"
    source.mkdir()
    (source / SEG1).write_bytes(b"x" * 100)
    (source / SEG2).write_bytes(b"y" * 50)
    doc = {"name": "db", "source": str(source), "secret_file": str(secret), "target": [{"address": "h:1"}]}
    service = ShipperService(from_doc({"stream": [doc]}).streams[0], "n")
    service.tailer.scan()
    stats = service.senders[0].stats

    def queue() -> object:
        return service.rows()[0]["copy_queue_bytes"]

    assert not service.behind() and queue() is None  # nothing known of the target yet
    stats.known = True
    for acked, sealed, left in (
        (Position(SEG1, 40), False, 110),
        (Position(SEG2, 10), False, 40),
        (Position(SEG2, 50), False, 0),
    ):
        stats.acked, stats.acked_sealed = acked, sealed
        assert queue() == left and service.behind() is (left > 0), acked
