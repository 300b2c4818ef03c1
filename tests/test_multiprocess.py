"""Locks, pools and ``@once`` across real OS processes on a real Redis.

Workers (in :mod:`tests.mp_workers`) are started with the "spawn" context, so each one is a
fresh interpreter that builds its own ``Cachify`` from the URL: nothing is shared with the
parent but Redis. Every child is joined with a deadline and terminated if it overruns.
"""

from __future__ import annotations

import itertools
import signal
import uuid

import pytest
import redis

from cachify_core import CachifyLockError, CachifyPoolFullError, init_cachify

from . import mp_workers
from .support import CTX, assert_crash_hold_freed_by_expiry, join_all, reaped, sigkill, start_all

#: Wall-clock bound on any one test's children.
JOIN_TIMEOUT_S = 25.0


@pytest.fixture
def prefix() -> str:
    return f"MP{uuid.uuid4().hex[:8]}-"


def test_lock_is_mutually_exclusive_across_processes(
    flushed_redis_url: str, raw: redis.Redis, prefix: str
) -> None:
    n, k = 4, 25
    barrier = CTX.Barrier(n)
    procs = start_all(mp_workers.lock_worker, [(flushed_redis_url, prefix, i, k, barrier) for i in range(n)])
    join_all(procs, raw, prefix, JOIN_TIMEOUT_S)

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
    join_all(procs, raw, prefix, JOIN_TIMEOUT_S)

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
    with reaped(child):
        assert holding.wait(15), (
            f"the child never held the lock and the slot: {raw.lrange(prefix + 'errors', 0, -1)}"
        )
        killed_at = sigkill(child)

        # the dead holder's lock and slot outlive it: nothing released them
        assert c.lock("crash").is_locked()
        assert c.pool("crash", 1).size() == 1
        with pytest.raises(CachifyLockError), c.lock("crash"):
            pass
        with pytest.raises(CachifyPoolFullError), c.pool("crash", 1):
            pass

        # ... until their TTL runs out, and a waiter gets them then
        assert_crash_hold_freed_by_expiry(c, raw, prefix, killed_at, ttl_s, margin_s)


def test_once_runs_once_across_processes(flushed_redis_url: str, raw: redis.Redis, prefix: str) -> None:
    n = 4
    barrier = CTX.Barrier(n)
    procs = start_all(mp_workers.once_worker, [(flushed_redis_url, prefix, i, barrier) for i in range(n)])
    join_all(procs, raw, prefix, JOIN_TIMEOUT_S)

    assert int(raw.get(prefix + "runs") or 0) == 1
    results = sorted(r.decode() for r in raw.lrange(prefix + "results", 0, -1))
    assert results == ["LOCKED"] * (n - 1) + ["RAN"]
