"""The store an operator looks at: a connection, its masters, SCAN, server time, key names.

Reading never goes through ``KEYS``: :meth:`Store.scan` runs ``SCAN`` on every master (one
on a single server, each primary of a Redis Cluster), so a read costs the server what a
``redis-cli --scan`` does. Everything here is read-only; writes go through the backend's
primitives (:mod:`cachify_core.ops.writes`).

Key names (docs/OPERATIONS.md has the full layout): cachify wraps a lock's, hold's or pool's
key in one hash tag, ``{<prefix><name>-<kind>}``, and adds companions after it
(``{...}:waiting``, ``{...-pool}:room``, ...). :func:`split_key` reads a stored key back into
its tag and companion suffix; :func:`tag_key` builds the stored name from a full key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..backends.redis import DEFAULT_SOCKET_TIMEOUT_S, RedisBackend, _require_redis, _tag

__all__ = [
    "SCAN_COUNT",
    "Node",
    "Store",
    "connect",
    "glob_escape",
    "split_key",
    "tag_key",
    "untag",
]

#: Keys one SCAN call asks a server to look at (a hint: the server may return more or fewer).
SCAN_COUNT = 1000

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis MATCH pattern (``*``, ``?``, ``[``, ``]``, ``\\`` escaped)."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def tag_key(key: str) -> str:
    """The stored name of full key ``key`` (``"PYC-x-lock"`` → ``"{PYC-x-lock}"``), as the backend builds it."""
    return _tag(key)


def untag(tag: str) -> str:
    """The full key inside a stored tag: ``"{PYC-x-lock}"`` → ``"PYC-x-lock"`` (inverse of :func:`tag_key`)."""
    inner = tag[1:-1]
    return inner[1:] if inner[:1] == "~" else inner


def split_key(stored: str) -> tuple[str, str] | None:
    """``(full key, companion suffix)`` of a stored key cachify wrote under a whole-key tag:
    ``"{PYC-x-pool}:room"`` → ``("PYC-x-pool", ":room")``, ``"{PYC-x-lock}"`` → ``("PYC-x-lock", "")``.
    ``None`` for a name that does not start with a tag.

    The tag ends at the last ``}`` before the suffix: a cache namespace's template may hold
    braces of its own (``{PYC-report-{day}-cached}:gen``), a suffix never does except in a
    cache entry's key, which is read by :func:`split_cache_key` instead."""
    if not stored.startswith("{"):
        return None
    if stored.endswith("}"):
        return untag(stored), ""
    end = stored.rfind("}:")
    if end < 0:
        return None
    return untag(stored[: end + 1]), stored[end + 1 :]


@dataclass(frozen=True)
class Node:
    """One master: its address and a plain client on it (for SCAN, pipelines and TIME)."""

    name: str
    client: Any

    def time_ms(self) -> int:
        """The server's clock now, Unix ms (what cachify's scripts compare leases against)."""
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def time_us(self) -> int:
        """The server's clock now, Unix µs (the rate limits' clock)."""
        seconds, micros = self.client.time()
        return int(seconds) * 1_000_000 + int(micros)

    def scan(self, match: str, count: int = SCAN_COUNT) -> Iterator[str]:
        """Every key matching ``match`` on this node (SCAN: a key may repeat; callers dedupe)."""
        for raw in self.client.scan_iter(match=match, count=count):
            yield raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else str(raw)


class Store:
    """A connection for operators: the masters to scan and a backend for the primitives.

    ``client`` is a ``redis.Redis`` or ``redis.cluster.RedisCluster`` built binary-safe
    (``decode_responses=False``); ``prefix`` is the instance prefix the keys were written under.
    """

    def __init__(self, client: Any, prefix: str = "PYC-", *, name: str = "") -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        self.client = client
        self.prefix = prefix
        self.cluster = not hasattr(client, "connection_pool")
        self.backend = RedisBackend(client)
        self.name = name or self.backend.name

    def nodes(self) -> list[Node]:
        """The masters that hold keys: the server itself, or every primary of the cluster."""
        if not self.cluster:
            return [Node(self.name, self.client)]
        primaries = sorted(self.client.get_primaries(), key=lambda n: (n.host, n.port))
        return [Node(f"{n.host}:{n.port}", self.client.get_redis_connection(n)) for n in primaries]

    def node_of(self, stored_key: str) -> Node:
        """The master holding ``stored_key`` (its hash slot's primary on a cluster)."""
        if not self.cluster:
            return Node(self.name, self.client)
        node = self.client.get_node_from_key(stored_key)
        return Node(f"{node.host}:{node.port}", self.client.get_redis_connection(node))

    def prefix_match(self, name_glob: str = "*") -> str:
        """A MATCH pattern for cachify's tagged keys of this prefix whose name starts with
        ``name_glob`` (a Redis glob; ``"*"``: every key of the prefix)."""
        escaped = glob_escape(self.prefix)
        if self.prefix[:1] in ("}", "~"):
            escaped = "~" + escaped
        return "{" + escaped + name_glob

    def close(self) -> None:
        self.client.close()


def connect(url: str, prefix: str = "PYC-", cluster: bool | None = None) -> Store:
    """A :class:`Store` on the Redis at ``url``. ``cluster``: ``True`` for a Redis Cluster,
    ``False`` for a single server, ``None`` to ask the server (``INFO cluster``)."""
    _require_redis()
    import redis
    from redis.cluster import RedisCluster

    options: dict[str, Any] = {
        "socket_timeout": DEFAULT_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": DEFAULT_SOCKET_TIMEOUT_S,
    }
    if cluster is None:
        probe = redis.Redis.from_url(url, **options)
        try:
            info = probe.info("cluster")
        finally:
            probe.close()
        cluster = int(info.get("cluster_enabled", 0)) == 1
    client = RedisCluster.from_url(url, **options) if cluster else redis.Redis.from_url(url, **options)
    return Store(client, prefix)
