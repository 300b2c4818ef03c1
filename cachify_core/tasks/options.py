"""Task options (``once_*``, ``rate_*``, ``pool_*``, ``cache_*``): parsing and validation, once for all
three integrations. The contract is docs/TASK_OPTIONS.md; every mistake is reported when the
task is declared, naming the task and the option.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..backends.base import DEFAULT_MAX_WAITING, RateLimit
from ..errors import CachifyError
from ..keys import KeyTemplate
from ..protocols import UNSET, UnsetType
from ..rates import Rate, rate_limits

__all__ = [
    "DEFAULT_ONCE_TTL_S",
    "DEFAULT_POOL_BACKOFF_S",
    "DEFAULT_POOL_SLOT_TTL_S",
    "DEFAULT_STORE_BACKOFF_S",
    "OPTION_NAMES",
    "CachifyTaskOptionError",
    "RateBound",
    "TaskOptions",
    "parse_task_options",
]

OnceMode = Literal["queued", "until_started", "running"]
OnFull = Literal["requeue", "drop", "raise"] | Callable[..., Any]
OnBackendError = Literal["call", "raise"]
OnStoreError = Literal["defer", "fail", "run"]
OnLimited = Literal["wait", "drop", "raise"] | Callable[..., Any]
OnceOnStoreError = Literal["fail", "send"]

#: An hour: long enough for a queue backlog, short enough that a lost message does not block
#: its key for a day.
DEFAULT_ONCE_TTL_S = 3600.0
#: A running task renews its slot every third of this, so a dead worker's slot frees within a minute.
DEFAULT_POOL_SLOT_TTL_S = 60.0
#: First requeue after up to 1 s, doubling to at most a minute between tries.
DEFAULT_POOL_BACKOFF_S = (1.0, 60.0)
#: A delivery deferred because the store is unreachable comes back after up to 0.5 s, doubling
#: to at most 30 s: soon enough after a restart, sparse enough not to flood a broker meanwhile.
DEFAULT_STORE_BACKOFF_S = (0.5, 30.0)

OPTION_NAMES = frozenset(
    {
        "once_key",
        "once_mode",
        "once_ttl",
        "once_raise",
        "pool_key",
        "pool_max_size",
        "pool_slot_ttl",
        "pool_on_full",
        "pool_backoff",
        "pool_max_requeues",
        "pool_max_waiting",
        "cache_key",
        "cache_ttl",
        "cache_on_backend_error",
        "once_on_store_error",
        "on_store_error",
        "rate_key",
        "rate",
        "rate_cost",
        "rate_keys",
        "rate_on_limited",
    }
)
_PREFIXES = ("once_", "pool_", "cache_", "rate_")
#: Options that belong to no single feature, or to one without its prefix.
_GENERAL = frozenset({"on_store_error", "rate"})
#: The frameworks' own options that look like ours: Celery's per-worker ``rate_limit``.
_FOREIGN = frozenset({"rate_limit"})


class CachifyTaskOptionError(CachifyError, ValueError):
    """A task option is unknown, missing a companion, or has a bad value."""


@dataclass(frozen=True)
class RateBound:
    """One rate limit a task's runs go through: a key template and its limits (all apply)."""

    key: KeyTemplate
    rates: tuple[Rate, ...]
    limits: tuple[RateLimit, ...]

    @property
    def text(self) -> str:
        return ", ".join(str(r) for r in self.rates)


