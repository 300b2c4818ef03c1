"""Fixtures: the backend parameter table every behavioural test runs through.

``backend`` is one of ``memory`` and ``redis``; ``cachify`` is a fresh, isolated ``Cachify``
instance on it (its own key prefix, the Redis database flushed around each test), also
installed as the global instance so the top-level decorators use it.

Redis Cluster is opt-in: ``@pytest.mark.parametrize("backend", WITH_CLUSTER)`` adds a
``cluster`` row to a test using ``cachify``/``make_cachify``, and ``cluster_cachify`` is an
instance on the cluster built from a sync client, or from a sync and an asyncio client.

The custom-client backend (a user's object offering only ``get / set(ex, nx) / delete``) is
opt-in too: a module whose tests hold on it overrides ``backend`` with ``WITH_CLIENT``, and a
test that needs more than that backend promises (wake-ups by notification, sub-second TTLs)
narrows itself with ``parametrize("backend", ALL_BACKENDS)``. Its store is the test Redis,
reached through :class:`KeyValueClient`, so the row exercises a real server.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

import cachify_core
from cachify_core import Cachify, init_cachify

from .servers import (
    IN_CI,
    PrivateCluster,
    PrivateServer,
    parse_cluster_nodes,
    require_server_binary,
    unavailable,
)
from .support import as_global

if TYPE_CHECKING:
    import redis

#: Every behavioural test runs once per backend in this table.
ALL_BACKENDS = ["memory", "redis"]
#: Opt-in rows on Redis Cluster (``parametrize("backend", WITH_CLUSTER)``).
CLUSTER_BACKENDS = ["cluster"]
WITH_CLUSTER = [*ALL_BACKENDS, *CLUSTER_BACKENDS]
#: Opt-in row on a custom client (py-cachify's ``SyncClient`` contract) over the test Redis.
CLIENT_BACKENDS = ["client"]
WITH_CLIENT = [*ALL_BACKENDS, *CLIENT_BACKENDS]
#: How ``cluster_cachify`` gets its clients: a sync one (the asyncio twin is derived), or both.
CLUSTER_CLIENTS = ["sync_client", "both_clients"]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis: ``REDIS_URL``, else a private server started for this session."""
    env_url = os.environ.get("REDIS_URL")
    if env_url:
        yield env_url
        return
    server = PrivateServer(require_server_binary()).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def flushed_redis_url(redis_url: str) -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        unavailable(f"Redis at {redis_url} does not answer: {exc}")
    client.flushdb()
    try:
        yield redis_url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class KeyValueClient:
    """A user's client as py-cachify's ``SyncClient`` defines it, and nothing more: cachify sees
    ``get``, ``set(ex, nx)`` and ``delete`` of a real Redis, so it builds its custom-client
    backend. ``redis`` is the server's own client, for the tests' views of what is stored."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def get(self, name: str) -> Any:
        return self.redis.get(name)

    def set(self, name: str, value: Any, ex: int | None = None, nx: bool = False) -> Any:
        return self.redis.set(name, value, ex=ex, nx=nx)

    def delete(self, *names: str) -> Any:
        return self.redis.delete(*names)


def make_instance(backend: str, request: pytest.FixtureRequest, **options: object) -> Cachify:
    prefix = options.pop("prefix", f"T{uuid.uuid4().hex[:8]}-")
    if backend == "memory":
        return init_cachify(prefix=prefix, is_global=False, **options)  # type: ignore[arg-type]
    if backend == "client":
        import redis

        server = redis.Redis.from_url(request.getfixturevalue("flushed_redis_url"))
        request.addfinalizer(server.close)
        return init_cachify(sync_client=KeyValueClient(server), prefix=prefix, is_global=False, **options)  # type: ignore[arg-type]
    if backend == "cluster":
        nodes = request.getfixturevalue("flushed_redis_cluster")
        client = sync_cluster_client(nodes)
        request.addfinalizer(client.close)
        return init_cachify(sync_client=client, prefix=prefix, is_global=False, **options)  # type: ignore[arg-type]
    url = request.getfixturevalue("flushed_redis_url")
    return init_cachify(url=url, prefix=prefix, is_global=False, **options)  # type: ignore[arg-type]


@pytest.fixture
def cachify(backend: str, request: pytest.FixtureRequest) -> Iterator[Cachify]:
    """A fresh instance on ``backend``, installed as the global one for the test."""
    instance = make_instance(backend, request, lock_poll_interval=0.05)
    with as_global(instance):
        yield instance


@pytest.fixture
def make_cachify(backend: str, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Factory of further instances on the same backend: ``make_cachify(prefix=..., ...)``."""

    def factory(**options: object) -> Cachify:
        return make_instance(backend, request, **options)

    return factory


