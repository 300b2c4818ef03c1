"""Worker apps of the real-worker harness (``benchmarks/harness``), one module per framework.

Each module builds its broker, its cachify instance and its tasks from a :class:`~.config.AppConfig`
(read from ``CFY_BENCH_*`` environment variables in a worker process, passed directly in the
harness process that sends). Task bodies write their start and end to the observation Redis
(:mod:`.observe`), so every measurement is made from outside the workers.
"""
