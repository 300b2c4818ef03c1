"""Redis backend (redis-py, sync and asyncio): one round trip per primitive.

Round trips, each one network exchange with the server:

=====================  ====  ====================================================
operation              RTs   how
=====================  ====  ====================================================
cache_get / cache_set   1    MGET (generation, fill epoch, entry) / ``cache_set.lua``
cache_delete / clear    1    DEL / INCR of the namespace's generation
lock_acquire            1    SET NX PX, or ``lock_acquire.lua`` when waiting
lock_release            1    ``lock_release.lua`` (compare-and-delete + wake)
lock_extend             1    ``lock_extend.lua``
lock_holder             1    GET
pool_acquire            1    ``pool_acquire.lua`` (prune + count + add)
pool_release            1    ``pool_release.lua`` (ZREM + wake)
pool_extend / size      1    ``pool_extend.lua`` / ``pool_size.lua``
rate_acquire            1    ``rate_acquire.lua`` (every limit of the call at once)
rate_acquire_bounds     1    ``rate_acquire.lua`` over every limiter's keys (Cluster: 1 per limiter)
wait                    1    BLPOP on the key's wake list, bounded by ``timeout_s``
room_acquire            1    ``room_acquire.lua`` (Cluster: 2 when it parks)
room_release            1    ``room_release.lua``
room_park_until         1    ``room_park_until.lua`` (Cluster: 2 when it parks)
room_arrive             1    ``room_arrive.lua``
room_cancel             1    ``room_cancel.lua``
room_sweep              1    ``room_sweep.lua`` (Cluster: +3 when the room drains)
room_stats / rooms      1    ``room_stats.lua`` / ZRANGE of the registry
=====================  ====  ====================================================

Scripts run by SHA (EVALSHA); on NOSCRIPT (server restarted or flushed) the same call falls
back to EVAL, which also reloads the script cache, so a cold call is still one round trip.

Keys: locks and pools are stored under ``{<key>}`` so their companion keys
(``{<key>}:waiting``, ``{<key>}:wake``) share a hash slot and every script runs unchanged on
Redis Cluster. Cache entries of one namespace (one cached function) share the tag ``{<ns>}``
with its ``:gen`` and ``:fill`` counters: that is what makes ``clear_cache`` one INCR instead
of a key scan, at the price of keeping one function's entries on one node. A rate limiter's
limits are ``{<key>}:<count>/<period_ms>ms``: one hash tag per limiter, so all its limits are
checked in one script on one node.

Needs Redis 6.2 or later, or Valkey (CI runs the core tests on Redis 6.2 and 7.0 and Valkey 8.1;
DragonflyDB is not tested). The floor: BLPOP with a fractional timeout (6.0) and a script that
writes after TIME (effects replication, the default since 5.0); 6.2 is the oldest version tested.
Scripts only touch the keys they declare.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple

from ..errors import CachifyBackendError, CachifyInitError
from .base import (
    HANDOVER_BATCH,
    CacheRead,
    Call,
    Handover,
    RateCheck,
    RateLimit,
    RoomAdmission,
    RoomRelease,
    RoomSettings,
    RoomStats,
    RoomStatus,
    RoomSweep,
    acall_each,
    call_each,
    check_park_until,
)
from .wire import AsyncWire, SyncWire

__all__ = [
    "AsyncRedisBackend",
    "RedisBackend",
    "async_twin",
    "clients_from_url",
    "is_async_redis_client",
    "is_sync_redis_client",
    "sync_twin",
]

logger = logging.getLogger("cachify")

#: Margin a waiter's "someone is waiting" mark lives beyond the wait it announced (waiters
#: re-mark on every retry). A mark that lapses would cost only the wake-up, never safety.
WAITING_FLAG_MS = 5_000

#: Socket timeouts of the clients cachify builds from a URL: a down server is reported as a
#: ``CachifyBackendError`` within this bound instead of hanging.
DEFAULT_SOCKET_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class _Script:
    name: str
    source: str
    sha: str


def _source(name: str) -> str:
    return resources.files("cachify_core.backends.lua").joinpath(f"{name}.lua").read_text("utf-8")


def _load(name: str) -> _Script:
    source = _source(name)
    return _Script(name, source, hashlib.sha1(source.encode("utf-8")).hexdigest())


def _load_room(name: str) -> _Script:
    """A room script: ``room_core.lua`` first, ``room_lib.lua`` where it says ``--@room_lib``
    (after its fast path, which then does not build helpers it does not use)."""
    body = _source(name)
    if body.count("--@room_lib") > 1:
        raise RuntimeError(f"{name}.lua: more than one --@room_lib marker")
    source = _source("room_core") + "\n" + body.replace("--@room_lib", _source("room_lib"))
    return _Script(name, source, hashlib.sha1(source.encode("utf-8")).hexdigest())


CACHE_SET = _load("cache_set")
LOCK_ACQUIRE = _load("lock_acquire")
LOCK_RELEASE = _load("lock_release")
LOCK_EXTEND = _load("lock_extend")
POOL_ACQUIRE = _load("pool_acquire")
POOL_RELEASE = _load("pool_release")
POOL_EXTEND = _load("pool_extend")
POOL_SIZE = _load("pool_size")
RATE_ACQUIRE = _load("rate_acquire")
ROOM_ACQUIRE = _load_room("room_acquire")
ROOM_RELEASE = _load_room("room_release")
ROOM_PARK_UNTIL = _load_room("room_park_until")
ROOM_ARRIVE = _load_room("room_arrive")
ROOM_SWEEP = _load_room("room_sweep")
ROOM_CANCEL = _load_room("room_cancel")
ROOM_STATS = _load_room("room_stats")
ROOMS_UNLIST = _load("rooms_unlist")

# A call is (script, keys, args); both twins build it here and only differ in how they send it.
_Call = tuple[_Script, tuple[str, ...], tuple[str | int | bytes, ...]]


def _tag(key: str) -> str:
    # Redis hashes the text between the first "{" and the next "}"; an empty tag ("{}...")
    # hashes the whole name and splits a key from its companions. Escape a leading "}" (and
    # the escape itself, so the mapping stays one-to-one).
    if key[:1] in ("}", "~"):
        key = "~" + key
    return "{" + key + "}"


def _cache_get(ns: str, key: str) -> tuple[str, ...]:
    # A plain MGET (no script): the generation is compared here, which keeps a hit as cheap
    # for the server as py-cachify's GET. The three keys share the namespace's hash slot.
    n = _tag(ns)
    return ("MGET", n + ":gen", n + ":fill", n + ":" + key)


def _cache_set(ns: str, key: str, value: bytes, ttl_ms: int | None, gen: str) -> _Call:
    n = _tag(ns)
    return CACHE_SET, (n + ":gen", n + ":" + key), (gen, value, ttl_ms or 0)


def _cache_read(reply: Any) -> CacheRead:
    gen_raw, fill_raw, entry = reply
    gen = "0" if gen_raw is None else _text(gen_raw)
    fill = "0" if fill_raw is None else _text(fill_raw)
    if entry is not None:
        head, sep, payload = bytes(entry).partition(b":")
        if sep and head.decode() == gen:
            return CacheRead(payload, gen, fill)
    return CacheRead(None, gen, fill)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _set_nx(key: str, token: str, ttl_ms: int | None) -> tuple[str | int, ...]:
    if ttl_ms is None:
        return ("SET", _tag(key), token, "NX")
    return ("SET", _tag(key), token, "NX", "PX", ttl_ms)


def _blpop_timeout(timeout_s: float) -> str:
    # BLPOP takes seconds with decimals (Redis >= 6); 0 would block for ever.
    return f"{max(timeout_s, 0.001):.3f}"


def _lock_release(key: str, token: str, force: bool) -> _Call:
    k = _tag(key)
    return LOCK_RELEASE, (k, k + ":waiting", k + ":wake"), (token, "1" if force else "0")


def _flag_ms(waiting: float) -> int:
    """Lifetime of the waiting mark: past the caller's planned wait, so a release during it wakes it."""
    if not waiting:
        return 0
    if waiting is True:
        return WAITING_FLAG_MS
    return max(WAITING_FLAG_MS, round(waiting * 1000) + WAITING_FLAG_MS)