@pytest.fixture
def no_global() -> Iterator[None]:
    with as_global(None):
        yield


@pytest.fixture
def warnings_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """``caplog``, recording cachify's warnings."""
    caplog.set_level(logging.WARNING, logger="cachify")
    return caplog


@pytest.fixture
def raw(flushed_redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the flushed test database (what worker processes report to)."""
    import redis

    client = redis.Redis.from_url(flushed_redis_url, socket_timeout=10)
    try:
        yield client
    finally:
        client.close()


# -- Redis Cluster ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_cluster_nodes() -> Iterator[list[tuple[str, int]]]:
    """``(host, port)`` of a Redis Cluster's nodes: ``REDIS_CLUSTER_NODES``, else a private one."""
    env_nodes = os.environ.get("REDIS_CLUSTER_NODES")
    if env_nodes:
        yield parse_cluster_nodes(env_nodes)
        return
    cluster = PrivateCluster(require_server_binary()).start()
    try:
        yield cluster.nodes
    finally:
        cluster.stop()


def sync_cluster_client(nodes: list[tuple[str, int]], **options: Any) -> Any:
    from redis.cluster import ClusterNode, RedisCluster

    return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes], **options)


def async_cluster_client(nodes: list[tuple[str, int]], **options: Any) -> Any:
    """An asyncio cluster client; it connects on first use, in the loop that uses it."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes], **options)


@pytest.fixture
def flushed_redis_cluster(redis_cluster_nodes: list[tuple[str, int]]) -> Iterator[list[tuple[str, int]]]:
    """The cluster's nodes, every primary flushed before and after the test."""
    import redis
    from redis.cluster import RedisCluster

    try:
        client = sync_cluster_client(redis_cluster_nodes, socket_timeout=5)
    except redis.exceptions.RedisError as exc:
        unavailable(f"Redis Cluster at {redis_cluster_nodes} does not answer: {exc}")
        return
    client.flushdb(target_nodes=RedisCluster.PRIMARIES)
    try:
        yield redis_cluster_nodes
    finally:
        client.flushdb(target_nodes=RedisCluster.PRIMARIES)
        client.close()


def make_cluster_instance(
    clients: str, nodes: list[tuple[str, int]], request: pytest.FixtureRequest, **options: Any
) -> Cachify:
    """An instance on the cluster, its clients per ``CLUSTER_CLIENTS`` (closed after the test)."""
    options.setdefault("prefix", f"T{uuid.uuid4().hex[:8]}-")
    sync_client = sync_cluster_client(nodes)
    request.addfinalizer(sync_client.close)
    if clients == "sync_client":
        return init_cachify(sync_client=sync_client, is_global=False, **options)
    assert clients == "both_clients", clients
    return init_cachify(
        sync_client=sync_client, async_client=async_cluster_client(nodes), is_global=False, **options
    )


@pytest.fixture(params=CLUSTER_CLIENTS)
def cluster_clients(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cluster_cachify(
    cluster_clients: str, flushed_redis_cluster: list[tuple[str, int]], request: pytest.FixtureRequest
) -> Iterator[Cachify]:
    """A fresh instance on Redis Cluster, installed as the global one for the test."""
    instance = make_cluster_instance(cluster_clients, flushed_redis_cluster, request, lock_poll_interval=0.05)
    with as_global(instance):
        yield instance


@pytest.fixture
def make_cluster_cachify(
    cluster_clients: str, flushed_redis_cluster: list[tuple[str, int]], request: pytest.FixtureRequest
) -> Callable[..., Cachify]:
    """Factory of further instances on the cluster: ``make_cluster_cachify(prefix=..., ...)``."""

    def factory(**options: Any) -> Cachify:
        return make_cluster_instance(cluster_clients, flushed_redis_cluster, request, **options)

    return factory


__all__ = [
    "ALL_BACKENDS",
    "CLIENT_BACKENDS",
    "CLUSTER_BACKENDS",
    "IN_CI",
    "WITH_CLIENT",
    "WITH_CLUSTER",
    "KeyValueClient",
    "cachify_core",
]


@pytest.fixture(autouse=True)
def _stop_waiting_room_sweeps() -> Iterator[None]:
    """A worker's waiting-room sweep outlives the test that started it (in-process workers):
    each test ends its own, so none sweeps a store that has gone."""
    from cachify_core.tasks import handover

    yield
    handover.stop_worker_sweepers()


@pytest.fixture(autouse=True)
def _end_runs() -> Iterator[None]:
    """Deliveries a test left running are ended, so no lease of theirs renews into later tests."""
    from .delivery_support import end_runs

    yield
    end_runs()
