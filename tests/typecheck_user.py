"""A user's module, checked with ``mypy --strict`` against the *installed* packages (not run).

CI (scripts/newcomer_smoke.py) copies it into an empty directory of a fresh virtualenv made
with the README's install command and runs ``mypy --strict typecheck_user.py`` there, so it
passes only if all four packages are found by mypy (a static import path, not an import hook)
and ship ``py.typed``. It imports nothing untyped (celery, dramatiq and taskiq ship no types or
partial ones): a user's own project decides how to treat those.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cachify_celery import CachifyTask, install
from cachify_core import (
    Cachify,
    CachifyLockNotOwnedError,
    cached,
    init_cachify,
    lock,
    once,
    pool,
    pooled,
)
from cachify_dramatiq import CachifyDuplicateMessage
from cachify_dramatiq import CachifyMiddleware as DramatiqMiddleware
from cachify_taskiq import REQUEUES_LABEL, CachifyDuplicateError
from cachify_taskiq import CachifyMiddleware as TaskiqMiddleware

if TYPE_CHECKING:
    from typing_extensions import assert_type

cachify: Cachify = init_cachify(is_global=False, prefix="typecheck-")


@cached(key="user-{user_id}", ttl=60)
def get_user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


@cachify.cached(key="rate-{currency}")
async def exchange_rate(currency: str) -> float:
    return 1.0


@once(key="sync-{order_id}")
def sync_order(order_id: int) -> str:
    return f"order {order_id}"


@pooled(key="erp", max_size=4)
async def call_erp(order_id: int) -> bytes:
    return str(order_id).encode()


async def check() -> None:
    assert_type(get_user(1), dict[str, int])
    assert_type(await exchange_rate("EUR"), float)
    assert_type(await call_erp(7), bytes)
    get_user.clear_cache()
    with lock("nightly-report", nowait=False, timeout=10):
        pass
    with pool("stripe", max_size=5):
        pass
    try:
        sync_order.release(1)
    except CachifyLockNotOwnedError as exc:
        print(exc)

    base: type[CachifyTask] = install(object(), cachify=cachify)
    dramatiq_middleware: DramatiqMiddleware = DramatiqMiddleware(cachify)
    taskiq_middleware: TaskiqMiddleware = TaskiqMiddleware(cachify)
    label: str = REQUEUES_LABEL
    errors: tuple[type[Exception], ...] = (CachifyDuplicateMessage, CachifyDuplicateError)
    print(base, dramatiq_middleware, taskiq_middleware, label, errors)
