"""Real ``dramatiq`` worker processes (2 processes x 2 threads) over a real Redis broker.

Workers run ``worker_app``; the test process sends through the same app and observes the
workers only through Redis (database 2): executions, the concurrency counter's values,
retries and requeues as messages carried them, process ids. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import pytest
from dramatiq.message import Message

from .conftest import WorkerGroup

pytestmark = pytest.mark.timeout(90)

#: Upper bound of any wait for workers to get through a batch.
BATCH_DEADLINE_S = 45.0
#: Result waits, in ms (dramatiq's unit).
RESULT_TIMEOUT_MS = 20_000


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``predicate`` every 20 ms; the seconds it took, or fail after ``timeout_s``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def test_200_duplicate_sends_run_once(app: ModuleType, start_workers: Callable[..., WorkerGroup]) -> None:
    start_workers(processes=2, threads=2)
    obs = app.observations()
    key = uuid.uuid4().hex

    def send(_: int) -> Message[Any]:
        message: Message[Any] = app.dedup.send(key, 1.0)
        return message

    with ThreadPoolExecutor(8) as pool:  # concurrent senders, as several web processes would be
        handles = list(pool.map(send, range(200)))

    assert len({h.message_id for h in handles}) == 1  # every duplicate got the holder's handle
    # Any handle waits for the holder's result, through the Results middleware.
    assert handles[-1].get_result(backend=app.results, block=True, timeout=RESULT_TIMEOUT_MS) == f"done-{key}"
    assert int(obs.get(f"dedup:{key}:runs") or 0) == 1

    # The hold ended with the run: the next send is a new message and runs.
    again = app.dedup.send(key, 0.0)
    assert again.message_id != handles[0].message_id
    assert again.get_result(backend=app.results, block=True, timeout=RESULT_TIMEOUT_MS) == f"done-{key}"
    assert int(obs.get(f"dedup:{key}:runs") or 0) == 2


@pytest.mark.parametrize("actor", ["pooled", "apooled"])
def test_pool_caps_concurrency_and_loses_nothing(
    app: ModuleType, start_workers: Callable[..., WorkerGroup], actor: str
) -> None:
    start_workers(processes=2, threads=2)
    obs = app.observations()
    run, n = uuid.uuid4().hex, 200 if actor == "pooled" else 100
    handles = [getattr(app, actor).send(run, i, 0.02) for i in range(n)]

    wait_until(lambda: obs.hlen(f"pool:{run}:runs") >= n, BATCH_DEADLINE_S, f"{n} pooled runs")
    seen = [int(v) for v in obs.lrange(f"pool:{run}:seen", 0, -1)]
    runs = {int(k): int(v) for k, v in obs.hgetall(f"pool:{run}:runs").items()}
    retries = {int(v) for v in obs.lrange(f"pool:{run}:retries", 0, -1)}

    assert runs == dict.fromkeys(range(n), 1)  # each exactly once, none lost
    assert max(seen) <= 3  # never more than pool_max_size at once, across both processes
    assert max(seen) >= 2  # ... and the cap, not a lack of workers, is what limited them
    assert retries == {0}  # requeues left the retry budget alone (max_retries=0: none lost)
    assert int(obs.get(f"pool:{run}:requeues") or 0) > 0  # the pool was full and requeued
    # No requeued message left a premature None behind: every result is the task's own.
    assert [
        h.get_result(backend=app.results, block=True, timeout=RESULT_TIMEOUT_MS) for h in handles
    ] == list(range(n))


def test_cache_hits_skip_execution(app: ModuleType, start_workers: Callable[..., WorkerGroup]) -> None:
    start_workers(processes=2, threads=2)
    obs = app.observations()
    first = app.square.send(7)
    assert first.get_result(backend=app.results, block=True, timeout=RESULT_TIMEOUT_MS) == 49
    hits = [app.square.send(7) for _ in range(20)]
    assert [h.get_result(backend=app.results, block=True, timeout=RESULT_TIMEOUT_MS) for h in hits] == [
        49
    ] * 20
    assert int(obs.get("square:7:runs") or 0) == 1


def test_killed_worker_slot_is_reusable_within_slot_ttl(
    app: ModuleType, start_workers: Callable[..., WorkerGroup]
) -> None:
    # Two independent commands: dramatiq's main process stops its other workers when one is
    # killed, so the survivor must belong to another command.
    start_workers(processes=1, threads=2)
    start_workers(processes=1, threads=2)
    obs = app.observations()
    run = uuid.uuid4().hex
    app.hog.send(run, "holder", 60.0)  # takes the only slot and sits on it
    wait_until(lambda: obs.llen(f"hog:{run}:started") == 1, 15, "the holder to start")
    _, pid, _ = obs.lindex(f"hog:{run}:started", 0).decode().split(":")
    os.kill(int(pid), signal.SIGKILL)
    killed_at = time.time()

    # Sent after the kill, so only the surviving command can fetch it.
    app.hog.send(run, "next", 0.0)
    wait_until(lambda: obs.llen(f"hog:{run}:started") == 2, 15, "the next message to start")
    label, _, started = obs.lindex(f"hog:{run}:started", 1).decode().split(":")
    waited = float(started) - killed_at
    assert label == "next"
    # The dead worker's lease was renewed every ttl/3 until the kill, so it ends between 2/3 of
    # the ttl and the ttl after it; the next message gets it after at most one more backoff.
    assert app.HOG_SLOT_TTL_S * 0.5 < waited < app.HOG_SLOT_TTL_S + 1.5
