"""The etcd keys of one stream, all under ``/logship/<cluster>/<stream>/``."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.names import check_stream_name


@dataclass(frozen=True, slots=True)
class StreamKeys:
    cluster: str
    stream: str

    def __post_init__(self) -> None:
        check_stream_name(self.cluster)
        check_stream_name(self.stream)

    @property
    def prefix(self) -> str:
        return f"/logship/{self.cluster}/{self.stream}/"

    @property
    def leader(self) -> str:
        """The leader's node name, bound to its lease."""
        return self.prefix + "leader"

    @property
    def epoch(self) -> str:
        """The fencing token; only ever raised inside a transaction."""
        return self.prefix + "epoch"

    def history(self, epoch: int) -> str:
        """The fork of ``epoch`` (JSON: segment, offset)."""
        return f"{self.prefix}history/{epoch}"

    def member(self, node: str) -> str:
        """A node's role, copy position and state, bound to its lease."""
        check_stream_name(node)
        return f"{self.prefix}members/{node}"

    @property
    def members(self) -> str:
        return self.prefix + "members/"

    @property
    def status(self) -> str:
        """The leader's log head."""
        return self.prefix + "status"

    @property
    def sync(self) -> str:
        """The nodes that hold everything acknowledged."""
        return self.prefix + "sync"

    @property
    def switchover(self) -> str:
        """Operator key: a planned switchover's target node."""
        return self.prefix + "switchover"

    @property
    def failover(self) -> str:
        """Operator key: a forced failover's target node (loss accepted)."""
        return self.prefix + "failover"
