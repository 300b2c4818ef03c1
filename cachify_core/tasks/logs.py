"""The task layer's log vocabulary, one line shape per event, for every framework.

Every line goes to the ``cachify.tasks`` logger and names the task, the task (message) id and
the key involved, so an operator can grep one id across the sender's and the workers' logs:

==============================  =====  ======================================================
event                           level  line
==============================  =====  ======================================================
duplicate not sent (at send)    INFO   ``task <name>[<id>] not sent: <key> is held by task <h>``
re-sent while another holds it  INFO   ``task <name>[<id>] re-sent while <key> is held by ...``
re-sent, store unreachable      WARN   ``task <name>[<id>] re-sent without refreshing <key>: ...``
skipped at run time             INFO   ``task <name>[<id>] skipped: <reason>``
dropped (pool_on_full="drop")   WARN   ``task <name>[<id>] skipped: pool <key> full (...)``
requeued                        INFO   ``task <name>[<id>] requeued (<n>) in <d>s: <reason>``
parked (pool full)              DEBUG  ``task <name>[<id>] parked in the waiting room of <key>``
waiting room full               WARN   ``task <name>[<id>]: waiting room of <key> holds its
                                       pool_max_waiting=<n>; backing off through the broker``
hand-over not published         ERROR  ``could not publish <n> hand-over(s) of <task>: <error>
                                       (the waiting room publishes them again after its lease)``
cache hit                       DEBUG  ``task <name>[<id>] cache hit: <key>``
store unreachable, cache open   WARN   ``task <name>[<id>] ran without its cache: <error>``
store unreachable (an outage)   WARN   ``store unreachable: <action> (first: task <name>[<id>]:
                                       <error>)`` — once per outage, then DEBUG per delivery;
                                       ``store reachable again after <s>s; <n> deliveries ...``
==============================  =====  ======================================================

An outage is logged once, not once per task: the first delivery that cannot reach the store
logs a WARNING, the others of the same outage log at DEBUG, and the first delivery that reaches
the store again logs how long it lasted and what was done meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = [
    "cache_hit",
    "cache_unreachable",
    "handover_failed",
    "logger",
    "not_sent",
    "parked",
    "requeued",
    "resent_unchecked",
    "resent_while_held",
    "room_full",
    "skipped",
    "store_reachable",
    "store_unreachable",
]

logger = logging.getLogger("cachify.tasks")


def not_sent(task: str, task_id: str, key: str, holder: str) -> None:
    logger.info("cachify: task %s[%s] not sent: %s is held by task %s", task, task_id, key, holder)


def resent_while_held(task: str, task_id: str, key: str, holder: str) -> None:
    logger.info(
        "cachify: task %s[%s] re-sent while %s is held by task %s (a retry or requeue is never "
        "dropped at send; it is checked again when it runs)",
        task,
        task_id,
        key,
        holder,
    )


def resent_unchecked(task: str, task_id: str, key: str, error: BaseException) -> None:
    logger.warning(
        "cachify: task %s[%s] re-sent without refreshing %s (a retry or requeue is never dropped "
        "at send; it is checked again when it runs): %s",
        task,
        task_id,
        key,
        error,
    )


def skipped(task: str, task_id: str, reason: str, level: int = logging.INFO) -> None:
    logger.log(level, "cachify: task %s[%s] skipped: %s", task, task_id, reason)


def requeued(task: str, task_id: str, requeues: int, delay_s: float, reason: str) -> None:
    logger.info("cachify: task %s[%s] requeued (%d) in %.2fs: %s", task, task_id, requeues, delay_s, reason)


def admitted(task: str, task_id: str, reservation: str | None, requeues: int) -> None:
    """A delivery admitted to run, at DEBUG (parks, hits, skips and requeues have lines of their
    own): what an operator tracing one task id greps for."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "cachify: task %s[%s] admitted to run (requeues %d%s)",
            task,
            task_id,
            requeues,
            f", reservation {reservation}" if reservation else "",
        )


def parked(task: str, task_id: str, key: str) -> None:
    logger.debug("cachify: task %s[%s] parked in the waiting room of %s", task, task_id, key)


def room_full(task: str, task_id: str, key: str, max_waiting: int) -> None:
    logger.warning(
        "cachify: task %s[%s]: waiting room of %s holds its pool_max_waiting=%d; backing off through "
        "the broker",
        task,
        task_id,
        key,
        max_waiting,
    )


def handover_failed(task: str, count: int, error: BaseException) -> None:
    logger.error(
        "cachify: could not publish %d hand-over(s) of %s: %s (the waiting room publishes them "
        "again after its lease)",
        count,
        task,
        error,
    )


def cache_hit(task: str, task_id: str, key: str) -> None:
    logger.debug("cachify: task %s[%s] cache hit: %s", task, task_id, key)


def cache_unreachable(task: str, task_id: str, error: BaseException) -> None:
    logger.warning(
        "cachify: task %s[%s] ran without its cache (cache_on_backend_error='call'): %s", task, task_id, error
    )


class _Outage:
    """The current store outage as this process sees it (``since`` is ``None`` while none)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.since: float | None = None
        self.deliveries = 0


_outage = _Outage()


def store_unreachable(task: str, task_id: str, action: str, error: BaseException) -> None:
    """A delivery or send could not reach the store; ``action`` says what was done instead."""
    with _outage.lock:
        first = _outage.since is None
        if first:
            _outage.since = time.monotonic()
        _outage.deliveries += 1
    if first:
        logger.warning(
            "cachify: store unreachable: %s (first: task %s[%s]: %s)", action, task, task_id, error
        )
    else:
        logger.debug("cachify: task %s[%s]: store unreachable: %s", task, task_id, action)


def store_reachable() -> None:
    """The store answered: end the outage, if one was going on (free while none is)."""
    if _outage.since is None:
        return
    with _outage.lock:
        since, count = _outage.since, _outage.deliveries
        _outage.since, _outage.deliveries = None, 0
    if since is not None:
        logger.warning(
            "cachify: store reachable again after %.1fs; %d deliveries or sends were handled meanwhile",
            time.monotonic() - since,
            count,
        )
