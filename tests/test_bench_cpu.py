"""The benchmarks' CPU meter (benchmarks/harness/cpu.py) reads real processes: a child that
burns CPU shows it, one that sleeps does not, and the Redis server the tests use is found."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import redis

from benchmarks.harness.cpu import CHILD, LOOPBACK, CpuMeter, children, cpu_table, per_task_us, redis_pid

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

#: A child that spins for about 0.4 s of CPU, then says so and sleeps until stopped.
SPIN = (
    "import time\n"
    "end = time.process_time() + 0.4\n"
    "while time.process_time() < end: pass\n"
    "print('spun', flush=True)\n"
    "time.sleep(60)\n"
)


def _started(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def test_a_child_that_spins_is_counted_and_one_that_sleeps_is_not() -> None:
    meter = CpuMeter(worker=os.getpid())
    sleeper = _started("import time\ntime.sleep(60)\n")
    try:
        deadline = time.monotonic() + 10
        while sleeper.pid not in children(os.getpid()) and time.monotonic() < deadline:
            time.sleep(0.01)
        before = meter.read()
        assert f"{CHILD}{sleeper.pid}" in before
        spinner = _started(SPIN)
        try:
            assert spinner.stdout is not None
            assert spinner.stdout.readline().strip() == "spun"  # bounded: the child spins 0.4 s
            after = meter.read()
        finally:
            _stop(spinner)
    finally:
        _stop(sleeper)
    per = per_task_us(before, after, 1)
    # born between the reads: counted from its start; the sleeper adds about nothing
    assert 0.3e6 <= per["worker children"] <= 5e6
    sleeper_s = after[f"{CHILD}{sleeper.pid}"] - before[f"{CHILD}{sleeper.pid}"]
    assert sleeper_s < 0.05


def test_a_child_gone_between_reads_leaves_the_children_out() -> None:
    sleeper = _started("import time\ntime.sleep(60)\n")
    try:
        meter = CpuMeter(worker=os.getpid())
        deadline = time.monotonic() + 10
        before = meter.read()
        while f"{CHILD}{sleeper.pid}" not in before and time.monotonic() < deadline:
            time.sleep(0.01)
            before = meter.read()
    finally:
        _stop(sleeper)
    per = per_task_us(before, meter.read(), 10)
    assert "worker children" not in per
    assert "worker" in per
    assert "this process" in per


def test_the_redis_server_on_loopback_is_found_and_read(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    if client.connection_pool.connection_kwargs.get("host") not in LOOPBACK:
        client.close()
        pytest.skip(f"REDIS_URL is not on this machine's loopback: {redis_url}")
    pid = redis_pid(redis_url)
    assert pid is not None
    meter = CpuMeter(redis=pid)
    before = meter.read()
    try:
        for _ in range(10_000):  # bounded: about 0.1-0.5 s of the server's CPU
            client.ping()
    finally:
        client.close()
    assert per_task_us(before, meter.read(), 10_000)["redis"] > 2.0  # µs per PING: 20 ms or more


def test_a_server_elsewhere_or_unanswering_gives_no_pid() -> None:
    assert redis_pid("redis://192.0.2.1:6379/0") is None  # not loopback: not asked at all
    assert redis_pid(f"redis://127.0.0.1:{_closed_port()}/0") is None  # nobody listening


def test_the_table_gives_ratios_against_its_base_row_and_n_a_where_unread() -> None:
    lines = cpu_table(
        [("gated", {"a": 150.0, "b": 100.0}), ("plain", {"a": 100.0, "b": 100.0}), ("half", {"a": 1.0})],
        {"a": "A", "b": "B"},
        "CPU",
        base="plain",
    )
    assert "CPU ratio against plain" in lines[1]
    assert lines[-3:] == [
        "| gated | 150 | 100 | 250 | 0.80x |",
        "| plain | 100 | 100 | 200 | 1.00x |",
        "| half | 1 | n/a | n/a | n/a |",
    ]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