def _lock_acquire(key: str, token: str, ttl_ms: int | None, waiting: float) -> _Call:
    k = _tag(key)
    return LOCK_ACQUIRE, (k, k + ":waiting"), (token, ttl_ms or 0, _flag_ms(waiting))


def _pool_acquire(key: str, token: str, max_size: int, ttl_ms: int | None, waiting: float) -> _Call:
    k = _tag(key)
    return (
        POOL_ACQUIRE,
        (k, k + ":waiting"),
        (token, max_size, ttl_ms or 0, _flag_ms(waiting)),
    )


def _pool_release(key: str, token: str) -> _Call:
    k = _tag(key)
    return POOL_RELEASE, (k, k + ":waiting", k + ":wake"), (token,)


def _rate_acquire(key: str, limits: Sequence[RateLimit], cost: int, consume: bool) -> _Call:
    k = _tag(key)
    args: list[str | int | bytes] = [cost, 1 if consume else 0]
    for limit in limits:
        args += (limit.emission_us, limit.burst)
    return RATE_ACQUIRE, tuple(f"{k}:{limit.name}" for limit in limits), tuple(args)


def _rate_acquire_bounds(
    bounds: Sequence[tuple[str, Sequence[RateLimit]]], cost: int, consume: bool
) -> tuple[_Call, tuple[int, ...]]:
    """One rate_acquire.lua call over every limit of several limiters (a single server only:
    their keys hash anywhere), and which limiter each of its keys belongs to."""
    keys: list[str] = []
    args: list[str | int | bytes] = [cost, 1 if consume else 0]
    owner: list[int] = []
    for index, (key, limits) in enumerate(bounds):
        k = _tag(key)
        for limit in limits:
            keys.append(f"{k}:{limit.name}")
            args += (limit.emission_us, limit.burst)
            owner.append(index)
    return (RATE_ACQUIRE, tuple(keys), tuple(args)), tuple(owner)


def _rate_check(reply: Any, owner: tuple[int, ...] = ()) -> RateCheck:
    """``owner``: the limiter of each key, for a ``rate_acquire_bounds`` reply."""
    allowed, retry_after_ms, remaining, worst = reply
    refused = -1 if int(allowed) == 1 else owner[int(worst) - 1] if owner else 0
    return RateCheck(int(allowed) == 1, int(retry_after_ms), int(remaining), refused)


def _in_turn(check: RateCheck, index: int, so_far: RateCheck | None) -> RateCheck:
    """Limiter ``index``'s check folded into the ones before it (Cluster: one call each)."""
    remaining = check.remaining if so_far is None else min(check.remaining, so_far.remaining)
    return check._replace(remaining=remaining, refused=-1 if check.allowed else index)


# -- waiting rooms: keys, calls and replies (both twins) -------------------------------------
_ROOM_STATUS = {
    1: RoomStatus.ACQUIRED,
    2: RoomStatus.CLAIMED,
    3: RoomStatus.DUPLICATE,
    4: RoomStatus.PARKED,
    5: RoomStatus.FULL,
    6: RoomStatus.UNKNOWN,
    7: RoomStatus.TAKEN_OVER,
}


