"""One shipper process shipping one stream to one receiver through two targets (issue 13): the config
check refuses two spellings of one address; where it cannot tell (two routes), the receiver refuses the
second target at once, naming the same process, and the shipper knows it is itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from logship.config import ConfigError
from receiver.writers import Writer, same_process, take_over
from shipper.config import from_doc
from shipper.config_values import same_address
from shipper.handshake import SHIPPER_ID, sender_id
from tests.helpers.source import make_secret


def w(shipper: str, addr: str = "127.0.0.1:1000") -> Writer:
    return Writer("n1", shipper, addr)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("1.ab/1", "1.ab/2", True),
        ("1.ab/1", "1.ab/1", True),
        ("1.ab/1", "1.cd/1", False),  # a restart of pid 1: another process
        ("1.ab", "1.ab/2", False),  # an older shipper has no /N: never judged the same process
        ("", "", False),
    ],
)
def test_same_process(a: str, b: str, same: bool) -> None:
    assert same_process(a, b) is same


def test_the_second_target_of_one_process_is_refused_at_once_naming_it() -> None:
    first = w("7.ab/1", "127.0.0.1:1000")
    refused = take_over(first, w("7.ab/2", "127.0.0.1:2000"))
    assert refused is not None
    assert "another shipper (node n1, id 7.ab/1, addr 127.0.0.1:1000, since " in refused
    assert refused.endswith("is shipping this stream: the same process, through another target"), refused
    # Its own reconnect still takes over (a half-open connection), and so does a restart of the process.
    assert take_over(first, w("7.ab/1")) is None
    assert take_over(first, w("7.cd/1")) is None


def test_sender_ids_are_the_process_id_then_a_number() -> None:
    a, b = sender_id(), sender_id()
    assert a != b and a.startswith(f"{SHIPPER_ID}/") and same_process(a, b)
    assert not same_process(a, f"{SHIPPER_ID}0/1"), "a longer pid.random is another process"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (("localhost", 5000), ("127.0.0.1", 5000), True),
        (("DB-Standby", 5000), ("db-standby.", 5000), True),
        (("::1", 5000), ("[0:0::1]", 5000), True),
        (("127.0.0.1", 5000), ("127.0.0.1", 5001), False),
        (("db-a", 5000), ("db-b", 5000), False),
    ],
)
def test_same_address(a: tuple[str, int], b: tuple[str, int], same: bool) -> None:
    assert (same_address(a) == same_address(b)) is same


def test_the_config_refuses_one_receiver_twice_for_one_stream(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    secret = str(make_secret(tmp_path / "secret"))
    doc = {
        "state_dir": str(tmp_path / "state"),
        "stream": [
            {
                "name": "s",
                "source": str(tmp_path / "src"),
                "secret_file": secret,
                "target": [{"address": "localhost:5000"}, {"address": "127.0.0.1:5000"}],
            }
        ],
    }
    with pytest.raises(ConfigError, match="the same target is given twice"):
        from_doc(doc)
    doc["stream"][0]["target"][1]["address"] = "127.0.0.1:5001"  # type: ignore[index]
    assert len(from_doc(doc).streams[0].targets) == 2
