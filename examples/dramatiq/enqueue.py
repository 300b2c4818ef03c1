"""Sends messages to the example app and prints what cachify did with them.

Start the workers first (``dramatiq app --processes 2 --threads 2`` in this directory), then::

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
    print("duplicate's result:", duplicate.get_result(block=True, timeout=RESULT_TIMEOUT_MS))

    # Concurrency cap: 12 orders, 0.5 s each, at most 4 at once -> about 1.5 s, not 0.5 s.
    start = time.monotonic()
    handles = [sync_order.send(order_id) for order_id in range(100, 112)]
    for handle in handles:
        handle.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    print(f"12 orders through a pool of 4 in {time.monotonic() - start:.1f} s")

    # Result caching: the first message computes (about 1 s); the next one is a cache hit.
    for attempt in ("miss", "hit"):
        start = time.monotonic()
        report = daily_report.send("2024-05-01").get_result(block=True, timeout=RESULT_TIMEOUT_MS)
        print(f"report ({attempt}) in {time.monotonic() - start:.2f} s: {report}")

    print(refresh_profile.send(7).get_result(block=True, timeout=RESULT_TIMEOUT_MS))


if __name__ == "__main__":
    main()