@functools.lru_cache(maxsize=1024)
def _room_keys(key: str, registry: str | None) -> tuple[str, ...]:
    """The room's keys under the pool's tag; the registry only on a single server (on Cluster
    it lives in another slot, which a script may not touch). Cached: hot pools repeat."""
    k = _tag(key)
    keys = (
        k,
        k + ":room",
        k + ":timed",
        k + ":parked",
        k + ":handed",
        k + ":until",
        k + ":started",
        k + ":conf",
        k + ":waiting",
        k + ":wake",
        k + ":claims",
        k + ":watch",
    )
    return keys if registry is None else (*keys, _tag(registry))


@functools.lru_cache(maxsize=256)
def _settings(room: RoomSettings) -> str:
    """The SETTINGS argument of the room scripts (room_lib.lua), also what ``:conf`` stores."""
    return f"{room.max_size}:{room.slot_ttl_ms}:{room.handover_lease_ms}:{room.started_ttl_ms}:{room.max_waiting}"


def _check_slots(room: RoomSettings, op: str) -> None:
    if room.max_size < 1:
        raise ValueError(f"{op}: RoomSettings.max_size must be >= 1 for a pool, got {room.max_size}")


def _room_acquire(
    key: str,
    token: str,
    entry_id: str,
    payload: bytes,
    room: RoomSettings,
    reservation: str | None,
    registry: str | None,
) -> _Call:
    _check_slots(room, "room_acquire")
    args = (key, token, entry_id, payload, _settings(room), reservation or "", HANDOVER_BATCH)
    return ROOM_ACQUIRE, _room_keys(key, registry), args


def _room_release(
    key: str, token: str, room: RoomSettings, claimed: str | None, registry: str | None
) -> _Call:
    args = (key, token, _settings(room), HANDOVER_BATCH, claimed or "")
    return ROOM_RELEASE, _room_keys(key, registry), args


def _room_park_until(
    key: str,
    entry_id: str,
    payload: bytes,
    delay_ms: int,
    room: RoomSettings,
    spacing_ms: int,
    registry: str | None,
) -> _Call:
    check_park_until(key, delay_ms, spacing_ms)
    args = (key, entry_id, payload, delay_ms, _settings(room), spacing_ms)
    return ROOM_PARK_UNTIL, _room_keys(key, registry), args


def _room_cancel(key: str, entry_id: str, room: RoomSettings, registry: str | None) -> _Call:
    return ROOM_CANCEL, _room_keys(key, registry), (key, entry_id, _settings(room), HANDOVER_BATCH)


def _room_arrive(
    key: str,
    token: str,
    entry_id: str,
    payload: bytes,
    room: RoomSettings,
    reservation: str,
    registry: str | None,
) -> _Call:
    args = (key, token, entry_id, payload, _settings(room), reservation)
    return ROOM_ARRIVE, _room_keys(key, registry), args


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"room_sweep: limit must be an int >= 1, got {limit!r}")
    return limit


def _room_sweep(key: str, limit: int, registry: str | None) -> _Call:
    return ROOM_SWEEP, _room_keys(key, registry), (key, check_limit(limit))


def _room_stats(key: str) -> _Call:
    return ROOM_STATS, _room_keys(key, None), (key,)


class _RoomReply(NamedTuple):
    code: int
    held: int
    parked_new: bool
    handed: tuple[Handover, ...]


def _room_reply(reply: Any) -> _RoomReply:
    if len(reply) == 3:  # the common case: no hand-over
        return _RoomReply(int(reply[0]), int(reply[1]), int(reply[2]) == 1, ())
    rest = reply[3:]
    handed = tuple(Handover(_text(rest[i]), bytes(rest[i + 1])) for i in range(0, len(rest), 2))
    return _RoomReply(int(reply[0]), int(reply[1]), int(reply[2]) == 1, handed)


def _next_due(reply: Any) -> float | None:
    """room_sweep's third number: ms until the room's earliest timed entry (-1: none)."""
    ms = int(reply[2])
    return None if ms < 0 else ms / 1000.0


def _room_stats_reply(reply: Any) -> RoomStats:
    parked, wait_ms, handed, timed, watching = (int(x) for x in reply)
    return RoomStats(parked, wait_ms / 1000.0, handed, timed, watching)


def _rooms_reply(reply: Any) -> tuple[str, ...]:
    return tuple(_text(member) for member in reply)


# -- batches: several primitive calls in one round trip (a single server) --------------------
#
# Each batchable primitive as (what it sends, how its reply reads): a script call, or a plain
# command, and the same reply parser its method uses. Room primitives are batched only on a
# single server, where their scripts keep the registry themselves (on Cluster a batch is made
# call by call, each on its key's node).


def _is_one(reply: Any) -> bool:
    return int(reply) == 1


def _room_admission(reply: Any) -> RoomAdmission:
    r = _room_reply(reply)
    return RoomAdmission(_ROOM_STATUS[r.code], r.handed)


def _room_released(reply: Any) -> RoomRelease:
    r = _room_reply(reply)
    return RoomRelease(r.code == 1, r.handed)


_Request = tuple["_Script | None", tuple[Any, ...], Callable[[Any], Any]]


