"""The store as a user sees it with ``redis-cli``: the keys under the instance's prefix, on a
single Redis or on every primary of a Redis Cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cachify_core import Cachify, rooms

#: Key templates of the suite start with what they are for, so a store key tells its kind:
#: ``cache-...`` for ``cache_key``, anything else (``once-``, ``pool-``) for holds and slots.
CACHE_MARK = "cache-"
#: What a drained waiting room keeps for a while (each with a TTL).
ROOM_MEMORY = (":started", ":claims")


@dataclass
class Store:
    name: str  #: "redis", "cluster", "memory", "dead" or "lossy"
    cachify: Cachify
    nodes: list[tuple[str, int]] = field(default_factory=list)  #: primaries (empty: memory)
    #: "lossy": the proxy between the instance and the server, which can lose a reply
    proxy: Any = None

    @property
    def prefix(self) -> str:
        return self.cachify.prefix

    @contextlib.contextmanager
    def _clients(self) -> Iterator[list[Any]]:
        import redis

        clients = [redis.Redis(host=h, port=p, db=self._db, socket_timeout=5) for h, p in self.nodes]
        try:
            yield clients
        finally:
            for client in clients:
                client.close()

    _db: int = 0

    def keys(self) -> list[str]:
        """Every key of this instance (its prefix), on every primary."""
        assert self.nodes, f"the {self.name} store has no keys to scan"
        found: list[str] = []
        with self._clients() as clients:
            for client in clients:
                found += [k.decode() for k in client.scan_iter(match=f"*{self.prefix}*", count=1000)]
        return sorted(found)

    def leftovers(self) -> list[str]:
        """Keys that are not cache entries: holds, slots and whatever else outlived the tasks.

        A drained waiting room remembers its claimed entries (``:started``, ``:claims``) for a
        while, so a late duplicate publish is recognised: those count only if they never expire.
        On a cluster a drained room leaves the registry on the next sweep (a worker's, within a
        second): one is made first."""
        assert not rooms.sweep(self.cachify), "the waiting rooms still hand tasks over"
        keys = [k for k in self.keys() if self.prefix + CACHE_MARK not in k]
        return [k for k in keys if not (k.endswith(ROOM_MEMORY) and self._expires(k))]

    def _expires(self, key: str) -> bool:
        import redis

        ttls = []
        with self._clients() as clients:
            for client in clients:  # on a cluster only the key's node answers
                with contextlib.suppress(redis.ResponseError):
                    ttls.append(int(client.pttl(key)))
        return any(ttl > 0 for ttl in ttls)

    def delete_matching(self, text: str) -> list[str]:
        """Delete every key of this instance whose name contains ``prefix + text`` (a hold
        forced away, as an operator or an expiry would)."""
        victims = [k for k in self.keys() if self.prefix + text in k]
        with self._clients() as clients:
            for client in clients:
                for key in victims:
                    with contextlib.suppress(Exception):  # on a cluster only its node accepts it
                        client.delete(key)
        assert not [k for k in self.keys() if self.prefix + text in k]
        return victims
