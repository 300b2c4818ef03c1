"""The wires' own paths (cachify_core/backends/wire.py), on real servers: hiredis packing sends
the bytes redis-py would, a client with another encoding keeps redis-py's packer, and the
asyncio write path hands large requests to the socket in full and is bounded on a stuck server."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aredis
from redis.connection import Connection

from cachify_core import Cachify, CachifyBackendError
from cachify_core.backends import wire

from . import test_backend_errors
from .servers import PrivateServer
from .test_backend_errors import SHORT_TIMEOUT_S, SLACK_S, stopped

pytestmark = pytest.mark.timeout(60)

#: The same fixture: a private server for one test, resumed and stopped at its end.
server = test_backend_errors.server

#: Arguments of the kinds cachify sends: text (non-ASCII too), bytes (a pickled value),
#: integers (TTLs in ms, counts), floats, the empty string.
COMMANDS: list[tuple[object, ...]] = [
    ("EVALSHA", "39210eab064ac317ab02bdeff1aff266f61aaa9d", 2, "{p}:a", "{p}:b", "tök-é", 60000, -1),
    ("SET", "k", b"\x80\x04\x95\xff\x00", "PX", 3600000),
    ("MGET", "", "{x}:gen", "0.25"),
    ("ZADD", "z", 1.5, "m", 2**70, "n"),
]


def test_hiredis_packs_the_bytes_redis_py_packs() -> None:
    pytest.importorskip("hiredis")
    pack = wire._packer({})
    assert pack is not None
    assert b"".join(pack(COMMANDS)) == b"".join(Connection().pack_commands(COMMANDS))


@pytest.mark.parametrize("kwargs", [{"encoding": "latin-1"}, {"encoding_errors": "replace"}])
def test_another_encoding_keeps_redis_pys_packer(kwargs: dict[str, str]) -> None:
    assert wire._packer(kwargs) is None


def test_a_latin1_client_stores_what_it_reads_back(flushed_redis_url: str) -> None:
    client = redis.Redis.from_url(flushed_redis_url, encoding="latin-1")
    c = Cachify(sync_client=client, prefix="W-")

    @c.cached("é-{n}")
    def value(n: int) -> str:
        return f"ü{n}"

    assert value(1) == value(1) == "ü1"
    assert wire.SyncWire(client)._pack is None
    assert any(key.startswith("{W-é-{n}".encode("latin-1")) for key in client.keys("*"))


async def test_a_latin1_asyncio_client_stores_what_it_reads_back(flushed_redis_url: str) -> None:
    """redis-py's packer, then cachify's own asyncio write."""
    client = aredis.Redis.from_url(flushed_redis_url, encoding="latin-1")
    c = Cachify(async_client=client, prefix="WA-")

    @c.cached("é-{n}")
    async def value(n: int) -> str:
        return f"ü{n}"

    assert await value(1) == await value(1) == "ü1"
    assert wire.AsyncWire(client)._pack is None
    assert any(key.startswith("{WA-é-{n}".encode("latin-1")) for key in await client.keys("*"))
    await client.aclose()


async def test_a_large_value_round_trips_on_the_asyncio_path(server: PrivateServer) -> None:
    """16 MB is more than a loopback socket takes at once: the write waits for the drain."""
    c = Cachify(url=server.url, prefix="W-")
    big = b"x" * (16 * 1024 * 1024)
    calls = 0

    @c.cached("big-{n}")
    async def value(n: int) -> bytes:
        nonlocal calls
        calls += 1
        return big + bytes([n])

    assert await value(1) == big + b"\x01"
    assert await value(1) == big + b"\x01"
    assert calls == 1


async def test_a_large_write_to_a_stuck_server_fails_within_its_socket_timeout(
    server: PrivateServer,
) -> None:
    """A stopped server's socket fills up: the drain is bounded by ``socket_timeout``."""
    client = aredis.Redis(
        host="127.0.0.1",
        port=server.port,
        socket_timeout=SHORT_TIMEOUT_S,
        socket_connect_timeout=SHORT_TIMEOUT_S,
    )
    c = Cachify(async_client=client, prefix="W-")
    gen = (await c.async_backend.cache_get("ns", "warm")).gen  # connected
    assert await c.async_backend.cache_set("ns", "warm", b"1", None, gen)  # script loaded
    big = b"y" * (64 * 1024 * 1024)
    with stopped(server.proc):
        began = time.monotonic()
        with pytest.raises(CachifyBackendError, match="cache_set"):
            await asyncio.wait_for(c.async_backend.cache_set("ns", "big", big, None, gen), 20)
        took = time.monotonic() - began
    assert took < SHORT_TIMEOUT_S + SLACK_S
    # the connection that timed out mid-write was dropped: the next calls work
    assert await c.async_backend.cache_set("ns", "after", b"2", None, gen)
    assert (await c.async_backend.cache_get("ns", "after")).value == b"2"
    assert (await c.async_backend.cache_get("ns", "big")).value in (None, big)