def _request(call: Call) -> _Request | None:
    """``call`` as one request on a single server (script or command, its reply's parser), or
    ``None`` for a primitive that is not batched (it is then made on its own)."""
    name, a = call
    if name == "cache_get":
        return None, _cache_get(*a), _cache_read
    if name == "cache_set":
        return (*_script_args(_cache_set(*a)), _is_one)
    if name == "lock_extend":
        key, token, ttl_ms = a
        return LOCK_EXTEND, ((_tag(key),), (token, ttl_ms or 0)), _is_one
    if name == "lock_release":
        return (*_script_args(_lock_release(a[0], a[1], False)), _is_one)
    if name == "lock_acquire" and not a[3]:
        return None, _set_nx(a[0], a[1], a[2]), bool
    if name == "pool_release":
        return (*_script_args(_pool_release(*a)), _is_one)
    if name == "pool_acquire" and not a[4]:
        return (*_script_args(_pool_acquire(*a)), _is_one)
    if name == "room_acquire":
        key, token, entry_id, payload, room, reservation = (*a, None)[:6]
        return (
            *_script_args(_room_acquire(key, token, entry_id, payload, room, reservation, room.registry)),
            _room_admission,
        )
    if name == "room_release":
        key, token, room, claimed = (*a, None)[:4]
        return (*_script_args(_room_release(key, token, room, claimed, room.registry)), _room_released)
    if name == "room_cancel":
        key, entry_id, room = a
        return (*_script_args(_room_cancel(key, entry_id, room, room.registry)), _room_released)
    if name == "rate_acquire":
        return (*_script_args(_rate_acquire(*a)), _rate_check)
    return None


def _script_args(call: _Call) -> tuple[_Script, tuple[tuple[str, ...], tuple[Any, ...]]]:
    script, keys, args = call
    return script, (keys, args)


def _wire_command(script: _Script | None, body: tuple[Any, ...], source: bool = False) -> tuple[Any, ...]:
    if script is None:
        return body
    keys, args = body
    return (
        ("EVAL", script.source, len(keys), *keys, *args)
        if source
        else ("EVALSHA", script.sha, len(keys), *keys, *args)
    )


def _parsed(op: str, server: str, requests: list[_Request], replies: list[Any]) -> list[Any]:
    out = []
    for (_, _, parse), reply in zip(requests, replies, strict=True):
        if isinstance(reply, Exception):  # that call's error reply (the others were made)
            raise _fail(op, server, reply) from reply
        out.append(parse(reply))
    return out


def _unlisted(key: str, exc: BaseException) -> None:
    logger.warning(
        "cachify: parked in %s but could not list the room in the registry (%s): a release still "
        "hands it over; the sweep sees the room once another park lists it",
        key,
        exc,
    )


def _is_cluster(client: Any) -> bool:
    return not hasattr(client, "connection_pool")


def _cluster_nodes(client: Any) -> list[Any]:
    """A cluster client's startup nodes (known before it connects), else its discovered ones."""
    startup = getattr(client, "startup_nodes", None)
    if startup is None:
        startup = getattr(getattr(client, "nodes_manager", None), "startup_nodes", None)
    if isinstance(startup, dict):
        startup = list(startup.values())
    if not startup and callable(getattr(client, "get_nodes", None)):
        startup = client.get_nodes()
    return list(startup or [])


def _describe(client: Any) -> str:
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if kwargs is None:
        nodes = _cluster_nodes(client)
        if nodes:
            return "redis-cluster " + ",".join(sorted({f"{n.host}:{n.port}" for n in nodes}))
        return f"redis {type(client).__name__}"
    if "path" in kwargs:
        return f"redis unix:{kwargs['path']}/{kwargs.get('db', 0)}"
    return f"redis {kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def _check_binary(client: Any) -> None:
    kwargs: dict[str, Any] = {}
    get_kwargs = getattr(client, "get_connection_kwargs", None)
    if callable(get_kwargs):
        kwargs = get_kwargs()
    else:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {}) or {}
    if kwargs.get("decode_responses"):
        raise CachifyInitError(
            f"{_describe(client)}: the client was built with decode_responses=True, but cachify "
            "stores binary values; pass a client with decode_responses=False, or url=..."
        )


def _redis_errors() -> tuple[type[BaseException], ...]:
    """What a backend call translates into CachifyBackendError: every redis-py error (outages,
    OOM, READONLY after a failover, CLUSTERDOWN, ...) and socket errors. NOSCRIPT is handled
    before it gets here."""
    import redis.exceptions as rexc

    return (rexc.RedisError, rexc.RedisClusterException, OSError)


def _fail(op: str, server: str, exc: BaseException) -> CachifyBackendError:
    return CachifyBackendError(f"{op} on {server} failed: {type(exc).__name__}: {exc}")


