"""The real-worker harness shared by ``benchmarks/pool_utilization.py`` and ``benchmarks/chaos.py``.

- :mod:`.servers`: private ``redis-server`` processes (started on free ports, killed and
  restarted on the same port, stopped) and a throw-away RabbitMQ vhost.
- :mod:`.processes`: worker processes, each in its own process group, killed and stopped by it.
- :mod:`.frameworks`: how each framework's worker is started with N slots, and what it sends.
- :mod:`.workers`: a measurement's set of workers and its sending, readiness and waiting.
- :mod:`.records`: what the task bodies recorded, turned into completed / lost / duplicated,
  concurrency, makespan, FIFO order and recovery times.
- :mod:`.stats`: Redis ``INFO`` deltas (round trips and commands per task on the store).
"""
