"""The records task bodies write, read back by :mod:`harness.records`.

``<run>:start`` gets ``"<i> <unix time> <pgid> <pid> <uid>"`` as a body starts, and
``<run>:end`` gets ``"<i> <unix time> <uid>"`` as it ends (``uid`` pairs the two records of one
execution). A body killed mid-run leaves a start without an end. ``<run>:ready`` is the set of
worker process groups that finished booting. Bodies that know their framework's retry counter
(the ``rated`` and ``tenant`` tasks) also push ``"<uid> <retries> <tag>"`` to ``<run>:attempt``
before their start record (``tag``: the tenant, or ``-``). Timestamps are ``time.time()``: every process is on
this machine, so they share one clock.
"""

from __future__ import annotations

import os
import time
import uuid

import redis

_clients: dict[tuple[int, str], redis.Redis] = {}


def client(url: str) -> redis.Redis:
    """One client per process and URL (made after a fork: prefork children get their own)."""
    key = (os.getpid(), url)
    found = _clients.get(key)
    if found is None:
        found = _clients[key] = redis.Redis.from_url(url, socket_timeout=10)
    return found


def ready(url: str, run: str) -> None:
    """Mark this worker's process group as booted."""
    client(url).sadd(f"{run}:ready", os.getpgid(0))


def body(url: str, run: str, i: int, body_s: float, retries: int | None = None, tag: str = "-") -> int:
    """The measured work: record the start, sleep ``body_s``, record the end. ``retries``: the
    framework's retry counter of this execution, recorded with ``tag`` when given."""
    obs = client(url)
    uid = uuid.uuid4().hex[:12]
    if retries is not None:
        obs.rpush(f"{run}:attempt", f"{uid} {retries} {tag or '-'}")
    obs.rpush(f"{run}:start", f"{i} {time.time():.6f} {os.getpgid(0)} {os.getpid()} {uid}")
    time.sleep(body_s)
    obs.rpush(f"{run}:end", f"{i} {time.time():.6f} {uid}")
    return i