@dataclass(frozen=True)
class TaskOptions:
    """Validated options of one task; templates compiled against its function."""

    task_name: str
    once_key: KeyTemplate | None = None
    once_mode: OnceMode = "queued"
    once_ttl_s: float = DEFAULT_ONCE_TTL_S
    once_raise: bool = False
    pool_key: KeyTemplate | None = None
    pool_max_size: int = 0
    pool_slot_ttl_s: float = DEFAULT_POOL_SLOT_TTL_S
    pool_on_full: OnFull = "requeue"
    pool_backoff_s: tuple[float, float] = DEFAULT_POOL_BACKOFF_S
    pool_max_requeues: int | None = None
    #: Deliveries the pool's waiting room holds at most; beyond it (and with 0) a full pool
    #: falls back to backoff requeue through the broker, logged.
    pool_max_waiting: int = DEFAULT_MAX_WAITING
    cache_key: KeyTemplate | None = None
    cache_ttl_s: float | UnsetType | None = UNSET
    #: The result cache fails open like ``@cached``: an unreachable store makes a lookup a miss
    #: (the task runs) and a store write a logged no-op; ``"raise"`` fails the task instead.
    cache_on_backend_error: OnBackendError = "call"
    #: What a delivery does when its admission cannot reach the store: ``"defer"`` it through
    #: the broker (same task id, retries untouched), ``"fail"`` the task, or ``"run"`` it ungated.
    on_store_error: OnStoreError = "defer"
    #: What a send does when its claim cannot reach the store: ``"fail"`` (raise, naming the
    #: task; nothing is sent) or ``"send"`` the message ungated (the run checks the hold again).
    once_on_store_error: OnceOnStoreError = "fail"
    #: Global rate limits (``rate_key`` + ``rate``, and each of ``rate_keys``): all must admit.
    rate_bounds: tuple[RateBound, ...] = ()
    #: Units of every limit one run consumes.
    rate_cost: int = 1
    #: What a run the limits do not admit now does: ``"wait"`` (parked until its time),
    #: ``"drop"``, ``"raise"`` (``CachifyRateLimitedError``), or a callable's value.
    rate_on_limited: OnLimited = "wait"

    @property
    def active(self) -> bool:
        return (
            self.once_key is not None
            or self.pool_key is not None
            or self.cache_key is not None
            or bool(self.rate_bounds)
        )

    @property
    def uses_waiting_rooms(self) -> bool:
        """Whether runs may wait in a waiting room (a pool, or a rate limit): workers sweep them."""
        return self.pool_key is not None or bool(self.rate_bounds)

    @property
    def claims_at_enqueue(self) -> bool:
        """Whether the dedup hold is taken when the task is sent (modes queued, until_started)."""
        return self.once_key is not None and self.once_mode != "running"


def is_task_option(name: str) -> bool:
    """Whether an option name belongs to cachify (so a typo of one is an error, not ignored)."""
    return (name.startswith(_PREFIXES) or name in _GENERAL) and name not in _FOREIGN


