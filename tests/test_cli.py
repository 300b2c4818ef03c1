"""The ``cachify`` command line against a real Redis and a real 3-master Redis Cluster.

State is made with the library's own API (``lock``, ``once``, ``pool``, a task policy's claim,
the waiting-room primitives, ``rate_limit``, ``cached``); each read command's ``--json`` is
checked against what the store holds (raw redis-py reads, and the library's own views:
``pool(...).waiting()``, ``retry_after``). Writes are checked to change exactly what they say.
Most runs go through click's ``CliRunner``; ``test_installed_script_*`` run the installed
``cachify`` script in a subprocess, ``top`` under a pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cachify_core import Cachify, cached, init_cachify, lock, once, ops, pool, rate_limit
from cachify_core.backends.base import RoomSettings
from cachify_core.cli import main
from cachify_core.rooms import registry_key
from cachify_core.tasks import TaskPolicy, parse_task_options

from .conftest import sync_cluster_client
from .support import as_global

#: The installed console script, next to this interpreter.
CACHIFY = Path(sys.executable).with_name("cachify")


@dataclass
class Env:
    """One store to look at: its URL (a single server, or one node of the cluster), a fresh
    prefix, an instance on it, and a raw client (cluster-aware) for checking what is stored."""

    url: str
    prefix: str
    c: Cachify
    raw: Any
    cluster: bool

    def run(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, ["--url", self.url, "--prefix", self.prefix, *args], input=input)

    def read(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def key(self, name: str) -> str:
        return "{" + self.prefix + name + "}"


@pytest.fixture(params=["redis", "cluster"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    import redis

    prefix = f"T{uuid.uuid4().hex[:8]}-"
    if request.param == "redis":
        url = request.getfixturevalue("flushed_redis_url")
        c = init_cachify(url=url, prefix=prefix, is_global=False, lock_poll_interval=0.05)
        raw: Any = redis.Redis.from_url(url)
    else:
        nodes = request.getfixturevalue("flushed_redis_cluster")
        url = f"redis://{nodes[0][0]}:{nodes[0][1]}"
        c = init_cachify(sync_client=sync_cluster_client(nodes), prefix=prefix, is_global=False)
        raw = sync_cluster_client(nodes)
    try:
        with as_global(c):
            yield Env(url, prefix, c, raw, request.param == "cluster")
    finally:
        raw.close()


# -- holds -------------------------------------------------------------------------------------
def test_holds_lists_locks_once_holds_and_task_holds_as_stored(env: Env) -> None:
    def job(order_id: int) -> None: ...

    policy = TaskPolicy(parse_task_options("tasks.job", job, {"once_key": "order-{order_id}"}), env.c)
    assert not policy.claim("task-id-7", (7,), {}).duplicate

    seen: dict[str, Any] = {}

    @once("sync-{order_id}")
    def sync(order_id: int) -> None:
        seen["holds"] = env.read("holds")
        seen["stored"] = {h["key"]: env.raw.get(h["key"]) for h in seen["holds"]}

    # several keys with random names, so that on the cluster they land on more than one master
    # (names differing only in a counter can share their CRC16's top bits, hence one master)
    names = [f"nightly-{uuid.uuid4().hex[:8]}" for _ in range(6)]
    nightly = [lock(name, exp=100) for name in names]
    for held in nightly:
        held.__enter__()
    try:
        sync(42)
    finally:
        for held in nightly:
            held.__exit__(None, None, None)

    holds = {h["key"]: h for h in seen["holds"]}
    expected = {env.key(f"{name}-lock") for name in names} | {
        env.key("sync-42-once"),
        env.key("order-7-once"),
    }
    assert set(holds) == expected
    for key, h in holds.items():
        assert h["holder"] == seen["stored"][key].decode()  # what the store held, exactly
        assert 0 < h["ttl_ms"] <= 3_600_000
        assert h["waiters"] is False
    assert holds[env.key("order-7-once")]["holder"] == "task-id-7"
    assert holds[env.key("order-7-once")]["kind"] == "once"
    assert holds[env.key("sync-42-once")]["name"] == "sync-42"
    assert holds[env.key(f"{names[0]}-lock")]["kind"] == "lock"
    assert 90_000 < holds[env.key(f"{names[0]}-lock")]["ttl_ms"] <= 100_000
    if env.cluster:
        assert len({h["node"] for h in holds.values()}) > 1  # every master was scanned

    # a PATTERN matches the name; released holds are gone
    assert [h["key"] for h in env.read("holds", "order-*")] == [env.key("order-7-once")]
    assert {h["key"] for h in env.read("holds")} == {env.key("order-7-once")}


# -- pools and waiting rooms -------------------------------------------------------------------
def test_pools_show_slots_room_and_max_as_stored(env: Env) -> None:
    stripe = pool("stripe", 2, slot_exp=60)
    stripe.__enter__()
    plain = pool("erp", 3, slot_exp=30)
    plain.__enter__()
    try:
        b = env.c.sync_backend
        room = RoomSettings(registry_key(env.prefix), 2, 60_000)
        assert (
            b.room_acquire(env.prefix + "stripe-pool", "tok-b", "e0", b"p0", room).status.value == "acquired"
        )
        for i in (1, 2):
            assert (
                b.room_acquire(env.prefix + "stripe-pool", f"tok-{i}", f"e{i}", b"p", room).status.value
                == "parked"
            )
        time.sleep(0.2)
        pools = {p["name"]: p for p in env.read("pools")}
        waiting = stripe.waiting()
        stored = {m.decode(): sc for m, sc in env.raw.zrange(env.key("stripe-pool"), 0, -1, withscores=True)}
        erp_stored = [m.decode() for m in env.raw.zrange(env.key("erp-pool"), 0, -1)]
    finally:
        stripe.__exit__(None, None, None)
        plain.__exit__(None, None, None)

    assert set(pools) == {"stripe", "erp"}
    s = pools["stripe"]
    assert {slot["holder"] for slot in s["slots"]} == set(stored)
    assert s["in_use"] == 2
    assert s["max_size"] == 2
    assert s["expired"] == 0
    for slot in s["slots"]:
        assert 0 < slot["lease_ms"] <= 60_000
        assert slot["reserved"] is False
    assert s["room"]["parked"] == waiting.parked == 2
    assert s["room"]["oldest_wait_s"] >= 0.2
    assert abs(s["room"]["oldest_wait_s"] - waiting.oldest_wait_s) < 0.5
    assert (s["room"]["handed"], s["room"]["timed"], s["room"]["watching"]) == (0, 0, 0)

    e = pools["erp"]
    assert e["in_use"] == 1
    assert e["max_size"] is None
    assert e["room"] is None
    assert [slot["holder"] for slot in e["slots"]] == erp_stored

    # the table says "?" for an unknown max (the pool has been left since: 0 in use)
    b.pool_acquire(env.prefix + "erp-pool", "tok-e", 3, 60_000, False)
    assert "1/?" in env.run("pools", "erp").output


def test_pools_show_a_hand_over_reservation(env: Env) -> None:
    b = env.c.sync_backend
    key = env.prefix + "mail-pool"
    room = RoomSettings(registry_key(env.prefix), 1, 60_000)
    assert b.room_acquire(key, "tok-a", "e0", b"p0", room).status.value == "acquired"
    assert b.room_acquire(key, "tok-b", "e1", b"p1", room).status.value == "parked"
    assert b.room_release(key, "tok-a", room).handed  # the slot is reserved for e1
    (p,) = env.read("pools", "mail")
    assert [(s["holder"], s["reserved"]) for s in p["slots"]] == [("#e1", True)]
    assert p["room"]["parked"] == 0
    assert p["room"]["handed"] == 1
    # a reservation is not a holder's slot: release refuses it, and removes nothing
    result = env.run("release", env.key("mail-pool"), "--holder", "#e1", "--yes")
    assert result.exit_code == 1
    assert "reservation" in result.output
    assert env.raw.zscore(env.key("mail-pool"), "#e1") is not None


# -- rate limits -------------------------------------------------------------------------------
def test_limits_report_remaining_and_next_allowed(env: Env) -> None:
    for _ in range(3):
        with rate_limit("api-acme", "3/m", nowait=True):
            pass
    with rate_limit("search", "10/m", nowait=True):
        pass
    retry_after_s = rate_limit("api-acme", "3/m").retry_after()

    limits = {lim["name"]: lim for lim in env.read("limits")}
    assert set(limits) == {"api-acme", "search"}
    a = limits["api-acme"]
    assert a["key"] == env.key("api-acme-rate") + ":3/60000ms"
    assert a["rate"] == "3/m"
    assert a["emission_us"] == 20_000_000
    assert a["tat_us"] == int(env.raw.get(a["key"]))  # the stored TAT, exactly
    assert a["burst"] == 3
    assert a["burst_assumed"] is True
    assert a["remaining"] == 0
    assert 59_000_000 < a["backlog_us"] <= 60_000_000
    # the next call is due when the backlog has shrunk to (burst - 1) emissions: ~20 s
    assert abs(a["next_allowed_ms"] / 1000 - retry_after_s) < 0.5
    s = limits["search"]
    assert s["remaining"] == 9
    assert s["next_allowed_ms"] == 0

    # a limiter declared with burst=1: say so, and the numbers follow
    (a1,) = env.read("limits", "api-*", "--burst", "1")
    assert a1["burst"] == 1
    assert a1["burst_assumed"] is False
    assert 59_000 < a1["next_allowed_ms"] <= 60_000


# -- caches ------------------------------------------------------------------------------------
def test_cache_stats_and_clear(env: Env) -> None:
    calls: list[str] = []

    @cached("report-{day}")
    def report(day: str) -> str:
        calls.append(day)
        return day

    report("mon")
    report.clear_cache()
    report("tue")
    report("wed")
    stats = env.read("cache", "stats", "report-{day}")
    assert stats == {
        "namespace": f"{env.prefix}report-{{day}}-cached",
        "generation": 1,
        "fill_epoch": 0,
        "entries": 2,
        "stale": 1,
        "node": stats["node"],
    }

    refused = env.run("cache", "clear", "report-{day}")  # no terminal, no --yes
    assert refused.exit_code == 2
    assert "--yes" in refused.output
    assert env.read("cache", "stats", "report-{day}")["generation"] == 1

    cleared = env.read("cache", "clear", "report-{day}", "--yes")
    assert cleared == {"namespace": f"{env.prefix}report-{{day}}-cached", "generation": 2}
    report("tue")
    assert calls == ["mon", "tue", "wed", "tue"]  # the clear made every entry a miss
    after = env.read("cache", "stats", "report-{day}")
    assert (after["entries"], after["stale"]) == (1, 2)  # tue again; mon and wed are stale


# -- release -----------------------------------------------------------------------------------
def test_release_a_hold_is_owner_checked(env: Env) -> None:
    held = lock("nightly", exp=100)
    held.__enter__()
    key = env.key("nightly-lock")
    token = env.raw.get(key).decode()

    wrong = env.run("release", key, "--holder", "someone-else", "--yes")
    assert wrong.exit_code == 1
    assert "not held by someone-else" in wrong.output
    assert env.raw.get(key).decode() == token  # nothing released

    dry = env.run("release", key, "--force", "--dry-run")
    assert dry.exit_code == 0
    assert "would release" in dry.output
    assert env.raw.get(key).decode() == token

    refused = env.run("release", key, "--holder", token)  # no terminal, no --yes
    assert refused.exit_code == 2
    assert "pass --yes" in refused.output
    assert env.raw.get(key).decode() == token

    done = env.read("release", key.strip("{}"), "--holder", token, "--yes")  # braces optional
    assert done == [{"key": key, "kind": "lock", "holder": token, "released": True}]
    assert env.raw.get(key) is None
    assert not held.is_locked()

    held.__enter__()
    token = env.raw.get(key).decode()
    assert env.read("release", key, "--force", "--yes") == [
        {"key": key, "kind": "lock", "holder": token, "released": True}
    ]
    assert env.raw.get(key) is None


def test_release_a_pool_slot(env: Env) -> None:
    b = env.c.sync_backend
    key = env.key("stripe-pool")
    for token in ("tok-a", "tok-b"):
        assert b.pool_acquire(env.prefix + "stripe-pool", token, 5, 60_000, False)

    wrong = env.run("release", key, "--holder", "tok-x", "--yes")
    assert wrong.exit_code == 1
    assert pool("stripe", 5).size() == 2

    assert env.read("release", key, "--holder", "tok-a", "--yes") == [
        {"key": key, "kind": "pool", "holder": "tok-a", "released": True}
    ]
    assert [m.decode() for m in env.raw.zrange(key, 0, -1)] == ["tok-b"]

    assert [r["holder"] for r in env.read("release", key, "--force", "--yes")] == ["tok-b"]
    assert pool("stripe", 5).size() == 0


def test_release_pattern_dry_run_deletes_nothing_then_releases_what_it_listed(env: Env) -> None:
    b = env.c.sync_backend
    for i in range(5):
        assert b.lock_acquire(f"{env.prefix}job-{i}-once", f"task-{i}", 100_000, False)
    assert b.lock_acquire(f"{env.prefix}keep-once", "task-keep", 100_000, False)
    assert b.pool_acquire(f"{env.prefix}job-pay-pool", "tok-p", 2, 100_000, False)

    def snapshot() -> dict[str, Any]:
        keys = [env.key(f"job-{i}-once") for i in range(5)] + [env.key("keep-once")]
        return {k: env.raw.get(k) for k in keys} | {"pool": env.raw.zrange(env.key("job-pay-pool"), 0, -1)}

    before = snapshot()
    plan = env.read("release", "--pattern", "job-*", "--dry-run")
    assert snapshot() == before  # a dry run changes nothing
    assert sorted((r["key"], r["holder"]) for r in plan) == sorted(
        [(env.key(f"job-{i}-once"), f"task-{i}") for i in range(5)] + [(env.key("job-pay-pool"), "tok-p")]
    )
    assert all(r["released"] is False for r in plan)

    text = env.run("release", "--pattern", "job-*", "--dry-run")
    assert text.exit_code == 0
    assert text.output.count("would release") == 6

    only_once = env.read("release", "--pattern", "job-*", "--kind", "once", "--dry-run")
    assert {r["kind"] for r in only_once} == {"once"}

    # a hold that changed hands after its plan was read is left alone (owner-checked)
    store = ops.connect(env.url, env.prefix)
    try:
        stale_plan = ops.plan_release(store, "job-0")
        assert b.lock_force_release(f"{env.prefix}job-0-once")
        assert b.lock_acquire(f"{env.prefix}job-0-once", "task-new", 100_000, False)
        assert [r.released for r in ops.apply_release(store, stale_plan)] == [False]
        assert env.raw.get(env.key("job-0-once")) == b"task-new"
    finally:
        store.close()

    done = env.read("release", "--pattern", "job-*", "--yes")
    assert sum(r["released"] for r in done) == 6
    assert env.raw.get(env.key("keep-once")) == b"task-keep"
    assert env.raw.exists(env.key("job-pay-pool")) == 0
    assert all(env.raw.get(env.key(f"job-{i}-once")) is None for i in range(5))


def test_bad_input_is_named(env: Env) -> None:
    r = env.run("release", env.key("stripe-pool") + ":room", "--force", "--yes")
    assert r.exit_code == 1
    assert "companion key" in r.output
    r = env.run("release", "whatever", "--force", "--yes")
    assert r.exit_code == 1
    assert "not a lock, once, fill or pool key" in r.output
    r = env.run("release", env.key("x-lock"))
    assert r.exit_code == 2
    assert "--holder" in r.output
    r = env.run("release")
    assert r.exit_code == 2
    assert "--pattern" in r.output
    r = CliRunner().invoke(main, ["holds"], env={"REDIS_URL": ""})
    assert r.exit_code == 2
    assert "REDIS_URL" in r.output


# -- the installed script ----------------------------------------------------------------------
def _script_env(env: Env) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    out["REDIS_URL"] = env.url
    return out


def test_installed_script_reads_redis_url(env: Env) -> None:
    assert CACHIFY.exists(), f"{CACHIFY} is not installed: pip install -e '.[cli]'"
    held = lock("nightly", exp=100)
    held.__enter__()
    try:
        proc = subprocess.run(
            [str(CACHIFY), "--prefix", env.prefix, "holds", "--json"],
            env=_script_env(env),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        held.__exit__(None, None, None)
    assert proc.returncode == 0, proc.stderr
    (h,) = json.loads(proc.stdout)
    assert h["key"] == env.key("nightly-lock")


def _read_until(fd: int, wanted: bytes, timeout_s: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout_s
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
    return seen


def test_top_draws_in_a_terminal_and_quits_on_q(env: Env) -> None:
    stripe = pool("stripe", 2, slot_exp=60)
    stripe.__enter__()
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [str(CACHIFY), "--prefix", env.prefix, "top", "--interval", "0.2"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=_script_env(env) | {"COLUMNS": "160", "LINES": "50", "TERM": "xterm"},
        close_fds=True,
    )
    os.close(secondary)
    try:
        screen = _read_until(primary, b"stripe-pool", 30)
        assert b"stripe-pool" in screen, screen[-2000:]
        assert b"pools (1)" in screen
        # it redraws: the header comes again
        assert b"cachify top" in _read_until(primary, b"cachify top", 5)
        os.write(primary, b"q")
        assert proc.wait(timeout=15) == 0
    finally:
        stripe.__exit__(None, None, None)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(primary)


def test_top_quits_on_ctrl_c(env: Env) -> None:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [str(CACHIFY), "--prefix", env.prefix, "top"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=_script_env(env) | {"COLUMNS": "120", "LINES": "40"},
        close_fds=True,
    )
    os.close(secondary)
    try:
        assert b"holds (0)" in _read_until(primary, b"holds (0)", 30)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C on its terminal sends
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(primary)
