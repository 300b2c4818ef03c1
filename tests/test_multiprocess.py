"""Locks, pools and ``@once`` across real OS processes on a real Redis.

Workers (in :mod:`tests.mp_workers`) are started with the "spawn" context, so each one is a
fresh interpreter that builds its own ``Cachify`` from the URL: nothing is shared with the
parent but Redis. Every child is joined with a deadline and terminated if it overruns.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.context import SpawnProcess
from typing import Any

import pytest
import redis

from cachify_core import CachifyLockError, CachifyPoolFullError, init_cachify

from . import mp_workers

CTX = multiprocessing.get_context("spawn")

#: Wall-clock bound on any one test's children.
JOIN_TIMEOUT_S = 25.0


@pytest.fixture
def prefix() -> str:
    return f"MP{uuid.uuid4().hex[:8]}-"


@pytest.fixture
def raw(flushed_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(flushed_redis_url, socket_timeout=10)
    try:
        yield client
    finally:
        client.close()


def start_all(target: Callable[..., None], arg_lists: list[tuple[Any, ...]]) -> list[SpawnProcess]:
    procs = [CTX.Process(target=target, args=args, daemon=True) for args in arg_lists]
    for p in procs:
        p.start()
    return procs


def join_all(procs: list[SpawnProcess], raw: redis.Redis, prefix: str) -> None:
    """Join every child by one shared deadline; terminate stragglers; fail on any child error."""
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    try:
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
    finally:
        stragglers = [p for p in procs if p.is_alive()]
        for p in stragglers:
            p.terminate()
        for p in stragglers:
            p.join(5)
    errors = [e.decode() for e in raw.lrange(prefix + "errors", 0, -1)]
    assert not errors, "worker raised:\n" + "\n".join(errors)
    assert not stragglers, f"{len(stragglers)} worker(s) overran {JOIN_TIMEOUT_S}s and were terminated"
    assert [p.exitcode for p in procs] == [0] * len(procs)


def test_lock_is_mutually_exclusive_across_processes(
    flushed_redis_url: str, raw: redis.Redis, prefix: str
) -> None:
    n, k = 4, 25
    barrier = CTX.Barrier(n)
    procs = start_all(mp_workers.lock_worker, [(flushed_redis_url, prefix, i, k, barrier) for i in range(n)])
    join_all(procs, raw, prefix)

    violations = [v.decode() for v in raw.lrange(prefix + "violations", 0, -1)]
    assert violations == []
    # a lost update in the non-atomic GET/SET would show here
    assert int(raw.get(prefix + "unsafe") or 0) == n * k
    intervals = sorted(
        tuple(int(x) for x in item.decode().split(":")) for item in raw.lrange(prefix + "intervals", 0, -1)
    )
    assert len(intervals) == n * k
    assert {w for _, _, w in intervals} == set(range(n))
    for (s1, e1, w1), (s2, e2, w2) in itertools.pairwise(intervals):
        assert s1 <= e1 <= s2 <= e2, f"sections overlap: worker {w1} [{s1},{e1}] and worker {w2} [{s2},{e2}]"
    # every worker released: the lock is free again
    assert not init_cachify(url=flushed_redis_url, is_global=False, prefix=prefix).lock("shared").is_locked()


def test_pool_caps_concurrent_holders_across_processes(
    flushed_redis_url: str, raw: redis.Redis, prefix: str
) -> None:
    n, k, max_size = 6, 15, 3
    barrier = CTX.Barrier(n)
    procs = start_all(
        mp_workers.pool_worker, [(flushed_redis_url, prefix, i, k, max_size, barrier) for i in range(n)]
    )
    join_all(procs, raw, prefix)

    observed = [int(x) for x in raw.lrange(prefix + "observed", 0, -1)]
    assert len(observed) == n * k
    assert int(raw.get(prefix + "done") or 0) == n * k
    assert max(observed) <= max_size, f"more than {max_size} holders at once: {max(observed)}"
    assert max(observed) == max_size, f"the pool never filled (max {max(observed)}): it admits too few"
    assert init_cachify(url=flushed_redis_url, is_global=False, prefix=prefix).pool("p", max_size).size() == 0


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_holder_frees_lock_and_slot_by_expiry(
    flushed_redis_url: str, raw: redis.Redis, prefix: str
) -> None:
    ttl_s, margin_s = 1.0, 1.0
    c = init_cachify(url=flushed_redis_url, is_global=False, prefix=prefix, lock_poll_interval=0.05)
    holding = CTX.Event()
    (child,) = start_all(mp_workers.crash_holder, [(flushed_redis_url, prefix, holding)])
    try:
        assert holding.wait(15), (
            f"the child never held the lock and the slot: {raw.lrange(prefix + 'errors', 0, -1)}"
        )
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        child.join(5)
        assert child.exitcode == -signal.SIGKILL

        # the dead holder's lock and slot outlive it: nothing released them
        assert c.lock("crash").is_locked()
        assert c.pool("crash", 1).size() == 1
        with pytest.raises(CachifyLockError), c.lock("crash"):
            pass
        with pytest.raises(CachifyPoolFullError), c.pool("crash", 1):
            pass

        # ... until their TTL runs out, and a waiter gets them then
        with c.lock("crash", nowait=False, timeout=5), c.pool("crash", 1, timeout=5):
            elapsed = time.monotonic() - killed_at
            assert c.pool("crash", 1).size() == 1
        assert elapsed < ttl_s + margin_s, f"took {elapsed:.2f}s after the kill (TTL {ttl_s}s)"
        assert not raw.lrange(prefix + "errors", 0, -1)
    finally:
        if child.is_alive():
            child.kill()
            child.join(5)


def test_once_runs_once_across_processes(flushed_redis_url: str, raw: redis.Redis, prefix: str) -> None:
    n = 4
    barrier = CTX.Barrier(n)
    procs = start_all(mp_workers.once_worker, [(flushed_redis_url, prefix, i, barrier) for i in range(n)])
    join_all(procs, raw, prefix)

    assert int(raw.get(prefix + "runs") or 0) == 1
    results = sorted(r.decode() for r in raw.lrange(prefix + "results", 0, -1))
    assert results == ["LOCKED"] * (n - 1) + ["RAN"]