def _seconds(task: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise CachifyTaskOptionError(
            f"task {task!r}: {name} must be a positive number of seconds, got {value!r}"
        )
    return float(value)


def _template(task: str, name: str, value: Any, func: Callable[..., Any], postfix: str) -> KeyTemplate:
    if not isinstance(value, str) or not value:
        raise CachifyTaskOptionError(
            f"task {task!r}: {name} must be a non-empty key template str, got {value!r}"
        )
    try:
        return KeyTemplate(value, func, postfix)
    except ValueError as exc:
        raise CachifyTaskOptionError(f"task {task!r}: {name}: {exc}") from None


def parse_task_options(task_name: str, func: Callable[..., Any], raw: Mapping[str, Any]) -> TaskOptions:
    """Validate the cachify options among ``raw`` (other names are ignored)."""
    given = {k: v for k, v in raw.items() if is_task_option(k)}
    unknown = sorted(set(given) - OPTION_NAMES)
    if unknown:
        raise CachifyTaskOptionError(
            f"task {task_name!r}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(OPTION_NAMES))}"
        )
    # pool_backoff / pool_max_requeues also govern a CachifyPoolFullError escaping the body (a
    # stacked @pooled), so they stand alone; the other companions need their key.
    standalone = {"pool_backoff", "pool_max_requeues"}
    for group, key in (("once_", "once_key"), ("pool_", "pool_key"), ("cache_", "cache_key")):
        orphans = sorted(k for k in given if k.startswith(group) and k != key and k not in standalone)
        if orphans and given.get(key) is None:
            raise CachifyTaskOptionError(f"task {task_name!r}: {', '.join(orphans)} given without {key}")
    rate_orphans = sorted(k for k in given if k in ("rate", "rate_cost", "rate_on_limited"))
    if rate_orphans and given.get("rate_key") is None and not given.get("rate_keys"):
        raise CachifyTaskOptionError(
            f"task {task_name!r}: {', '.join(rate_orphans)} given without rate_key (or rate_keys)"
        )

    opts: dict[str, Any] = {"task_name": task_name}
    if given.get("once_key") is not None:
        opts["once_key"] = _template(task_name, "once_key", given["once_key"], func, "once")
        mode = given.get("once_mode", "queued")
        if mode not in ("queued", "until_started", "running"):
            raise CachifyTaskOptionError(
                f"task {task_name!r}: once_mode must be 'queued', 'until_started' or 'running', got {mode!r}"
            )
        opts["once_mode"] = mode
        opts["once_ttl_s"] = _seconds(task_name, "once_ttl", given.get("once_ttl", DEFAULT_ONCE_TTL_S))
        once_raise = given.get("once_raise", False)
        if not isinstance(once_raise, bool):
            raise CachifyTaskOptionError(f"task {task_name!r}: once_raise must be a bool, got {once_raise!r}")
        opts["once_raise"] = once_raise
        on_send_error = given.get("once_on_store_error", "fail")
        if on_send_error not in ("fail", "send"):
            raise CachifyTaskOptionError(
                f"task {task_name!r}: once_on_store_error must be 'fail' (raise at send when the store "
                f"is unreachable) or 'send' (send without deduplication), got {on_send_error!r}"
            )
        opts["once_on_store_error"] = on_send_error

    if given.get("pool_key") is not None:
        opts["pool_key"] = _template(task_name, "pool_key", given["pool_key"], func, "pool")
        size = given.get("pool_max_size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise CachifyTaskOptionError(
                f"task {task_name!r}: pool_max_size must be an int >= 1 (required with pool_key), got {size!r}"
            )
        opts["pool_max_size"] = size
        opts["pool_slot_ttl_s"] = _seconds(
            task_name, "pool_slot_ttl", given.get("pool_slot_ttl", DEFAULT_POOL_SLOT_TTL_S)
        )
        on_full = given.get("pool_on_full", "requeue")
        if not callable(on_full) and on_full not in ("requeue", "drop", "raise"):
            raise CachifyTaskOptionError(
                f"task {task_name!r}: pool_on_full must be 'requeue', 'drop', 'raise' or a callable, got {on_full!r}"
            )
        opts["pool_on_full"] = on_full
        max_waiting = given.get("pool_max_waiting", DEFAULT_MAX_WAITING)
        if isinstance(max_waiting, bool) or not isinstance(max_waiting, int) or max_waiting < 0:
            raise CachifyTaskOptionError(
                f"task {task_name!r}: pool_max_waiting must be an int >= 0 (0: never park, back off "
                f"through the broker instead), got {max_waiting!r}"
            )
        opts["pool_max_waiting"] = max_waiting

    backoff = given.get("pool_backoff", DEFAULT_POOL_BACKOFF_S)
    if not isinstance(backoff, (tuple, list)) or len(backoff) != 2:
        raise CachifyTaskOptionError(
            f"task {task_name!r}: pool_backoff must be (first_seconds, max_seconds), got {backoff!r}"
        )
    first = _seconds(task_name, "pool_backoff[0]", backoff[0])
    most = _seconds(task_name, "pool_backoff[1]", backoff[1])
    if first > most:
        raise CachifyTaskOptionError(
            f"task {task_name!r}: pool_backoff first_seconds {first} exceeds max_seconds {most}"
        )
    opts["pool_backoff_s"] = (first, most)
    max_requeues = given.get("pool_max_requeues")
    if max_requeues is not None and (
        isinstance(max_requeues, bool) or not isinstance(max_requeues, int) or max_requeues < 0
    ):
        raise CachifyTaskOptionError(
            f"task {task_name!r}: pool_max_requeues must be an int >= 0 or None, got {max_requeues!r}"
        )
    opts["pool_max_requeues"] = max_requeues

    if given.get("cache_key") is not None:
        opts["cache_key"] = _template(task_name, "cache_key", given["cache_key"], func, "cached")
        if "cache_ttl" in given:
            ttl = given["cache_ttl"]
            opts["cache_ttl_s"] = None if ttl is None else _seconds(task_name, "cache_ttl", ttl)
        on_error = given.get("cache_on_backend_error", "call")
        if on_error not in ("call", "raise"):
            raise CachifyTaskOptionError(
                f"task {task_name!r}: cache_on_backend_error must be 'call' (run the task when the "
                f"store is unreachable) or 'raise' (fail it), got {on_error!r}"
            )
        opts["cache_on_backend_error"] = on_error

    opts.update(_rate_options(task_name, func, given))

    on_store_error = given.get("on_store_error", "defer")
    if on_store_error not in ("defer", "fail", "run"):
        raise CachifyTaskOptionError(
            f"task {task_name!r}: on_store_error must be 'defer' (send the delivery back through the "
            f"broker until the store answers), 'fail' or 'run' (run without the store's gates), "
            f"got {on_store_error!r}"
        )
    opts["on_store_error"] = on_store_error
    return TaskOptions(**opts)


def _rate_options(task_name: str, func: Callable[..., Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``rate_key`` + ``rate``, ``rate_keys``, ``rate_cost``, ``rate_on_limited``, validated."""
    if given.get("rate_key") is None and not given.get("rate_keys"):
        return {}
    cost = given.get("rate_cost", 1)
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
        raise CachifyTaskOptionError(
            f"task {task_name!r}: rate_cost must be an int >= 1 (units of every limit one run uses), got {cost!r}"
        )
    pairs: list[tuple[str, Any, str]] = []  # (template, rate, the option it came from)
    if given.get("rate_key") is not None:
        if given.get("rate") is None:
            raise CachifyTaskOptionError(
                f"task {task_name!r}: rate_key needs rate, e.g. rate='10/s' or rate=['10/s', '1000/h']"
            )
        pairs.append((given["rate_key"], given["rate"], "rate"))
    elif given.get("rate") is not None:
        raise CachifyTaskOptionError(
            f"task {task_name!r}: rate given without rate_key (rate_keys carry their own)"
        )
    keys = given.get("rate_keys")
    if keys:
        if isinstance(keys, (str, bytes)) or not isinstance(keys, (list, tuple)):
            raise CachifyTaskOptionError(
                f"task {task_name!r}: rate_keys must be a list of (key_template, rate) pairs, got {keys!r}"
            )
        for n, pair in enumerate(keys):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise CachifyTaskOptionError(
                    f"task {task_name!r}: rate_keys[{n}] must be a (key_template, rate) pair, got {pair!r}"
                )
            pairs.append((pair[0], pair[1], f"rate_keys[{n}]"))
    bounds: list[RateBound] = []
    seen: set[str] = set()
    for template, rate, where in pairs:
        name = "rate_key" if where == "rate" else where
        key = _template(task_name, name, template, func, "rate")
        if key.template in seen:
            raise CachifyTaskOptionError(
                f"task {task_name!r}: {name}: key template {key.template!r} is given twice; put both "
                "rates in one list instead"
            )
        seen.add(key.template)
        try:
            rates, limits = rate_limits(f"task {task_name!r}: {where}", rate, None, cost)
        except ValueError as exc:
            raise CachifyTaskOptionError(str(exc)) from None
        bounds.append(RateBound(key, rates, limits))
    on_limited = given.get("rate_on_limited", "wait")
    if not callable(on_limited) and on_limited not in ("wait", "drop", "raise"):
        raise CachifyTaskOptionError(
            f"task {task_name!r}: rate_on_limited must be 'wait', 'drop', 'raise' or a callable, got {on_limited!r}"
        )
    return {"rate_bounds": tuple(bounds), "rate_cost": cost, "rate_on_limited": on_limited}
