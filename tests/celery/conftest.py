"""Fixtures of the Celery integration's tests: one real Redis, four databases.

The broker (db 1), the result backend (db 2), cachify (db 0) and the tests' own observations
(db 3: what tasks saw, written from inside workers, read by the test from outside) live on the
server ``redis_url`` gives (a private one unless ``REDIS_URL`` is set). No Redis: skipped
locally, an error in CI.
"""

from __future__ import annotations

import contextlib
import gc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cachify_core import Cachify, init_cachify

from ..servers import unavailable
from ..support import as_global
from .support import RedisDbs


@pytest.fixture(scope="session")
def redis_dbs(redis_url: str) -> RedisDbs:
    import redis

    try:
        with contextlib.closing(redis.Redis.from_url(redis_url, socket_timeout=5)) as client:
            client.ping()
    except redis.exceptions.RedisError as exc:
        unavailable(f"Redis at {redis_url} does not answer: {exc}")
    return RedisDbs(redis_url)


@pytest.fixture
def observed(redis_dbs: RedisDbs) -> Iterator[Any]:
    """A client on the observations database, flushed around the test (with cachify's)."""
    import redis

    redis_dbs.flush(redis_dbs.cachify, redis_dbs.observe)
    client = redis.Redis.from_url(redis_dbs.observe)
    try:
        yield client
    finally:
        # Celery's AsyncResult.__del__ unsubscribes from the result backend: collected after the
        # session's Redis has stopped, each would retry its connection for 20 seconds.
        gc.collect()
        client.close()
        redis_dbs.flush(redis_dbs.cachify, redis_dbs.observe)


@pytest.fixture
def cachify_global(redis_dbs: RedisDbs, observed: Any) -> Iterator[Cachify]:
    """A fresh instance on the cachify database, installed as the global one."""
    instance = init_cachify(url=redis_dbs.cachify, prefix=f"T{uuid.uuid4().hex[:8]}-", is_global=False)
    with as_global(instance):
        yield instance