async def test_a_second_burst_of_concurrent_calls_opens_no_connection(server: PrivateServer) -> None:
    """Every connection a burst opened is kept for the next one (a cap below the burst's size
    made each burst open and close the surplus again)."""
    c = Cachify(url=server.url, prefix="WB-")

    @c.cached("burst-{n}")
    async def value(n: int) -> int:
        return n

    burst = 100  # above the old cap of 64; redis-py's asyncio pool allows 100 connections
    probe = redis.Redis(host="127.0.0.1", port=server.port)

    def connections_received() -> int:
        return int(probe.info("stats")["total_connections_received"])

    assert await asyncio.gather(*(value(n) for n in range(burst))) == list(range(burst))
    opened = connections_received()
    for round_ in range(1, 4):
        start = round_ * burst
        assert await asyncio.gather(*(value(n) for n in range(start, start + burst))) == list(
            range(start, start + burst)
        )
    assert connections_received() == opened  # the probe's own connection is counted once, before
    probe.close()


def test_a_wire_keeps_no_more_idle_connections_than_its_pool_allows() -> None:
    assert wire.SyncWire(redis.Redis(max_connections=10))._max_idle == 10
    default = redis.Redis()
    assert wire.SyncWire(default)._max_idle == min(default.connection_pool.max_connections, wire.MAX_IDLE)
    assert wire.SyncWire(redis.Redis(max_connections=5000))._max_idle == wire.MAX_IDLE
    assert wire.AsyncWire(aredis.Redis(max_connections=3))._max_idle == 3


def test_an_error_reply_keeps_the_blocking_connection(server: PrivateServer) -> None:
    """An error reply (a NOSCRIPT after a server restart, a WRONGTYPE) is raised, and the
    connection, still in step, is kept: it was dropped and opened again for each one."""
    from redis.exceptions import NoScriptError, ResponseError

    w = wire.SyncWire(redis.Redis(host="127.0.0.1", port=server.port))
    assert w("PING") == b"PONG"  # connects
    ((conn, _),) = w._idle
    sock = conn._sock
    w("SET", "text", "x")
    with pytest.raises(NoScriptError):
        w("EVALSHA", "0" * 40, 0)
    with pytest.raises(ResponseError):
        w("INCR", "text")
    assert w.pipeline([("INCR", "text"), ("ECHO", "next")])[1] == b"next"
    assert w("ECHO", "still in step") == b"still in step"
    assert [c for c, _ in w._idle] == [conn]  # the same connection throughout
    assert conn._sock is sock  # and the same socket: never disconnected


@contextlib.contextmanager
def read_only(server: PrivateServer) -> Iterator[None]:
    """The server as a replica of a primary that is not there: writes answer READONLY (what a
    primary demoted by a failover answers)."""
    admin = redis.Redis(host="127.0.0.1", port=server.port)
    admin.execute_command("REPLICAOF", "127.0.0.1", "1")
    try:
        yield
    finally:
        admin.execute_command("REPLICAOF", "NO", "ONE")
        admin.close()


def test_a_readonly_reply_drops_the_blocking_connection(server: PrivateServer) -> None:
    """After READONLY the next call opens a new connection (one that may reach the new primary
    behind the same address), whether the reply came alone or in a pipeline."""
    from redis.exceptions import ReadOnlyError

    w = wire.SyncWire(redis.Redis(host="127.0.0.1", port=server.port))
    assert w("PING") == b"PONG"
    with read_only(server):
        with pytest.raises(ReadOnlyError):
            w("SET", "k", "v")
        assert w._idle == []
        assert w("PING") == b"PONG"  # a new connection
        assert len(w._idle) == 1
        replies = w.pipeline([("SET", "k", "v"), ("PING",)])
        assert isinstance(replies[0], ReadOnlyError)
        assert replies[1] == b"PONG"
        assert w._idle == []