class RedisBackend:
    """Blocking twin over a ``redis.Redis`` or ``redis.cluster.RedisCluster`` client."""

    def __init__(self, client: Any) -> None:
        from redis.exceptions import NoScriptError

        _check_binary(client)
        self.client = client
        self.name = _describe(client)
        self._wire = SyncWire(client)
        self._cluster = _is_cluster(client)
        self.pipelines = self._wire.lean and not self._cluster
        self._no_script = NoScriptError
        self._errors = _redis_errors()

    def _script(self, op: str, call: _Call) -> Any:
        script, keys, args = call
        try:
            try:
                return self._wire("EVALSHA", script.sha, len(keys), *keys, *args)
            except self._no_script:
                return self._wire("EVAL", script.source, len(keys), *keys, *args)
        except self._errors as exc:
            raise _fail(op, self.name, exc) from exc

    def _command(self, op: str, *args: Any) -> Any:
        try:
            return self._wire(*args)
        except self._errors as exc:
            raise _fail(op, self.name, exc) from exc

    def cache_get(self, ns: str, key: str) -> CacheRead:
        return _cache_read(self._command("cache_get", *_cache_get(ns, key)))

    def cache_set(self, ns: str, key: str, value: bytes, ttl_ms: int | None, gen: str) -> bool:
        return int(self._script("cache_set", _cache_set(ns, key, value, ttl_ms, gen))) == 1

    def cache_delete(self, ns: str, key: str) -> bool:
        return int(self._command("cache_delete", "DEL", _tag(ns) + ":" + key)) == 1

    def cache_clear(self, ns: str) -> None:
        self._command("cache_clear", "INCR", _tag(ns) + ":gen")

    def cache_clear_fills(self, ns: str) -> None:
        self._command("cache_clear_fills", "INCR", _tag(ns) + ":fill")

    def lock_acquire(self, key: str, token: str, ttl_ms: int | None, waiting: float) -> bool:
        if waiting:
            return int(self._script("lock_acquire", _lock_acquire(key, token, ttl_ms, waiting))) == 1
        return bool(self._command("lock_acquire", *_set_nx(key, token, ttl_ms)))

    def lock_release(self, key: str, token: str) -> bool:
        return int(self._script("lock_release", _lock_release(key, token, False))) == 1

    def lock_force_release(self, key: str) -> bool:
        return int(self._script("lock_force_release", _lock_release(key, "", True))) == 1

    def lock_extend(self, key: str, token: str, ttl_ms: int | None) -> bool:
        return int(self._script("lock_extend", (LOCK_EXTEND, (_tag(key),), (token, ttl_ms or 0)))) == 1

    def lock_holder(self, key: str) -> str | None:
        raw = self._command("lock_holder", "GET", _tag(key))
        return None if raw is None else bytes(raw).decode()

    def pool_acquire(self, key: str, token: str, max_size: int, ttl_ms: int | None, waiting: float) -> bool:
        return int(self._script("pool_acquire", _pool_acquire(key, token, max_size, ttl_ms, waiting))) == 1

    def pool_release(self, key: str, token: str) -> bool:
        return int(self._script("pool_release", _pool_release(key, token))) == 1

    def pool_extend(self, key: str, token: str, ttl_ms: int) -> bool:
        return int(self._script("pool_extend", (POOL_EXTEND, (_tag(key),), (token, ttl_ms)))) == 1

    def pool_size(self, key: str) -> int:
        return int(self._script("pool_size", (POOL_SIZE, (_tag(key),), ())))

    def rate_acquire(self, key: str, limits: Sequence[RateLimit], cost: int, consume: bool) -> RateCheck:
        return _rate_check(self._script("rate_acquire", _rate_acquire(key, limits, cost, consume)))

    def rate_acquire_bounds(
        self, bounds: Sequence[tuple[str, Sequence[RateLimit]]], cost: int, consume: bool
    ) -> RateCheck:
        if not self._cluster:
            call, owner = _rate_acquire_bounds(bounds, cost, consume)
            return _rate_check(self._script("rate_acquire", call), owner)
        check: RateCheck | None = None
        for index, (key, limits) in enumerate(bounds):
            check = _in_turn(self.rate_acquire(key, limits, cost, consume), index, check)
            if not check.allowed:
                break
        assert check is not None, "rate_acquire_bounds: no limiter given"
        return check

    def wait(self, key: str, timeout_s: float) -> bool:
        try:
            return self._wire("BLPOP", _tag(key) + ":wake", _blpop_timeout(timeout_s)) is not None
        except self._errors:
            # A socket timeout shorter than our wait is not an outage: the caller retries its
            # acquire next, and that call reports a real outage.
            return False

    # -- waiting rooms (contract: base.py) ---------------------------------------------------
    supports_waiting_room = True

    def _registry(self, registry: str) -> str | None:
        return None if self._cluster else registry

    def _listed(self, key: str, registry: str, reply: _RoomReply) -> _RoomReply:
        if self._cluster and reply.parked_new:
            try:
                self._command("room_park", "ZINCRBY", _tag(registry), 1, key)
            except CachifyBackendError as exc:
                _unlisted(key, exc)  # the park itself happened: report it as such
        return reply

    def room_acquire(
        self,
        key: str,
        token: str,
        entry_id: str,
        payload: bytes,
        room: RoomSettings,
        reservation: str | None = None,
    ) -> RoomAdmission:
        call = _room_acquire(key, token, entry_id, payload, room, reservation, self._registry(room.registry))
        reply = self._listed(key, room.registry, _room_reply(self._script("room_acquire", call)))
        return RoomAdmission(_ROOM_STATUS[reply.code], reply.handed)

    def room_release(
        self, key: str, token: str, room: RoomSettings, claimed: str | None = None
    ) -> RoomRelease:
        call = _room_release(key, token, room, claimed, self._registry(room.registry))
        reply = _room_reply(self._script("room_release", call))
        return RoomRelease(reply.code == 1, reply.handed)

    def room_cancel(self, key: str, entry_id: str, room: RoomSettings) -> RoomRelease:
        reply = _room_reply(
            self._script("room_cancel", _room_cancel(key, entry_id, room, self._registry(room.registry)))
        )
        return RoomRelease(reply.code == 1, reply.handed)

    def room_park_until(
        self, key: str, entry_id: str, payload: bytes, delay_ms: int, room: RoomSettings, spacing_ms: int = 0
    ) -> RoomAdmission:
        call = _room_park_until(
            key, entry_id, payload, delay_ms, room, spacing_ms, self._registry(room.registry)
        )
        reply = self._listed(key, room.registry, _room_reply(self._script("room_park_until", call)))
        return RoomAdmission(_ROOM_STATUS[reply.code], reply.handed)

    def room_arrive(
        self, key: str, token: str, entry_id: str, payload: bytes, room: RoomSettings, reservation: str
    ) -> RoomStatus:
        call = _room_arrive(key, token, entry_id, payload, room, reservation, self._registry(room.registry))
        reply = self._listed(key, room.registry, _room_reply(self._script("room_arrive", call)))
        return _ROOM_STATUS[reply.code]

    def room_sweep(self, key: str, registry: str, limit: int) -> RoomSweep:
        raw = self._script("room_sweep", _room_sweep(key, limit, self._registry(registry)))
        reply = _room_reply(raw)
        if self._cluster and reply.held == 0:
            try:  # the hand-overs are made: a failure here only leaves the room listed
                self._unlist(key, registry)
            except CachifyBackendError as exc:
                logger.warning("cachify: could not take drained room %s off the registry: %s", key, exc)
        return RoomSweep(reply.handed, reply.held, _next_due(raw))

    def _unlist(self, key: str, registry: str) -> None:
        """Cluster: the registry is in another slot; unlist unless a park listed the room again."""
        version = self._command("room_sweep", "ZSCORE", _tag(registry), key)
        if version is None:
            return
        stats = self.room_stats(key)
        if not (stats.parked or stats.handed or stats.timed or stats.watching):
            self._script("room_sweep", (ROOMS_UNLIST, (_tag(registry),), (key, _text(version))))

    def room_stats(self, key: str) -> RoomStats:
        return _room_stats_reply(self._script("room_stats", _room_stats(key)))

    def batch(self, calls: Sequence[Call]) -> list[Any]:
        requests = [_request(call) for call in calls] if self._wire.lean and not self._cluster else None
        if requests is None or any(r is None for r in requests) or len(calls) < 2:
            return call_each(self, calls)
        ready = [r for r in requests if r is not None]
        op = "batch of " + ", ".join(call.name for call in calls)
        try:
            replies = self._wire.pipeline([_wire_command(script, body) for script, body, _ in ready])
            for i, reply in enumerate(replies):  # a script the server has not cached yet: once more
                if isinstance(reply, self._no_script):
                    script, body, _ = ready[i]
                    replies[i] = self._wire(*_wire_command(script, body, source=True))
        except self._errors as exc:
            raise _fail(op, self.name, exc) from exc
        return _parsed(op, self.name, ready, replies)

    def rooms(self, registry: str) -> tuple[str, ...]:
        return _rooms_reply(self._command("rooms", "ZRANGE", _tag(registry), 0, -1))


