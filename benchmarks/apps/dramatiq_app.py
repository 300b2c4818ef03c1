"""The Dramatiq worker app: ``dramatiq apps.dramatiq_app:broker`` (``benchmarks/`` on the path).

Actors (queue ``cfy-bench-<run>``): ``gated`` carries the run's ``pool_key`` (and any other
cachify options of the run); ``plain`` has none (the dedicated-queue ceiling); ``relay(i, n)`` has none either and, its body
done, sends ``relay(i + pool_size, n)`` (the hand-over floor of ``pool_utilization.py``); ``limited`` is
capped by Dramatiq's own ``ConcurrentRateLimiter`` the way its docs show: ``with
limiter.acquire():`` raises ``RateLimitExceeded`` when full, and the default ``Retries``
middleware retries the message (default backoff, default ``max_retries``); ``rated(i)`` and
``tenant(i, tenant)`` carry the run's ``rated_options`` / ``tenant_options`` (rate limits) and
record Dramatiq's retry counter (the message's ``retries`` option, read through
``CurrentMessage``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Middleware
from dramatiq.rate_limits import ConcurrentRateLimiter
from dramatiq.rate_limits.backends import RedisBackend

from cachify_core import init_cachify
from cachify_dramatiq import CachifyMiddleware, polling

from . import observe
from .config import ENV, AppConfig


class Ready(Middleware):
    """Marks the worker process group as booted (``after_worker_boot`` runs in each process)."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        observe.ready(self.config.observe_url, self.config.run)


@dataclass
class DramatiqApp:
    config: AppConfig
    broker: Any
    actors: dict[str, Any]

    def send(self, task: str, i: int, *args: Any) -> None:
        self.actors[task].send(i, *args)

    def close(self) -> None:
        self.broker.close()


def make_broker(config: AppConfig) -> Any:
    fw = config.framework_options
    if config.broker_url.startswith("amqp"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker  # needs pika

        return RabbitmqBroker(url=config.broker_url)
    return RedisBroker(
        url=config.broker_url,
        namespace=f"dq-{config.run}",
        heartbeat_timeout=int(fw.get("heartbeat_timeout_ms", 60_000)),
        maintenance_chance=int(fw.get("maintenance_chance", 1000)),
    )


def build(config: AppConfig) -> DramatiqApp:
    broker = make_broker(config)
    cachify = init_cachify(url=config.store_url, prefix=config.prefix, is_global=False)
    broker.add_middleware(CachifyMiddleware(cachify=cachify))
    broker.add_middleware(Ready(config))
    broker.add_middleware(CurrentMessage())
    limiter = ConcurrentRateLimiter(
        RedisBackend(url=config.limiter_url or config.store_url),
        f"limiter-{config.run}",
        limit=config.pool_size,
    )
    obs, run, body_s = config.observe_url, config.run, config.body_s

    # Actors return None: without the Results middleware Dramatiq warns about every other value.
    def gated(i: int) -> None:
        observe.body(obs, run, i, body_s)

    def plain(i: int) -> None:
        observe.body(obs, run, i, body_s)

    def relay(i: int, n: int) -> None:  # the hand-over floor: see pool_utilization.py
        observe.body(obs, run, i, body_s)
        if i + config.pool_size < n:
            actors["relay"].send(i + config.pool_size, n)
            polling.wake(config.queue)  # as after a hand-over: this process's consumers fetch now

    def limited(i: int) -> None:
        with limiter.acquire():
            observe.body(obs, run, i, body_s)

    def retries() -> int:
        message = CurrentMessage.get_current_message()
        return int(message.options.get("retries", 0)) if message is not None else -1

    def rated(i: int) -> None:
        observe.body(obs, run, i, body_s, retries())

    def tenant(i: int, tenant: str) -> None:
        observe.body(obs, run, i, body_s, retries(), tenant)

    def actor(fn: Any, **options: Any) -> Any:
        return dramatiq.actor(actor_name=fn.__name__, queue_name=config.queue, broker=broker, **options)(fn)

    actors = {
        "gated": actor(gated, **config.gated_options()),
        "plain": actor(plain),
        "relay": actor(relay),
        "limited": actor(limited),
        "rated": actor(rated, **config.rated()),
        "tenant": actor(tenant, **config.tenant()),
    }
    return DramatiqApp(config, broker, actors)


if os.environ.get(ENV):  # a worker process: `dramatiq apps.dramatiq_app:broker`
    broker = build(AppConfig.from_env()).broker
