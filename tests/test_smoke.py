import asyncio

import pytest

from cachify_core import Cachify, CachifyLockError


def test_lock_conflict(cachify: Cachify) -> None:
    with cachify.lock("a"), pytest.raises(CachifyLockError, match="a is already locked!"), cachify.lock("a"):
        pass


async def test_async_lock_handover(cachify: Cachify) -> None:
    lk = cachify.lock("h", nowait=False, timeout=5)
    async with lk:
        waiter = asyncio.create_task(lk.__aenter__())
        await asyncio.sleep(0.05)
        assert not waiter.done()
    await asyncio.wait_for(waiter, 2)
    await lk.__aexit__(None, None, None)