class AsyncRedisBackend:
    """Asyncio twin over a ``redis.asyncio`` client, or a factory making one per event loop.

    redis-py's asyncio connections belong to the loop that opened them; clients cachify builds
    itself (``url=``, or a twin derived from a sync client) are therefore made per loop, so the
    same ``Cachify`` works across ``asyncio.run()`` calls and threads running their own loops.
    """

    def __init__(
        self, client: Any = None, *, factory: Callable[[], Any] | None = None, name: str = ""
    ) -> None:
        from redis.exceptions import NoScriptError

        if (client is None) == (factory is None):
            raise ValueError("pass exactly one of client or factory")
        if client is not None:
            _check_binary(client)
        self._client = client
        self._factory = factory
        # loop -> (client, wire). A plain dict, not weak: the connections reference their loop,
        # so weak keys would never die; closed loops are dropped when a new loop shows up.
        self._per_loop: dict[asyncio.AbstractEventLoop, tuple[Any, AsyncWire]] = {}
        self.name = name or _describe(client)
        self._no_script = NoScriptError
        self._errors = _redis_errors()

    def _bound(self) -> tuple[Any, AsyncWire]:
        loop = asyncio.get_running_loop()
        bound = self._per_loop.get(loop)
        if bound is None:
            for old in [old for old in self._per_loop if old.is_closed()]:
                self._per_loop.pop(old)[1].abandon()
            client = self._client if self._client is not None else self._factory()  # type: ignore[misc]
            bound = self._per_loop[loop] = (client, AsyncWire(client))
        return bound

    @property
    def _wire(self) -> AsyncWire:
        return self._bound()[1]

    @property
    def pipelines(self) -> bool:
        return self._wire.lean and not self._cluster

    @property
    def client(self) -> Any:
        return self._bound()[0]

    async def _script(self, op: str, call: _Call) -> Any:
        script, keys, args = call
        wire = self._wire
        try:
            try:
                return await wire("EVALSHA", script.sha, len(keys), *keys, *args)
            except self._no_script:
                return await wire("EVAL", script.source, len(keys), *keys, *args)
        except self._errors as exc:
            raise _fail(op, self.name, exc) from exc

    async def _command(self, op: str, *args: Any) -> Any:
        try:
            return await self._wire(*args)
        except self._errors as exc:
            raise _fail(op, self.name, exc) from exc

    async def cache_get(self, ns: str, key: str) -> CacheRead:
        return _cache_read(await self._command("cache_get", *_cache_get(ns, key)))

    async def cache_set(self, ns: str, key: str, value: bytes, ttl_ms: int | None, gen: str) -> bool:
        return int(await self._script("cache_set", _cache_set(ns, key, value, ttl_ms, gen))) == 1

    async def cache_delete(self, ns: str, key: str) -> bool:
        return int(await self._command("cache_delete", "DEL", _tag(ns) + ":" + key)) == 1

    async def cache_clear(self, ns: str) -> None:
        await self._command("cache_clear", "INCR", _tag(ns) + ":gen")

    async def cache_clear_fills(self, ns: str) -> None:
        await self._command("cache_clear_fills", "INCR", _tag(ns) + ":fill")

    async def lock_acquire(self, key: str, token: str, ttl_ms: int | None, waiting: float) -> bool:
        if waiting:
            return int(await self._script("lock_acquire", _lock_acquire(key, token, ttl_ms, waiting))) == 1
        return bool(await self._command("lock_acquire", *_set_nx(key, token, ttl_ms)))

    async def lock_release(self, key: str, token: str) -> bool:
        return int(await self._script("lock_release", _lock_release(key, token, False))) == 1

    async def lock_force_release(self, key: str) -> bool:
        return int(await self._script("lock_force_release", _lock_release(key, "", True))) == 1

    async def lock_extend(self, key: str, token: str, ttl_ms: int | None) -> bool:
        return int(await self._script("lock_extend", (LOCK_EXTEND, (_tag(key),), (token, ttl_ms or 0)))) == 1

    async def lock_holder(self, key: str) -> str | None:
        raw = await self._command("lock_holder", "GET", _tag(key))
        return None if raw is None else bytes(raw).decode()

    async def pool_acquire(
        self, key: str, token: str, max_size: int, ttl_ms: int | None, waiting: float
    ) -> bool:
        return (
            int(await self._script("pool_acquire", _pool_acquire(key, token, max_size, ttl_ms, waiting))) == 1
        )

    async def pool_release(self, key: str, token: str) -> bool:
        return int(await self._script("pool_release", _pool_release(key, token))) == 1

    async def pool_extend(self, key: str, token: str, ttl_ms: int) -> bool:
        return int(await self._script("pool_extend", (POOL_EXTEND, (_tag(key),), (token, ttl_ms)))) == 1

    async def pool_size(self, key: str) -> int:
        return int(await self._script("pool_size", (POOL_SIZE, (_tag(key),), ())))

    async def rate_acquire(
        self, key: str, limits: Sequence[RateLimit], cost: int, consume: bool
    ) -> RateCheck:
        return _rate_check(await self._script("rate_acquire", _rate_acquire(key, limits, cost, consume)))

    async def rate_acquire_bounds(
        self, bounds: Sequence[tuple[str, Sequence[RateLimit]]], cost: int, consume: bool
    ) -> RateCheck:
        if not self._cluster:
            call, owner = _rate_acquire_bounds(bounds, cost, consume)
            return _rate_check(await self._script("rate_acquire", call), owner)
        check: RateCheck | None = None
        for index, (key, limits) in enumerate(bounds):
            check = _in_turn(await self.rate_acquire(key, limits, cost, consume), index, check)
            if not check.allowed:
                break
        assert check is not None, "rate_acquire_bounds: no limiter given"
        return check

    async def wait(self, key: str, timeout_s: float) -> bool:
        try:
            return await self._wire("BLPOP", _tag(key) + ":wake", _blpop_timeout(timeout_s)) is not None
        except self._errors:
            return False

    # -- waiting rooms (contract: base.py) ---------------------------------------------------
    supports_waiting_room = True

    @property
    def _cluster(self) -> bool:
        return _is_cluster(self.client)

    def _registry(self, registry: str) -> str | None:
        return None if self._cluster else registry

    async def _listed(self, key: str, registry: str, reply: _RoomReply) -> _RoomReply:
        if self._cluster and reply.parked_new:
            try:
                await self._command("room_park", "ZINCRBY", _tag(registry), 1, key)
            except CachifyBackendError as exc:
                _unlisted(key, exc)
        return reply

    async def room_acquire(
        self,
        key: str,
        token: str,
        entry_id: str,
        payload: bytes,
        room: RoomSettings,
        reservation: str | None = None,
    ) -> RoomAdmission:
        call = _room_acquire(key, token, entry_id, payload, room, reservation, self._registry(room.registry))
        reply = await self._listed(key, room.registry, _room_reply(await self._script("room_acquire", call)))
        return RoomAdmission(_ROOM_STATUS[reply.code], reply.handed)

    async def room_release(
        self, key: str, token: str, room: RoomSettings, claimed: str | None = None
    ) -> RoomRelease:
        call = _room_release(key, token, room, claimed, self._registry(room.registry))
        reply = _room_reply(await self._script("room_release", call))
        return RoomRelease(reply.code == 1, reply.handed)

    async def room_cancel(self, key: str, entry_id: str, room: RoomSettings) -> RoomRelease:
        call = _room_cancel(key, entry_id, room, self._registry(room.registry))
        reply = _room_reply(await self._script("room_cancel", call))
        return RoomRelease(reply.code == 1, reply.handed)

    async def room_park_until(
        self, key: str, entry_id: str, payload: bytes, delay_ms: int, room: RoomSettings, spacing_ms: int = 0
    ) -> RoomAdmission:
        call = _room_park_until(
            key, entry_id, payload, delay_ms, room, spacing_ms, self._registry(room.registry)
        )
        reply = await self._listed(
            key, room.registry, _room_reply(await self._script("room_park_until", call))
        )
        return RoomAdmission(_ROOM_STATUS[reply.code], reply.handed)

    async def room_arrive(
        self, key: str, token: str, entry_id: str, payload: bytes, room: RoomSettings, reservation: str
    ) -> RoomStatus:
        call = _room_arrive(key, token, entry_id, payload, room, reservation, self._registry(room.registry))
        reply = await self._listed(key, room.registry, _room_reply(await self._script("room_arrive", call)))
        return _ROOM_STATUS[reply.code]

    async def room_sweep(self, key: str, registry: str, limit: int) -> RoomSweep:
        call = _room_sweep(key, limit, self._registry(registry))
        raw = await self._script("room_sweep", call)
        reply = _room_reply(raw)
        if self._cluster and reply.held == 0:
            try:
                await self._unlist(key, registry)
            except CachifyBackendError as exc:
                logger.warning("cachify: could not take drained room %s off the registry: %s", key, exc)
        return RoomSweep(reply.handed, reply.held, _next_due(raw))

    async def _unlist(self, key: str, registry: str) -> None:
        version = await self._command("room_sweep", "ZSCORE", _tag(registry), key)
        if version is None:
            return
        stats = await self.room_stats(key)
        if not (stats.parked or stats.handed or stats.timed or stats.watching):
            await self._script("room_sweep", (ROOMS_UNLIST, (_tag(registry),), (key, _text(version))))

    async def room_stats(self, key: str) -> RoomStats:
        return _room_stats_reply(await self._script("room_stats", _room_stats(key)))

    async def batch(self, calls: Sequence[Call]) -> list[Any]:
        wire = self._wire
        requests = [_request(call) for call in calls] if wire.lean and not self._cluster else None
        if requests is None or any(r is None for r in requests) or len(calls) < 2:
            return await acall_each(self, calls)
        ready = [r for r in requests if r is not None]
        op = "batch of " + ", ".join(call.name for call in calls)
        try:
            replies = await wire.pipeline([_wire_command(script, body) for script, body, _ in ready])
            for i, reply in enumerate(replies):
                if isinstance(reply, self._no_script):
                    script, body, _ = ready[i]
                    replies[i] = await wire(*_wire_command(script, body, source=True))
        except self._errors as exc:
            raise _fail(op, self.name, exc) from exc
        return _parsed(op, self.name, ready, replies)

    async def rooms(self, registry: str) -> tuple[str, ...]:
        return _rooms_reply(await self._command("rooms", "ZRANGE", _tag(registry), 0, -1))


