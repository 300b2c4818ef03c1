"""Fixtures of the contract suite: ``store`` (the Cachify instance every driver uses, installed
as the global one) and ``framework`` (a fresh driver per test). Both are parametrized only
through :func:`tests.contract.table.row`, so a row runs exactly where the table says."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from cachify_core import init_cachify

from ..conftest import sync_cluster_client
from ..lost_reply import ReplyLosingProxy
from ..servers import free_port
from ..support import as_global
from .frameworks import Framework, make
from .probe import release_all
from .store import Store


@pytest.fixture
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    kind = str(request.param)
    prefix = f"C{uuid.uuid4().hex[:8]}-"
    if kind == "redis":
        url = request.getfixturevalue("flushed_redis_url")
        instance = init_cachify(url=url, prefix=prefix, is_global=False, lock_poll_interval=0.05)
        host, _, port = url.split("://", 1)[1].split("/", 1)[0].rpartition(":")
        found = Store(kind, instance, [(host, int(port))])
    elif kind == "cluster":
        nodes = request.getfixturevalue("flushed_redis_cluster")
        client = sync_cluster_client(nodes)
        request.addfinalizer(client.close)
        instance = init_cachify(sync_client=client, prefix=prefix, is_global=False, lock_poll_interval=0.05)
        found = Store(kind, instance, list(nodes))
    elif kind == "lossy":  # the session's server behind a proxy that can lose one reply
        url = request.getfixturevalue("flushed_redis_url")
        host, _, port = url.split("://", 1)[1].split("/", 1)[0].rpartition(":")
        proxy = ReplyLosingProxy(host, int(port))
        request.addfinalizer(proxy.close)  # noqa: PT021
        db = int(url.split("://", 1)[1].partition("/")[2] or 0)
        instance = init_cachify(url=proxy.url(db), prefix=prefix, is_global=False, lock_poll_interval=0.05)
        found = Store(kind, instance, [(host, int(port))], proxy=proxy)
    elif kind == "dead":  # a Redis URL nothing listens on: every store call fails
        url = f"redis://127.0.0.1:{free_port()}/0"
        found = Store(kind, init_cachify(url=url, prefix=prefix, is_global=False))
    else:
        assert kind == "memory", kind
        found = Store(kind, init_cachify(prefix=prefix, is_global=False, lock_poll_interval=0.05))
    with as_global(found.cachify):
        yield found


@pytest.fixture
def framework(request: pytest.FixtureRequest, redis_url: str, store: Store) -> Iterator[Framework]:
    """A fresh driver on the test's store (set up after it, closed before it)."""
    driver = make(str(request.param), redis_url)
    try:
        yield driver
    finally:
        release_all()
        driver.close()