async def test_a_readonly_reply_drops_the_asyncio_connection(server: PrivateServer) -> None:
    from redis.exceptions import ReadOnlyError, ResponseError

    w = wire.AsyncWire(aredis.Redis(host="127.0.0.1", port=server.port))
    assert await w("PING") == b"PONG"
    ((conn, _),) = w._idle
    with read_only(server):
        with pytest.raises(ReadOnlyError):
            await w("SET", "k", "v")
        assert w._idle == []
        assert await w("PING") == b"PONG"
        ((again, _),) = w._idle
        assert again is not conn  # a new connection
        replies = await w.pipeline([("SET", "k", "v"), ("PING",)])
        assert isinstance(replies[0], ReadOnlyError)
        assert replies[1] == b"PONG"
        assert w._idle == []
        with pytest.raises(ResponseError):
            await w("INCR", "no-such-command-arg", "extra")  # another error reply: kept
        assert len(w._idle) == 1


async def test_an_asyncio_batch_reads_an_error_reply_in_its_place_and_stays_in_step(
    server: PrivateServer,
) -> None:
    """The batch reader (hiredis, one deadline per batch) returns each reply, an error reply in
    its place, and leaves the connection ready for the next request."""
    from redis.exceptions import ResponseError

    w = wire.AsyncWire(aredis.Redis(host="127.0.0.1", port=server.port))
    assert await w.pipeline([("PING",)]) == [b"PONG"]  # connects
    ((conn, _),) = w._idle
    if importlib.util.find_spec("hiredis") and wire._timeout is not None:
        assert wire._hiredis_stream(conn) is not None  # the batch reader, not redis-py's per reply
    big = b"v" * (3 * 1024 * 1024)  # several reads of the stream
    await w("SET", "big", big)
    replies = await w.pipeline([("ECHO", "a"), ("NO-SUCH-COMMAND",), ("GET", "big"), ("INCR", "big")])
    assert replies[0] == b"a"
    assert replies[2] == big
    assert isinstance(replies[1], ResponseError)
    assert "unknown command" in str(replies[1])
    assert isinstance(replies[3], ResponseError)
    with pytest.raises(ResponseError):
        await w("INCR", "big")
    assert await w("ECHO", "still in step") == b"still in step"
    assert [c for c, _ in w._idle] == [conn]  # the same connection throughout


async def test_an_asyncio_connection_closed_mid_batch_fails_the_batch_and_is_replaced(
    server: PrivateServer,
) -> None:
    """EOF while reading a batch (QUIT answers, then the server closes): a ConnectionError (a
    CachifyBackendError to cachify's callers), the connection dropped, and the next call on a
    new connection works."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    w = wire.AsyncWire(aredis.Redis(host="127.0.0.1", port=server.port))
    own_id = await w("CLIENT", "ID")
    with pytest.raises(RedisConnectionError):
        await w.pipeline([("PING",), ("QUIT",), ("PING",)])
    assert w._idle == []
    assert await w.pipeline([("PING",), ("ECHO", "b")]) == [b"PONG", b"b"]
    assert await w("CLIENT", "ID") != own_id


async def test_an_asyncio_batch_to_a_stuck_server_times_out_within_its_socket_timeout(
    server: PrivateServer,
) -> None:
    """The batch's one deadline is the connection's socket_timeout; a timed-out or cancelled
    batch drops its connection (a late reply must not be read as the next request's)."""
    from redis.exceptions import TimeoutError as RedisTimeoutError

    w = wire.AsyncWire(aredis.Redis(host="127.0.0.1", port=server.port, socket_timeout=SHORT_TIMEOUT_S))
    assert await w.pipeline([("PING",)]) == [b"PONG"]
    with stopped(server.proc):
        began = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await asyncio.wait_for(w.pipeline([("SET", "k", "late"), ("GET", "k")]), 20)
        assert time.monotonic() - began < SHORT_TIMEOUT_S + SLACK_S
        assert w._idle == []
        pending = asyncio.create_task(w.pipeline([("ECHO", "cancelled")]))
        await asyncio.sleep(0.1)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        assert w._idle == []
    assert await w.pipeline([("ECHO", "after"), ("GET", "k")]) == [b"after", b"late"]
    assert await w("ECHO", "next") == b"next"
