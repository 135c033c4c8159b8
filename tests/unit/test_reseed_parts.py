"""The pieces of a reseed on their own (issue 17): the Seeding state and its moves, moving a copy aside,
the receiver's image files across a crash, safe tar extraction, the shipper's choice of the segment that
follows an image, and "needs reseed" when a copy ends before what the source still has."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path

import pytest

from protocol.digest import segment_digest
from protocol.messages import Position
from protocol.seed import SeedOffer
from receiver.reseed import ReseedRefused, reseed_dir
from receiver.seed_files import ImageRefused, SeedFiles, unpack_tar
from receiver.state import CopyState, IllegalTransition, Role, load_state, save_state
from shipper.seed_image import SeedError, follows, label_segment
from shipper.settings import SealPolicy
from shipper.source import Open, Stuck, next_step
from shipper.tailer import SegmentInfo, Tailer
from shipper.window import Cursor

# -- state ---------------------------------------------------------------------------------------


def test_seeding_is_a_role_with_its_own_moves_and_survives_json() -> None:
    state = CopyState(epoch=4, failed="chunk digest mismatch (3 times)")
    state.begin_seed(100.0, manual_resume=True)
    assert state.role is Role.SEEDING and state.failed is None
    again = CopyState.from_json(json.loads(state.to_bytes()))
    assert again.role is Role.SEEDING and again.seeding is not None and again.seeding.manual_resume
    again.adopt_epoch(5)  # a newer primary may come while it seeds
    with pytest.raises(IllegalTransition):
        again.activate(101.0)  # nothing to activate: it has no copy yet
    again.seeded("E0B.log", 4096, 102.0)
    assert again.role is Role.STANDBY and again.replayed_position == Position("E0B.log", 4096)
    assert again.suspended and "resume" in (again.comment or "")
    assert "seeding" not in again.to_json()


def test_an_activated_copy_is_not_reseeded(tmp_path: Path) -> None:
    state = CopyState()
    state.activate(1.0)
    save_state(tmp_path / "state.json", state)
    with pytest.raises(ReseedRefused, match="activated"):
        reseed_dir(tmp_path, False, False)


# -- moving aside --------------------------------------------------------------------------------


def old_copy(root: Path) -> None:
    for d in ("log", "replica", "incoming", "quarantine"):
        (root / d).mkdir(parents=True)
    (root / "log" / "E01.log").write_bytes(b"x" * 100)
    (root / "quarantine" / "old-bad").write_bytes(b"q")
    (root / "manifest").write_bytes(b"{}\n")
    state = CopyState(epoch=7)
    save_state(root / "state.json", state)


def test_reseed_moves_the_old_copy_aside_and_keeps_the_epoch(tmp_path: Path) -> None:
    root = tmp_path / "db1"
    old_copy(root)
    report = reseed_dir(root, delete_existing=False, manual_resume=False, now=0.0)
    moved = Path(report["moved_to"])
    assert moved.parent == root / "quarantine" and moved.name.startswith("reseed-19700101T")
    assert (moved / "log" / "E01.log").read_bytes() == b"x" * 100
    assert sorted(os.listdir(root)) == ["quarantine", "state.json"]
    assert (root / "quarantine" / "old-bad").exists()  # earlier quarantine stays where it was
    state = load_state(root / "state.json")
    assert state.role is Role.SEEDING and state.epoch == 7
    # A second reseed the same second does not clobber the first one's files.
    second = reseed_dir(root, delete_existing=False, manual_resume=False, now=0.0)
    assert second["moved_to"] != str(moved) and moved.exists()


def test_reseed_delete_existing_removes_the_old_copy(tmp_path: Path) -> None:
    root = tmp_path / "db1"
    old_copy(root)
    report = reseed_dir(root, delete_existing=True, manual_resume=True)
    assert report["deleted"] and report["moved_to"] is None and report["bytes"] > 100
    assert not list((root / "quarantine").glob("reseed-*"))


# -- the receiver's image files ------------------------------------------------------------------

BODY = os.urandom(50_000)


def offer(body: bytes = BODY) -> SeedOffer:
    return SeedOffer("db1", "a" * 32, len(body), segment_digest(body), "E0C.log", "E0B.log", 10, 0)


def test_image_files_resume_at_the_recorded_durable_offset_after_a_crash(tmp_path: Path) -> None:
    files = SeedFiles(tmp_path)
    files.begin(offer(), fresh=True)
    files.write(0, [BODY[:20_000]])
    # Written after the last recorded fsync, then killed: those bytes are not believed.
    with open(files.partial, "ab") as f:
        f.write(BODY[20_000:30_000])
    files.close()
    again = SeedFiles(tmp_path)
    held = again.held()
    assert held is not None and held.durable == 20_000 and held.offer.image == "a" * 32
    assert files.partial.stat().st_size == 20_000
    again.begin(offer(), fresh=False)
    again.write(20_000, [BODY[20_000:]])
    again.verify()


def test_a_damaged_image_fails_its_digest_and_goes_to_quarantine(tmp_path: Path) -> None:
    files = SeedFiles(tmp_path)
    files.begin(offer(), fresh=True)
    files.write(0, [BODY[:-1] + bytes([BODY[-1] ^ 1])])
    with pytest.raises(ImageRefused, match="digest"):
        files.verify()
    where = files.quarantine("bad digest")
    assert (where / "reason").read_text() == "bad digest\n" and not files.dir.exists()
    assert SeedFiles(tmp_path).held() is None


def tar_of(members: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for m in members:
            body = data.get(m.name)
            if body is not None:
                m.size = len(body)
            tar.addfile(m, io.BytesIO(body) if body is not None else None)
    return out.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, link
    return m


def test_a_good_tar_unpacks_with_relative_links(tmp_path: Path) -> None:
    image = tmp_path / "image.tar"
    members = [member("./data"), member("./data/t1"), member("./cur", tarfile.SYMTYPE, "data/t1")]
    members[0].type = tarfile.DIRTYPE
    image.write_bytes(tar_of(members, {"./data/t1": b"rows"}))
    dest = tmp_path / "base"
    dest.mkdir()
    assert unpack_tar(image, dest) == 3
    assert (dest / "cur").read_bytes() == b"rows"


@pytest.mark.parametrize(
    "bad",
    [
        member("/etc/evil"),
        member("../evil"),
        member("a/../../evil"),
        member("out", tarfile.SYMTYPE, "/etc/passwd"),
        member("out", tarfile.SYMTYPE, "../../x"),
        member("hard", tarfile.LNKTYPE, "/etc/passwd"),
        member("dev", tarfile.CHRTYPE),
    ],
    ids=lambda m: f"{m.name}->{m.linkname}" if m.linkname else m.name,
)
def test_an_unsafe_tar_member_refuses_the_whole_image(tmp_path: Path, bad: tarfile.TarInfo) -> None:
    image = tmp_path / "image.tar"
    image.write_bytes(tar_of([member("ok"), bad], {"ok": b"1", bad.name: b"2"} if bad.isfile() else {"ok": b"1"}))
    dest = tmp_path / "base"
    dest.mkdir()
    with pytest.raises(ImageRefused):
        unpack_tar(image, dest)
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


def test_a_file_that_is_no_tar_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "image.tar"
    image.write_bytes(os.urandom(4096))
    (tmp_path / "base").mkdir()
    with pytest.raises(ImageRefused, match="tar"):
        unpack_tar(image, tmp_path / "base")


# -- the shipper: which segment follows the image, and "needs reseed" ----------------------------


def seg(name: str, size: int = 10) -> SegmentInfo:
    return SegmentInfo(name, size, 0.0, True)


def test_the_segment_before_first_is_where_the_copy_continues() -> None:
    segments = [seg("E05"), seg("E06", 66), seg("E07")]
    names = [s.name for s in segments]
    assert follows(names, segments, "E07") == ("E06", 66)
    assert follows(names, segments, "E05") == ("", 0)  # the source's oldest: the copy starts there
    assert follows(names, segments, "E08") == ("E07", 10)  # not written yet: it follows the newest
    assert follows(names, segments, "") == ("", 0)
    with pytest.raises(SeedError, match="older than the source's oldest"):
        follows(names, segments, "E03")
    with pytest.raises(SeedError, match="no longer holds"):
        follows(["E05", "E07"], [seg("E05"), seg("E07")], "E06")


def test_a_backup_label_names_the_first_segment(tmp_path: Path) -> None:
    label = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n"
    image = tmp_path / "base.tar"
    image.write_bytes(
        tar_of([member("PG_VERSION"), member("backup_label")], {"PG_VERSION": b"15\n", "backup_label": label})
    )
    assert label_segment(image) == "000000010000000000000002"
    image.write_bytes(tar_of([member("x")], {"x": b""}))
    assert label_segment(image) == ""


def test_a_copy_that_ends_before_the_source_floor_needs_a_reseed(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for i in range(1, 6):
        (source / f"E0{i}").write_bytes(b"x")
    tailer = Tailer(source, re.compile(r"E\d+"), SealPolicy("immediate"))
    tailer.scan()
    floors: list[str] = []
    tailer.on_floor = floors.append
    for i in (1, 2):
        (source / f"E0{i}").unlink()
    tailer.scan()
    assert tailer.floor == "E02" and floors == ["E02"]
    for at in ("", "E01"):
        step = next_step(tailer, Cursor(at, 0, True), 1024)
        assert isinstance(step, Stuck) and step.reason.startswith("needs reseed") and "E02" in step.reason
    assert next_step(tailer, Cursor("E02", 1, True), 1024) == Open("E03")  # retention removed E02 after it was shipped
