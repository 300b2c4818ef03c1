"""A separate process that exposes cachify's metrics over HTTP, for tests/test_metrics.py.

``python -m tests.metrics_server REDIS_URL PREFIX``: enables Prometheus, starts
``prometheus_client.start_http_server`` on a free port, does known work on Redis (3 lock
entries, 1 refused; 2 cache misses and 1 hit; a pool held while the port is printed), prints
``PORT <n>`` and waits (at most 60 s) to be stopped by its pid.

With ``PROMETHEUS_MULTIPROC_DIR`` set it runs in prometheus_client's multiprocess mode, as a
prefork worker would: the port serves a ``MultiProcessCollector`` over that directory, and the
pool gauges are refreshed from the store every 0.2 s (``gauge_refresh_s``).
"""

from __future__ import annotations

import os
import sys
import time

import prometheus_client
from prometheus_client import multiprocess

from cachify_core import CachifyLockError, init_cachify
from cachify_core.metrics import enable_prometheus


def main(url: str, prefix: str) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        enable_prometheus(gauge_refresh_s=0.2)
        served = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(served)
    else:
        enable_prometheus()
        served = prometheus_client.REGISTRY
    server, _thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=served)
    port = server.server_port
    c = init_cachify(url=url, prefix=prefix, is_global=False)
    for _ in range(3):
        with c.lock("job-lock"):
            pass
    with c.lock("job-lock"):
        try:
            with c.lock("job-lock"):
                pass
        except CachifyLockError:
            pass

    @c.cached("square-{x}")
    def square(x: int) -> int:
        return x * x

    square(2), square(2), square(3)
    held = c.pool("workers", 3)
    held.__enter__()  # stays taken: the occupancy gauge reads 1 from the store
    print(f"PORT {port}", flush=True)
    time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
