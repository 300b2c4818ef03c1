"""What metrics cost per operation: each op timed with metrics off, with Prometheus on and with
OpenTelemetry on, in the same process, rounds interleaved, the median round kept.

    python benchmarks/metrics_overhead.py [--redis-url URL] [--rounds 7] [--quick]

Ops (one "op" is the pair a caller pays for):

* ``lock``: ``with c.lock(key):`` — acquire + release (Prometheus: acquired, released, hold);
* ``pool``: ``with c.pool(key, 4):`` — slot acquire + release (the same, plus pool tracking);
* ``cache hit``: a ``@c.cached`` call served from the cache (one counter).

on the in-memory store and on Redis (``--redis-url``, else ``REDIS_URL``, else a private server
from ``tests/servers.py``; keys under ``MBENCH-<pid>-``, deleted afterwards). Reported: µs/op
per mode and the ratio on/off (1.00 = free). "off" is the code as shipped: every call site is
one ``if events.sink is not None`` test, whose own cost is printed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

from cachify_core import Cachify, init_cachify  # noqa: E402
from cachify_core.metrics import disable, enable_otel, enable_prometheus, events  # noqa: E402
from tests.servers import redis_url_or_private  # noqa: E402

MODES = ("off", "prometheus", "otel")


def ops(c: Cachify) -> dict[str, Callable[[], object]]:
    lk = c.lock("bench")
    pl = c.pool("bench", 4)

    @c.cached("bench-{x}")
    def cached(x: int) -> int:
        return x

    cached(1)

    def lock_op() -> None:
        with lk:
            pass

    def pool_op() -> None:
        with pl:
            pass

    return {"lock": lock_op, "pool": pool_op, "cache hit": lambda: cached(1)}


def switch(mode: str) -> Callable[[], None]:
    """Turn ``mode`` on; returns what turns it off again."""
    if mode == "prometheus":
        enable_prometheus(CollectorRegistry())
    elif mode == "otel":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        enable_otel(provider)

        def off() -> None:
            disable()
            provider.shutdown()

        return off
    return disable


def measure(op: Callable[[], object], n: int, rounds: int) -> dict[str, float]:
    """Median µs/op per mode over ``rounds`` interleaved rounds of ``n`` ops."""
    per_mode: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(n // 10):
        op()  # warm up (connections, caches)
    for _ in range(rounds):
        for mode in MODES:
            off = switch(mode)
            try:
                per_mode[mode].append(timeit.timeit(op, number=n) / n * 1e6)
            finally:
                off()
    return {m: statistics.median(v) for m, v in per_mode.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="fewer ops per round")
    args = parser.parse_args()
    scale = 5 if args.quick else 1
    check_ns = timeit.timeit("events.sink is not None", globals={"events": events}, number=1_000_000) * 1e3
    print(f"cost of one call-site check with metrics off: {check_ns:.0f} ns\n")
    print("| store | op | off µs/op | prometheus µs/op | ratio | otel µs/op | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    with redis_url_or_private(args.redis_url) as url:
        for store, n in (("memory", 20_000 // scale), ("redis", 2_000 // scale)):
            prefix = f"MBENCH-{os.getpid()}-"
            c = (
                init_cachify(url=url, prefix=prefix, is_global=False)
                if store == "redis"
                else init_cachify(prefix=prefix, is_global=False)
            )
            for name, op in ops(c).items():
                t = measure(op, n, args.rounds)
                print(
                    f"| {store} | {name} | {t['off']:.2f} | {t['prometheus']:.2f} | {t['prometheus'] / t['off']:.3f} "
                    f"| {t['otel']:.2f} | {t['otel'] / t['off']:.3f} |",
                    flush=True,
                )
            if store == "redis":
                import redis

                client = redis.Redis.from_url(url)
                keys = list(client.scan_iter(f"{prefix}*"))
                if keys:
                    client.delete(*keys)
                client.close()


if __name__ == "__main__":
    main()
