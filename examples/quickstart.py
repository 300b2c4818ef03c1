"""cachify in one file: every core feature on the embedded in-memory backend.

    python3 examples/quickstart.py

No server and no install needed (the core has no dependencies). Point it at Redis by
changing one line: ``init_cachify(url="redis://localhost:6379/0")``.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from datetime import date
from pathlib import Path

# Run from a fresh clone without installing: make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cachify_core import (
    CachifyLockError,
    CachifyLockNotOwnedError,
    CachifyPoolFullError,
    cached,
    get_cachify,
    init_cachify,
    lock,
    once,
    pool,
    pooled,
)

init_cachify(default_cache_ttl=60, lock_poll_interval=1.0)


def section(title: str) -> None:
    print(f"\n== {title}")


# -- @cached ---------------------------------------------------------------------------------
calls: list[tuple[int, int]] = []


@cached(key="sum-{a}-{b}")
def add(a: int, b: int) -> int:
    calls.append((a, b))
    return a + b


@cached(key="maybe-{user_id}", ttl=None)
def find_user(user_id: int) -> dict[str, object] | None:
    calls.append((user_id, -1))
    return None  # "no such user" is an answer worth caching too


def demo_cached() -> None:
    section("@cached: compute once, then serve from the cache")
    print("add(2, 3) =", add(2, 3), "| add(2, 3) =", add(2, 3), f"| function ran {len(calls)}x")
    add.reset(2, 3)
    print("after add.reset(2, 3): add(2, 3) =", add(2, 3), f"| function ran {len(calls)}x")
    find_user(7)
    find_user(7)
    print(
        f"find_user(7) returned None twice, function ran {sum(1 for c in calls if c[1] == -1)}x (None is cached)"
    )


# -- lock ------------------------------------------------------------------------------------
def demo_lock() -> None:
    section("lock: one holder at a time, owner-checked")
    with lock("report"):
        try:
            with lock("report"):
                pass
        except CachifyLockError as exc:
            print("second holder refused:", exc)
    stranger = lock("report")
    with lock("report"):
        try:
            stranger.release()
        except CachifyLockNotOwnedError:
            print("a caller that does not hold the lock cannot release it")
    # A waiter is woken by the release itself, not by its poll (set to 1 s above).
    waiter_got_it = threading.Event()
    handed_over_at: list[float] = []

    def waiter() -> None:
        with lock("report", nowait=False, timeout=5):
            handed_over_at.append(time.perf_counter())
            waiter_got_it.set()

    holder = lock("report")
    holder.__enter__()
    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.05)
    released_at = time.perf_counter()
    holder.__exit__(None, None, None)
    waiter_got_it.wait(5)
    thread.join(5)
    print(
        f"hand-over to a waiting thread took {(handed_over_at[0] - released_at) * 1000:.2f} ms (poll is 1000 ms)"
    )


# -- @once -----------------------------------------------------------------------------------
@once(key="transactions-{for_date.year}-{for_date.month}", return_on_locked="already running")
def create_transactions(for_date: date) -> str:
    time.sleep(0.2)
    return f"created for {for_date:%Y-%m}"


def demo_once() -> None:
    section("@once: overlapping runs of the same key are skipped")
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(create_transactions(date(2026, 11, 1))))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    for r in sorted(results):
        print("  ", r)


# -- pool / @pooled --------------------------------------------------------------------------
@pooled(key="api-{tenant}", max_size=2, on_full=lambda tenant, n: f"{tenant} busy, try later")
async def call_api(tenant: str, n: int) -> str:
    await asyncio.sleep(0.1)
    return f"{tenant} call {n} done"


async def demo_pool() -> None:
    section("pool / @pooled: at most max_size at once")
    results = await asyncio.gather(*(call_api("acme", n) for n in range(4)))
    for r in results:
        print("  ", r)
    slots = pool("db", max_size=1)
    async with slots:
        try:
            async with pool("db", max_size=1):
                pass
        except CachifyPoolFullError as exc:
            print("  ", exc)
    async with pool("db", max_size=1, timeout=2):
        print("   with timeout=, a full pool is waited for; slots in use now:", await slots.asize())


def main() -> None:
    demo_cached()
    demo_lock()
    demo_once()
    asyncio.run(demo_pool())
    backend = get_cachify().sync_backend.name  # "memory", or e.g. "redis localhost:6379/0"
    where = "the embedded in-memory backend" if backend == "memory" else backend
    print(f"\nAll features ran on {where}.")


if __name__ == "__main__":
    main()
