"""A thin asyncio etcd v3 client on etcd's JSON gateway (``/v3/...``) over aiohttp.

Only the verbs the HA agent needs: range, put, delete, txn (compare on mod_revision / version /
value), lease grant / keep-alive / revoke, and watch with resume from a revision. Patroni's
``dcs/etcd3.py`` talks to etcd the same way. Several endpoints: a request that fails to connect or
times out goes to the next endpoint; the one that answered is tried first next time.

Every answer comes from the network and is untrusted: it is checked for shape before use, and a
malformed one raises ``EtcdError``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

MAX_ANSWER = 16 * 1024 * 1024
"""Largest JSON answer accepted (a range over a stream's keys is a few KiB)."""


class EtcdError(Exception):
    """etcd answered with an error, or no endpoint answered."""


class EtcdUnavailable(EtcdError):
    """No endpoint could be reached within the timeout."""


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise EtcdError("malformed answer: expected base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as e:
        raise EtcdError("malformed answer: bad base64") from e


def _int(value: object, default: int = 0) -> int:
    # The gateway renders int64 as JSON strings and leaves out zero values.
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise EtcdError("malformed answer: expected an integer")
    try:
        return int(value)
    except ValueError as e:
        raise EtcdError("malformed answer: expected an integer") from e


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int
    version: int
    lease: int

    @classmethod
    def parse(cls, kv: object) -> KeyValue:
        if not isinstance(kv, dict):
            raise EtcdError("malformed answer: kv is not an object")
        return cls(
            key=_unb64(kv.get("key", "")),
            value=_unb64(kv.get("value", "")),
            mod_revision=_int(kv.get("mod_revision")),
            create_revision=_int(kv.get("create_revision")),
            version=_int(kv.get("version")),
            lease=_int(kv.get("lease")),
        )


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: str
    """``PUT`` or ``DELETE``."""
    kv: KeyValue


@dataclass(frozen=True, slots=True)
class Compare:
    """One txn condition: ``target`` is ``MOD``, ``VERSION``, ``CREATE`` or ``VALUE``."""

    key: str | bytes
    target: str
    result: str
    """``EQUAL``, ``NOT_EQUAL``, ``GREATER`` or ``LESS``."""
    value: int | bytes = 0

    def to_json(self) -> dict[str, Any]:
        field = {"MOD": "mod_revision", "VERSION": "version", "CREATE": "create_revision", "VALUE": "value"}
        d: dict[str, Any] = {"key": _b64(self.key), "target": self.target, "result": self.result}
        v = self.value
        d[field[self.target]] = _b64(v) if isinstance(v, bytes) else str(v)
        return d


def put_op(key: str | bytes, value: str | bytes, lease: int = 0) -> dict[str, Any]:
    req: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        req["lease"] = str(lease)
    return {"request_put": req}


def delete_op(key: str | bytes) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


def range_op(key: str | bytes, prefix: bool = False) -> dict[str, Any]:
    req: dict[str, Any] = {"key": _b64(key)}
    if prefix:
        k = key.encode() if isinstance(key, str) else key
        req["range_end"] = _b64(prefix_end(k))
    return {"request_range": req}


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[dict[str, Any]]


class EtcdClient:
    """etcd v3 over its JSON gateway; ``endpoints`` are ``http(s)://host:port`` URLs."""

    def __init__(
        self,
        endpoints: Sequence[str],
        timeout: float = 2.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._preferred = 0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._preferred + i) % n for i in range(n)]

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>`` on the first endpoint that answers; return the JSON object.

        Raises EtcdUnavailable when no endpoint answers, EtcdError when etcd reports an error.
        """
        last = "no endpoint tried"
        for i in self._order():
            url = f"{self.endpoints[i]}/v3/{path}"
            try:
                async with asyncio.timeout(self.timeout):
                    async with self._http().post(url, json=body, ssl=self._ssl) as resp:
                        raw = await resp.content.read(MAX_ANSWER + 1)
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                last = f"{self.endpoints[i]}: {type(e).__name__} {e}".strip()
                continue
            doc = self._decode(raw)
            if "error" in doc or ("code" in doc and "message" in doc):
                msg = str(doc.get("message") or doc.get("error"))
                # A member cut off from the raft majority answers but cannot serve; try the others.
                if "no leader" in msg or "timed out" in msg or "unavailable" in msg.lower():
                    last = f"{self.endpoints[i]}: {msg}"
                    continue
                raise EtcdError(f"etcd {path}: {msg}")
            self._preferred = i
            return doc
        raise EtcdUnavailable(f"no etcd endpoint answered {path}: {last}")

    @staticmethod
    def _decode(raw: bytes) -> dict[str, Any]:
        if len(raw) > MAX_ANSWER:
            raise EtcdError("etcd answer too large")
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise EtcdError("malformed answer: not JSON") from e
        if not isinstance(doc, dict):
            raise EtcdError("malformed answer: not an object")
        return doc

    @staticmethod
    def revision_of(doc: dict[str, Any]) -> int:
        header = doc.get("header", {})
        return _int(header.get("revision")) if isinstance(header, dict) else 0

    async def get(self, key: str | bytes) -> KeyValue | None:
        kvs, _ = await self.range(key)
        return kvs[0] if kvs else None

    async def range(self, key: str | bytes, prefix: bool = False) -> tuple[list[KeyValue], int]:
        """The keys (one, or all under ``prefix``) and the store revision they were read at."""
        doc = await self.call("kv/range", range_op(key, prefix)["request_range"])
        kvs = doc.get("kvs", [])
        if not isinstance(kvs, list):
            raise EtcdError("malformed answer: kvs is not a list")
        return [KeyValue.parse(kv) for kv in kvs], self.revision_of(doc)

    async def put(self, key: str | bytes, value: str | bytes, lease: int = 0) -> int:
        doc = await self.call("kv/put", put_op(key, value, lease)["request_put"])
        return self.revision_of(doc)

    async def delete(self, key: str | bytes, prefix: bool = False) -> int:
        """Delete the key (or every key under the prefix); return how many were deleted."""
        req = range_op(key, prefix)["request_range"]
        doc = await self.call("kv/deleterange", req)
        return _int(doc.get("deleted"))

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[dict[str, Any]],
        failure: Sequence[dict[str, Any]] = (),
    ) -> TxnResult:
        body = {"compare": [c.to_json() for c in compare], "success": list(success), "failure": list(failure)}
        doc = await self.call("kv/txn", body)
        responses = doc.get("responses", [])
        if not isinstance(responses, list):
            raise EtcdError("malformed answer: responses is not a list")
        return TxnResult(bool(doc.get("succeeded", False)), self.revision_of(doc), responses)

    async def lease_grant(self, ttl: int) -> int:
        doc = await self.call("lease/grant", {"TTL": str(ttl)})
        lease = _int(doc.get("ID"))
        if lease <= 0:
            raise EtcdError("etcd granted no lease")
        return lease

    async def lease_keepalive(self, lease: int) -> int:
        """Renew the lease once; return its remaining TTL (0: it has expired and is gone)."""
        doc = await self.call("lease/keepalive", {"ID": str(lease)})
        result = doc.get("result", doc)
        if not isinstance(result, dict):
            raise EtcdError("malformed answer: keepalive result")
        return _int(result.get("TTL"))

    async def lease_revoke(self, lease: int) -> None:
        try:
            await self.call("lease/revoke", {"ID": str(lease)})
        except EtcdError as e:
            if "not found" not in str(e):
                raise

    async def watch(
        self, key: str | bytes, start_revision: int = 0, prefix: bool = False, range_end: bytes | None = None
    ) -> AsyncIterator[tuple[int, list[WatchEvent]]]:
        """Yield (revision, events) from ``start_revision`` on, for as long as one endpoint streams.

        ``range_end`` watches every key in [key, range_end) instead (etcd's half-open range).

        The caller resumes after a break with ``start_revision = last revision + 1``: nothing is
        missed while the history is not compacted. Raises EtcdUnavailable when no endpoint streams.
        """
        create: dict[str, Any] = range_op(key, prefix)["request_range"]
        if range_end is not None:
            create["range_end"] = _b64(range_end)
        if start_revision:
            create["start_revision"] = str(start_revision)
        last = "no endpoint tried"
        for i in self._order():
            url = f"{self.endpoints[i]}/v3/watch"
            try:
                async with asyncio.timeout(self.timeout):
                    resp = await self._http().post(
                        url, json={"create_request": create}, ssl=self._ssl, timeout=aiohttp.ClientTimeout()
                    )
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                last = f"{self.endpoints[i]}: {type(e).__name__}"
                continue
            self._preferred = i
            async with resp:
                async for line in resp.content:
                    if len(line) > MAX_ANSWER:
                        raise EtcdError("etcd watch message too large")
                    if not line.strip():
                        continue
                    doc = self._decode(line)
                    if "error" in doc:
                        raise EtcdError(f"etcd watch: {doc['error']}")
                    result = doc.get("result", {})
                    if not isinstance(result, dict):
                        raise EtcdError("malformed answer: watch result")
                    if result.get("canceled"):
                        raise EtcdError(f"etcd watch canceled: {result.get('cancel_reason', '')}")
                    events = result.get("events", [])
                    if not isinstance(events, list):
                        raise EtcdError("malformed answer: watch events")
                    parsed = [
                        WatchEvent(str(e.get("type", "PUT")), KeyValue.parse(e.get("kv")))
                        for e in events
                        if isinstance(e, dict)
                    ]
                    if parsed:
                        yield self.revision_of(result), parsed
            return
        raise EtcdUnavailable(f"no etcd endpoint streams a watch: {last}")
