"""Send tasks to the workers of ``app.py`` and print what happens (see app.py for the commands)."""

from __future__ import annotations

import asyncio
import time

from app import broker, exchange_rate, sync_order


def peak(runs: list[dict[str, float]]) -> int:
    """Most runs in progress at one moment (an end and a start at the same instant do not overlap)."""
    events = sorted([(r["started"], 1) for r in runs] + [(r["ended"], -1) for r in runs])
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def waves(runs: list[dict[str, float]], sent: float) -> list[tuple[int, list[int]]]:
    """The orders that started in each whole second after ``sent``."""
    by_second: dict[int, list[int]] = {}
    for r in runs:
        by_second.setdefault(int(r["started"] - sent), []).append(int(r["order_id"]))
    return sorted(by_second.items())


async def main() -> None:
    await broker.startup()
    try:
        print("1. five kiq() of the same order: one task, every caller gets its handle")
        handles = [await sync_order.kiq(42) for _ in range(5)]
        print("   distinct task ids:", len({h.task_id for h in handles}))
        first = (await handles[-1].wait_result(timeout=30)).return_value
        print("   result: order", first["order_id"], "synced")

        print("2. twelve orders through a pool of 4: each takes 1 s, so at best 3 s in all")
        sent = time.time()
        handles = [await sync_order.kiq(order_id) for order_id in range(100, 112)]
        runs = [(await h.wait_result(check_interval=0.02, timeout=60)).return_value for h in handles]
        print(f"   most at once: {peak(runs)} (pool_max_size=4), on {len({r['pid'] for r in runs})} workers")
        for second, orders in waves(runs, sent):
            print(f"   started {second}-{second + 1} s after sending: {len(orders)} orders")
        print(f"   all done {max(r['ended'] for r in runs) - sent:.1f} s after sending")

        print("3. a cached sync task: the second call does not run")
        for _ in range(2):
            started = time.monotonic()
            result = await (await exchange_rate.kiq("EUR")).wait_result(check_interval=0.02, timeout=30)
            print(f"   EUR = {result.return_value} in {time.monotonic() - started:.2f}s")
    finally:
        await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
