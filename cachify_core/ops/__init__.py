"""Looking at and stepping into what cachify stores on Redis: the layer under the ``cachify``
command line (and a dashboard), with no UI in it.

* :mod:`.store`: :func:`connect` / :class:`Store` (the masters to SCAN, server time, key names);
* :mod:`.reads`: :func:`holds`, :func:`pools`, :func:`limits`, :func:`cache_stats` (:func:`cache_namespaces` lists them): plain
  frozen dataclasses, read-only (SCAN, never KEYS; every master of a Redis Cluster);
* :mod:`.writes`: :func:`release`, :func:`plan_release` / :func:`apply_release`,
  :func:`cache_clear`, each through the backend primitive the library uses.

Needs redis-py (the ``redis`` extra), imported when a store is connected. Sync only.
"""

from .reads import (
    CacheStats,
    Hold,
    Limit,
    Pool,
    Room,
    Slot,
    cache_namespace,
    cache_namespaces,
    cache_stats,
    holds,
    limits,
    pools,
)
from .store import Node, Store, connect
from .writes import (
    RELEASE_KINDS,
    Cleared,
    Release,
    apply_release,
    cache_clear,
    parse_key,
    plan_release,
    release,
)

__all__ = [
    "RELEASE_KINDS",
    "CacheStats",
    "Cleared",
    "Hold",
    "Limit",
    "Node",
    "Pool",
    "Release",
    "Room",
    "Slot",
    "Store",
    "apply_release",
    "cache_clear",
    "cache_namespace",
    "cache_namespaces",
    "cache_stats",
    "connect",
    "holds",
    "limits",
    "parse_key",
    "plan_release",
    "pools",
    "release",
]
