"""Send tasks to the workers of ``app.py`` and print what happens (see app.py for the commands)."""

from __future__ import annotations

import asyncio
import time

from app import broker, exchange_rate, sync_order


async def main() -> None:
    await broker.startup()
    try:
        print("1. five kiq() of the same order: one task, every caller gets its handle")
        handles = [await sync_order.kiq(42) for _ in range(5)]
        print("   task ids:", {h.task_id for h in handles})
        print("   result:  ", (await handles[-1].wait_result(timeout=30)).return_value)

        print("2. twelve orders through a pool of 4: three waves of about a second")
        started = time.monotonic()
        handles = [await sync_order.kiq(order_id) for order_id in range(100, 112)]
        for handle in handles:
            print("  ", (await handle.wait_result(timeout=60)).return_value)
        print(f"   all done in {time.monotonic() - started:.1f}s")

        print("3. a cached sync task: the second call does not run")
        for _ in range(2):
            started = time.monotonic()
            result = await (await exchange_rate.kiq("EUR")).wait_result(check_interval=0.02, timeout=30)
            print(f"   EUR = {result.return_value} in {time.monotonic() - started:.2f}s")
    finally:
        await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
