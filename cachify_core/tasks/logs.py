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
cache hit                       DEBUG  ``task <name>[<id>] cache hit: <key>``
store unreachable, cache open   WARN   ``task <name>[<id>] ran without its cache: <error>``
==============================  =====  ======================================================
"""

from __future__ import annotations

import logging

__all__ = [
    "cache_hit",
    "cache_unreachable",
    "logger",
    "not_sent",
    "requeued",
    "resent_unchecked",
    "resent_while_held",
    "skipped",
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


def cache_hit(task: str, task_id: str, key: str) -> None:
    logger.debug("cachify: task %s[%s] cache hit: %s", task, task_id, key)


def cache_unreachable(task: str, task_id: str, error: BaseException) -> None:
    logger.warning(
        "cachify: task %s[%s] ran without its cache (cache_on_backend_error='call'): %s", task, task_id, error
    )
