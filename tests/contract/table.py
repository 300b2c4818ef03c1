"""The contract's table: which rows run on which frameworks and stores, and which fail today.

A row runs on every (framework, store) pair its entry names; a framework a row does not apply
to is left out here, with the reason, never skipped at run time. ``XFAIL`` lists the pairs
that fail on the current code (issue 9), strictly: when a fix makes one pass, it XPASSes, the
run fails, and the entry is removed. README.md in this folder is the same table in prose.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from .frameworks import FRAMEWORKS

F = TypeVar("F", bound=Callable[..., Any])

ALL = tuple(FRAMEWORKS)
#: Frameworks with a queue between send and run (Celery eager runs every send at once).
QUEUED = ("celery-worker", "dramatiq", "taskiq")
#: Frameworks with a broker publish that can fail (eager Celery publishes nothing).
PUBLISHING = QUEUED
#: Frameworks with canvas primitives that publish (groups, chains / pipelines). Eager Celery runs
#: a canvas inline, member by member, so nothing can wait for an unsent member: a duplicate
#: member is skipped (IGNORED) there, as any eager duplicate run is.
CANVAS = ("celery-worker", "dramatiq")
STORES = ("redis", "cluster")


@dataclass(frozen=True)
class Row:
    title: str
    frameworks: Sequence[str] = ALL
    stores: Sequence[str] = STORES
    why_not: str = ""  #: why a framework is left out, if one is


ROWS: dict[str, Row] = {
    "1": Row("once queued: a duplicate is not enqueued; the holder's handle comes back and reads its result"),
    "2": Row("once_raise: a duplicate raises CachifyDuplicateError carrying holder_id"),
    "3": Row("the hold ends after success, failure and skip; nothing but cache entries is left"),
    "4": Row(
        "until_started: one queued + one running; a third is suppressed",
        QUEUED,
        why_not="celery-eager: a send runs at once, so nothing is ever queued",
    ),
    "5": Row("running mode: nothing claimed at send; a concurrent delivery is acknowledged, not run, logged"),
    "6": Row("a framework retry is the holder: runs again; the final success releases the hold"),
    "7": Row(
        "a publish that fails after the hold was taken releases the hold",
        PUBLISHING,
        why_not="celery-eager: nothing is published",
    ),
    "8": Row("pool: at most pool_max_size at once, each task once, no retry budget spent"),
    "8-on-full": Row("pool_on_full drop / raise / callable, pool_max_requeues"),
    "9": Row("a CachifyPoolFullError escaping the body is requeued and eventually runs"),
    "10": Row("cache: a hit is the result without a run; only successes are cached; a hit keeps no hold"),
    "11": Row("per-message once_key=None turns dedup off for that message"),
    "12-invalid": Row(
        "per-message overrides are validated at send: nothing sent, error names task and option"
    ),
    "12-effect": Row("per-message overrides take effect: once_raise, cache_ttl"),
    "13": Row("a retry is never dropped at send, even when its hold was lost to another task"),
    "14": Row(
        "canvas: a duplicate inside a group or chain raises at apply time instead of hanging",
        CANVAS,
        why_not="taskiq: no canvas; celery-eager: a canvas runs inline, nothing waits for a member",
    ),
    "15": Row("every publish path applies once_*"),
    "16-in-process": Row(
        "the embedded memory backend works with an in-process broker",
        ("celery-eager", "dramatiq", "taskiq"),
        stores=("memory",),
        why_not="celery-worker: its broker is Redis, which workers of other processes may consume",
    ),
    "16-remote": Row(
        "the embedded memory backend with an out-of-process broker: a clear error at send, nothing sent",
        ("celery", "dramatiq", "taskiq"),
        stores=("memory",),
    ),
    "17": Row("one log vocabulary on logger cachify.tasks, naming task, id and key"),
    "18": Row("task cache_key with the store unreachable: fail open by default, or raise", stores=("dead",)),
    "19": Row(
        "a full pool parks the task in its waiting room; each freed slot goes to the oldest",
        QUEUED,
        why_not="celery-eager: no broker to come back through, a full pool waits in place (row 8)",
    ),
    "20": Row("rate_key: a limited task waits for its time in the room and runs once, retries untouched"),
    "21": Row(
        "a park whose reply the store lost: the deferred copy is recognised, the task runs once",
        QUEUED,
        stores=("lossy",),
        why_not="celery-eager: no broker to defer through",
    ),
}

#: Publish paths of row 15, per framework (each a call in the driver's ``publish_paths``).
PATHS: dict[str, tuple[str, ...]] = {
    "celery-eager": ("delay", "apply_async", "signature", "send_task", "beat"),
    "celery-worker": ("delay", "apply_async", "signature", "send_task", "beat"),
    "dramatiq": ("send", "send_with_options", "pipeline", "group"),
    "taskiq": ("kiq", "kicker", "scheduler"),
}

#: Log events of row 17.
LOG_EVENTS = ("not-sent", "skipped", "requeued", "cache-hit")

_OVERRIDES = "issue 9: Taskiq ignores per-message overrides (kicker().with_labels(...))"
_CANVAS = (
    "issue 9: a duplicate inside a Celery group/chain is silently not published: apply returns a "
    "result that never completes (.get() hangs; the chain's next task never runs)"
)
_REMOTE = (
    "issue 9: the embedded memory backend is accepted with a broker whose workers are other "
    "processes: the send succeeds silently"
)
_SKIP_LINE = "issue 9: the run-time skip line names the holder's task id, not the skipped delivery's"
_NO_HIT_LINE = "issue 9: cache hits are logged nowhere"
_REQUEUE_LINE = {
    "celery-eager": "issue 9: an eager requeue (inline) is not logged on cachify.tasks",
    "celery-worker": "issue 9: requeues are logged on cachify.celery, without the key",
    "dramatiq": "issue 9: requeues are not logged by cachify; only Dramatiq's 'Message ... was skipped'",
    "taskiq": "issue 9: requeues are logged on cachify.taskiq, without the key or the delay",
}
_STORE_DOWN = {
    "call": "issue 9: task cache_key fails closed (CachifyBackendError) while @cached fails open",
    "raise": "issue 9: there is no cache_on_backend_error task option yet",
}

#: Rows that fail on a framework today, with the reason (strict: a fix makes the run fail until
#: its entry is removed). Empty: every row holds on every framework and store.
XFAIL: dict[tuple[str, ...], str] = {}


def _marks(key: tuple[str, ...]) -> list[pytest.MarkDecorator]:
    for n in range(len(key), 1, -1):
        reason = XFAIL.get(key[:n])
        if reason is not None:
            return [pytest.mark.xfail(strict=True, reason=reason)]
    return []


def xfail_params(number: str) -> list[Any]:
    """(framework, store) params of a row, with its XFAIL marks, for a test that names its own
    framework fixture (row 16's out-of-process brokers)."""
    spec = ROWS[number]
    return [
        pytest.param(fw, store, id=f"{fw}-{store}", marks=_marks((number, fw, store)))
        for fw in spec.frameworks
        for store in spec.stores
    ]


def row(number: str, variants: dict[str, Sequence[str]] | Sequence[str] | None = None) -> Callable[[F], F]:
    """Parametrize a test over the row's (framework, store) pairs, and over ``variants``
    (a list for every framework, or a list per framework) as a third parameter ``variant``."""
    spec = ROWS[number]
    params = []
    for fw in spec.frameworks:
        for store in spec.stores:
            if variants is None:
                params.append(pytest.param(fw, store, id=f"{fw}-{store}", marks=_marks((number, fw, store))))
                continue
            chosen = variants.get(fw, ()) if isinstance(variants, dict) else variants
            for variant in chosen:
                key = (number, fw, variant, store)
                marks = _marks(key) or _marks((number, fw, store)) or _marks((number, fw, variant))
                params.append(pytest.param(fw, store, variant, id=f"{fw}-{variant}-{store}", marks=marks))

    names = ("framework", "store") if variants is None else ("framework", "store", "variant")

    def decorate(test: F) -> F:
        marked = pytest.mark.parametrize(names, params, indirect=["framework", "store"])(test)
        # Celery's Redis result backend calls redis-py's deprecated setex: not ours to fix
        quiet = pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")(marked)
        return pytest.mark.contract(quiet)  # type: ignore[no-any-return]

    return decorate