# -- building clients ------------------------------------------------------------------------
def is_sync_redis_client(client: object) -> bool:
    try:
        import redis
        from redis.cluster import RedisCluster
    except ImportError:
        return False
    return isinstance(client, (redis.Redis, RedisCluster))


def is_async_redis_client(client: object) -> bool:
    try:
        import redis.asyncio as aredis
        from redis.asyncio.cluster import RedisCluster
    except ImportError:
        return False
    return isinstance(client, (aredis.Redis, RedisCluster))


def _require_redis() -> None:
    try:
        import redis  # noqa: F401
    except ImportError:
        raise CachifyInitError(
            "the Redis backend needs redis-py: pip install redis (or the 'redis' extra of cachify-tasks)"
        ) from None


def clients_from_url(url: str) -> tuple[Any, Callable[[], Any]]:
    """A sync client and an asyncio-client factory for one Redis URL (binary-safe, bounded timeouts)."""
    _require_redis()
    import redis
    import redis.asyncio as aredis

    options: dict[str, Any] = {
        "socket_timeout": DEFAULT_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": DEFAULT_SOCKET_TIMEOUT_S,
    }
    sync_client = redis.Redis.from_url(url, **options)

    def make_async() -> Any:
        return aredis.Redis.from_url(url, **options)

    return sync_client, make_async


