"""receiver/writers.py: a restarted or reconnecting shipper takes over, a second live one is refused;
and the shipper id in HELLO is optional on the wire both ways."""

from __future__ import annotations

from protocol.handshake import Hello, StreamClaim
from receiver.writers import Writer, take_over


def w(shipper: str, node: str = "n1") -> Writer:
    return Writer(node, shipper, "127.0.0.1:1000")


def test_no_writer_attaches() -> None:
    assert take_over(None, w("a")) is None


def test_the_same_process_reconnecting_takes_over() -> None:
    current = w("a")
    assert take_over(current, w("a")) is None


def test_a_restart_takes_over_and_the_old_process_is_then_refused() -> None:
    a = w("a")
    b = w("b")
    assert take_over(a, b) is None and b.displaced == {"a"}
    refused = take_over(b, w("a"))
    assert refused is not None
    assert "another shipper (node n1, id b, addr 127.0.0.1:1000, since " in refused


def test_displaced_is_kept_across_a_chain_of_take_overs() -> None:
    b = w("b")
    assert take_over(w("a"), b) is None
    c = w("c")
    assert take_over(b, c) is None and c.displaced == {"a", "b"}
    assert take_over(c, w("a")) is not None and take_over(c, w("b")) is not None
    # The writer's own reconnect keeps what it displaced.
    again = w("c")
    assert take_over(c, again) is None and again.displaced == {"a", "b"}


def test_old_shippers_without_an_id_always_take_over() -> None:
    b = w("b")
    assert take_over(w(""), b) is None and b.displaced == frozenset()
    assert take_over(b, w("")) is None
    old = w("")
    assert take_over(w("a"), old) is None


def test_hello_carries_the_shipper_id_only_when_set() -> None:
    claim = StreamClaim("db1", 0, b"p" * 32)
    plain = Hello(3, "n1", b"n" * 32, (claim,))
    assert "sid" not in plain.to_header()
    assert Hello.from_header(plain.to_header()).shipper == ""
    with_id = Hello(3, "n1", b"n" * 32, (claim,), shipper="123.abcd")
    assert with_id.to_header()["sid"] == "123.abcd"
    assert Hello.from_header(with_id.to_header()) == with_id
