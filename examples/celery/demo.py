"""Shows what the task options do, against the worker started as in README.md (and shop.py).

python demo.py
"""

from __future__ import annotations

import time
from typing import Any

import redis
from shop import build_report, cachify, charge, check_order, database, geocode


def forget_previous_runs() -> None:
    """The demo's holds, slots and cache entries live under the prefix ``shop-demo-`` (inside
    the ``{...}`` hash tag that starts every cachify key on Redis)."""
    client: Any = redis.Redis.from_url(database(0))
    for key in client.scan_iter(match=f"{{{cachify.prefix}*", count=1000):
        client.delete(key)
    client.close()


def dedup() -> None:
    print("== once_key: 5 sends of check_order(42) while one is queued or running")
    results = [check_order.delay(42) for _ in range(5)]
    print("   task ids:", sorted({r.id for r in results}), "(one task)")
    print("   result:  ", results[0].get(timeout=30))
    again = check_order.delay(42)
    again.get(timeout=30)  # let it finish: the pool demo below wants all 4 worker children
    print("   sent again after it finished:", "a new task" if again.id != results[0].id else "the same task")


def pool() -> None:
    print("== pool_key: 12 charges, pool_max_size=3")
    results = [charge.delay(f"cus_{i}", 100 * i) for i in range(12)]
    runs = [r.get(timeout=60) for r in results]
    events = sorted([(run["started"], 1) for run in runs] + [(run["ended"], -1) for run in runs])
    level = most = 0
    for _, step in events:
        level += step
        most = max(most, level)
    requeues = sum(run["requeues"] for run in runs)
    print(f"   {len(runs)} charges ran, at most {most} at once, on 4 worker children")
    print(
        f"   charges that found the pool full, waited in its waiting room and were handed a slot: "
        f"{sum(run['requeues'] > 0 for run in runs)}"
    )
    print(f"   passes back through the broker in all: {requeues} (one per wait)")
    span = max(run["ended"] for run in runs) - min(run["started"] for run in runs)
    print(f"   first start to last end: {span:.1f}s (at best 12 x 0.5 s / 3 = 2.0 s)")


def cache() -> None:
    print("== cache_key: build_report twice for one day")
    for attempt in ("first", "second"):
        began = time.perf_counter()
        value = build_report.delay("2024-05-01").get(timeout=30)
        print(f"   {attempt}: {time.perf_counter() - began:.3f}s -> {value}")


def stacked() -> None:
    print("== @pooled(max_size=1) stacked under @app.task: 3 geocodes at once")
    results = [geocode.delay(f"{n} rue de Rivoli") for n in (1, 2, 3)]
    for result in results:
        print("  ", result.get(timeout=60))


if __name__ == "__main__":
    forget_previous_runs()
    dedup()
    pool()
    cache()
    stacked()