#: Connection settings that mean the same to redis-py's sync and asyncio connections.
_PORTABLE = (
    "host", "port", "db", "username", "password", "socket_timeout", "socket_connect_timeout",
    "socket_keepalive", "client_name", "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs",
    "ssl_check_hostname", "ssl_ca_data", "ssl_password", "ssl_min_version", "credential_provider",
    "health_check_interval",
)  # fmt: skip


def async_twin(sync_client: Any) -> Callable[[], Any]:
    """A factory of asyncio clients on the same server as ``sync_client``."""
    import redis.asyncio as aredis

    if not hasattr(sync_client, "connection_pool"):  # cluster
        from redis.asyncio.cluster import ClusterNode
        from redis.asyncio.cluster import RedisCluster as AsyncCluster

        nodes = [ClusterNode(n.host, n.port) for n in _cluster_nodes(sync_client)]
        kwargs = {k: v for k, v in sync_client.get_connection_kwargs().items() if k in _PORTABLE}
        kwargs.pop("host", None)
        kwargs.pop("port", None)
        kwargs.pop("db", None)
        return lambda: AsyncCluster(startup_nodes=nodes, **kwargs)
    pool = sync_client.connection_pool
    src = pool.connection_kwargs
    kwargs = {k: v for k, v in src.items() if k in _PORTABLE}
    if "path" in src:
        kwargs["unix_socket_path"] = src["path"]
    if "SSL" in pool.connection_class.__name__:
        kwargs["ssl"] = True
    return lambda: aredis.Redis(**kwargs)


def sync_twin(async_client: Any) -> Any:
    """A sync client on the same server as ``async_client``."""
    import redis

    if not hasattr(async_client, "connection_pool"):  # cluster
        from redis.cluster import ClusterNode, RedisCluster

        nodes = [ClusterNode(n.host, n.port) for n in _cluster_nodes(async_client)]  # type: ignore[no-untyped-call]
        kwargs = {k: v for k, v in async_client.get_connection_kwargs().items() if k in _PORTABLE}
        for k in ("host", "port", "db"):
            kwargs.pop(k, None)
        return RedisCluster(startup_nodes=nodes, **kwargs)
    pool = async_client.connection_pool
    src = pool.connection_kwargs
    kwargs = {k: v for k, v in src.items() if k in _PORTABLE}
    if "path" in src:
        kwargs["unix_socket_path"] = src["path"]
    if "SSL" in pool.connection_class.__name__:
        kwargs["ssl"] = True
    return redis.Redis(**kwargs)
