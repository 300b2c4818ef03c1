"""Sends messages to the example app and prints what cachify did with them.

Start the workers first (``dramatiq app --processes 2 --threads 4`` in this directory), then::

    python enqueue.py
"""

from __future__ import annotations

import time

from app import daily_report, refresh_profile, sync_order

RESULT_TIMEOUT_MS = 30_000


def main() -> None:
    # Deduplication: the duplicate is not enqueued; its handle is the first message's.
    first = sync_order.send(42)
    duplicate = sync_order.send(42)
    print(f"same message: {first.message_id == duplicate.message_id}  ({first.message_id})")
    print(
        "duplicate's result: order", duplicate.get_result(block=True, timeout=RESULT_TIMEOUT_MS)["order_id"]
    )

    # Concurrency cap: 12 orders, 0.5 s each, on 8 worker threads but at most 4 at once, so at
    # best 1.5 s; the threads that find the pool full requeue their message.
    handles = [sync_order.send(order_id) for order_id in range(100, 112)]
    runs = [handle.get_result(block=True, timeout=RESULT_TIMEOUT_MS) for handle in handles]
    events = sorted([(r["started"], 1) for r in runs] + [(r["ended"], -1) for r in runs])
    level = most = 0
    for _, step in events:
        level += step
        most = max(most, level)
    span = max(r["ended"] for r in runs) - min(r["started"] for r in runs)
    processes = len({r["pid"] for r in runs})
    print(
        f"12 orders through a pool of 4 on 8 worker threads: at most {most} at once ({processes} worker process{'es' if processes != 1 else ''})"
    )
    requeued = sum(r["requeues"] > 0 for r in runs)
    print(
        f"  {requeued} found the pool full and came back later ({sum(r['requeues'] for r in runs)} requeues)"
    )
    print(f"  first start to last end: {span:.1f} s (at best 1.5 s)")

    # Result caching: the first message computes (about 1 s; within 10 minutes of a previous
    # run it is a hit too); the second one is a cache hit.
    for attempt in ("first", "second"):
        start = time.monotonic()
        report = daily_report.send("2024-05-01").get_result(block=True, timeout=RESULT_TIMEOUT_MS)
        print(f"report ({attempt}) in {time.monotonic() - start:.2f} s: {report}")

    print(refresh_profile.send(7).get_result(block=True, timeout=RESULT_TIMEOUT_MS))


if __name__ == "__main__":
    main()
