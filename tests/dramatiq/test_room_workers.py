"""A full pool's waiting room with real ``dramatiq`` worker processes over a real Redis broker
and a Redis store: deliveries that find the pool full park (acknowledged, nothing kept in the
worker), each release hands the slot to the oldest parked one and publishes it again through
the broker; a killed holder's slot expires and the survivor's sweeper moves the line.

Observed from outside through Redis (database 2), as in ``test_real_workers``. Every wait is
bounded; every worker group is stopped by the fixture.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
import uuid
from collections.abc import Callable
from types import ModuleType

import pytest

from .conftest import WorkerGroup
from .test_real_workers import RESULT_TIMEOUT_MS, wait_until

pytestmark = pytest.mark.timeout(90)

#: Upper bound of any wait for workers to get through a batch.
BATCH_DEADLINE_S = 40.0
#: How many messages may start far from their send position: what the 2 processes' consumers
#: prefetch (2 x 2 threads each), held while both threads of a process run.
PREFETCHED = 8


def drained(app: ModuleType, key: str, size: int) -> bool:
    stats = app.cachify.pool(key, size).waiting()
    return bool(stats.parked == stats.handed == stats.timed == stats.watching == 0)


@pytest.mark.parametrize("actor", ["roomed", "aroomed"])
def test_parked_messages_run_once_in_order_without_retries_or_delays(
    app: ModuleType, start_workers: Callable[..., WorkerGroup], actor: str
) -> None:
    start_workers(processes=2, threads=2)
    obs = app.observations()
    run, n = uuid.uuid4().hex, 60
    handles = [getattr(app, actor).send(run, i, 0.05) for i in range(n)]

    try:
        wait_until(lambda: obs.hlen(f"room:{run}:runs") >= n, BATCH_DEADLINE_S, f"{n} runs")
    except pytest.fail.Exception:
        ran = {int(k) for k in obs.hkeys(f"room:{run}:runs")}
        missing = sorted(set(range(n)) - ran)
        stats = app.cachify.pool(f"room-{run}", 2).waiting()
        pytest.fail(
            f"not run after {BATCH_DEADLINE_S}s: {missing}; waiting room {stats}; delayed {obs.hget('delayed', actor)}"
        )
    seen = [int(v) for v in obs.lrange(f"room:{run}:seen", 0, -1)]
    runs = {int(k): int(v) for k, v in obs.hgetall(f"room:{run}:runs").items()}
    retries = {int(v) for v in obs.lrange(f"room:{run}:retries", 0, -1)}
    requeues = {int(k): int(v) for k, v in obs.hgetall(f"room:{run}:requeues").items()}
    reserved = {int(k): int(v) for k, v in obs.hgetall(f"room:{run}:reserved").items()}
    order = [int(v) for v in obs.lrange(f"room:{run}:order", 0, -1)]

    assert runs == dict.fromkeys(range(n), 1)  # each exactly once, none lost
    assert max(seen) == 2  # never more than pool_max_size at once, across both processes
    assert retries == {0}  # parking left the retry budget alone
    assert set(requeues.values()) <= {0, 1}  # parked at most once: handed over, it ran
    assert sum(requeues.values()) >= n // 2  # the pool was full: most of them parked
    # Every parked one came back as a hand-over carrying its reservation, and only those.
    assert reserved == requeues
    assert obs.hget("delayed", actor) is None  # no backoff requeue, no delayed message
    wait_until(lambda: drained(app, f"room-{run}", 2), 5.0, "the waiting room to drain")
    assert app.cachify.pool(f"room-{run}", 2).size() == 0

    # FIFO, give or take the prefetch: the line is the order of parking, and a message a busy
    # process prefetched parks late (its threads run while the other process parks the rest).
    displacement = [abs(position - i) for position, i in enumerate(order)]
    assert statistics.median(displacement) <= 2, order
    assert sum(d > 4 for d in displacement) <= PREFETCHED, order
    # A parked message stored no premature None: every result is the task's own.
    assert [
        h.get_result(backend=app.results, block=True, timeout=RESULT_TIMEOUT_MS) for h in handles
    ] == list(range(n))


def test_a_killed_holder_frees_the_line_after_its_slot_ttl(
    app: ModuleType, start_workers: Callable[..., WorkerGroup]
) -> None:
    # The holder is consumed by a command of its own (its queue only), so the kill loses no
    # prefetched waiter: the waiters all go to the survivor and park behind the holder.
    start_workers(processes=1, threads=1, queues=(app.HOLDER_QUEUE,))
    obs = app.observations()
    run, n = uuid.uuid4().hex, 10
    app.room_holder.send(run)
    wait_until(lambda: obs.llen(f"room:{run}:holder") == 1, 15, "the holder to start")
    holder_pid = int(obs.lindex(f"room:{run}:holder", 0))
    start_workers(processes=1, threads=2)

    key = f"room-kill-{run}"
    for i in range(n):
        app.room_waiter.send(run, i)
    wait_until(lambda: app.cachify.pool(key, 1).waiting().parked == n, 15, f"{n} parked waiters")
    assert obs.hlen(f"room:{run}:runs") == 0

    os.kill(holder_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: obs.hlen(f"room:{run}:runs") >= n, 30, f"{n} waiters to run")
    took_s = time.monotonic() - killed_at

    runs = {int(k): int(v) for k, v in obs.hgetall(f"room:{run}:runs").items()}
    seen = [int(v) for v in obs.lrange(f"room:{run}:seen", 0, -1)]
    requeues = {int(k): int(v) for k, v in obs.hgetall(f"room:{run}:requeues").items()}
    assert runs == dict.fromkeys(range(n), 1)
    assert max(seen) == 1
    assert {int(v) for v in obs.lrange(f"room:{run}:retries", 0, -1)} == {0}
    assert set(requeues.values()) == {1}  # each parked once, handed over once
    assert obs.hget("delayed", "room_waiter") is None
    # The dead slot, renewed every ttl/3 until the kill, ends within the ttl; the sweeper
    # (1 s ticks) hands it over, then each release hands the next.
    assert took_s < app.ROOM_SLOT_TTL_S + 1.0 + n * 0.5
    wait_until(lambda: drained(app, key, 1), 5.0, "the waiting room to drain")
