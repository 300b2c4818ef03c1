"""``cachify dashboard`` (docs/DASHBOARD.md) as an operator meets it: a real subprocess (the CLI
under uvicorn) on a free port, a real Redis holding real state (worker processes holding pool
slots while entries wait in the waiting room, holds taken through the library), and Debian's
Chromium driven by Playwright reading and clicking the page.

Chromium comes from Debian (``apt-get install -y chromium`` by the session fixture when
``/usr/bin/chromium`` is missing; never a downloaded browser build). Locally, no way to get it
skips the browser tests; in CI it is an error. ``CACHIFY_DASHBOARD_SCREENSHOT=docs/dashboard.png``
makes the workers' test save the page under load there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from cachify_core import Cachify, init_cachify, ops

from . import mp_workers_dash
from .servers import free_port, unavailable
from .support import as_global, join_all, start_all

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: The longest any one condition in these tests is waited for.
WAIT_S = 15.0
#: Installing Chromium on a new machine (the first test pays it): well past pytest's default.
pytestmark = pytest.mark.timeout(900)


# -- Chromium and the page ----------------------------------------------------------------------
def _install_chromium() -> None:
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        unavailable(f"{CHROMIUM} is missing and apt-get cannot run here (need root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    done = subprocess.run(install, capture_output=True, text=True, timeout=900, env=env)
    if done.returncode != 0:  # a new machine's package lists may be empty: update, then again
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, timeout=600, env=env)
        done = subprocess.run(install, capture_output=True, text=True, timeout=900, env=env)
    if done.returncode != 0 or not os.access(CHROMIUM, os.X_OK):
        unavailable(f"apt-get install -y chromium failed ({done.returncode}): {done.stderr[-2000:]}")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed with apt-get if it is missing (CI: failing to is an error)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[dev]')")
    if not os.access(CHROMIUM, os.X_OK):
        _install_chromium()
    return CHROMIUM


@dataclass
class Browser:
    page: Any
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[Browser]:
    """A page in a fresh Chromium profile; every dialog (there should be none) is recorded."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(WAIT_S * 1000)
            seen = Browser(page)

            def on_dialog(dialog: Any) -> None:
                seen.dialogs.append(f"{dialog.type}: {dialog.message}")
                dialog.dismiss()

            page.on("dialog", on_dialog)
            page.on("pageerror", lambda exc: seen.errors.append(str(exc)))
            yield seen
        finally:
            context.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=WAIT_S * 1000)
    return playwright_expect(locator)


# -- the dashboard as a subprocess ----------------------------------------------------------------
@dataclass
class Dashboard:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text("utf-8", "replace")


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, str, dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the dashboard by its pid: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cachify_core.cli", *args]


@contextlib.contextmanager
def dashboard(
    tmp_path: Path, url: str, prefix: str, *flags: str, token: str | None = None
) -> Iterator[Dashboard]:
    port = free_port()
    log = tmp_path / f"dashboard-{port}.log"
    env = {k: v for k, v in os.environ.items() if k != "CACHIFY_DASHBOARD_TOKEN"}
    with log.open("wb") as out:
        args = [
            "--url",
            url,
            "--prefix",
            prefix,
            "dashboard",
            "--port",
            str(port),
            "--interval",
            "0.5",
            *flags,
        ]
        proc = subprocess.Popen(
            cli(*args, *(["--token", token] if token else [])), stdout=out, stderr=subprocess.STDOUT, env=env
        )
    dash = Dashboard(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + WAIT_S
        headers = {"X-Cachify-Token": token} if token else {}
        while True:
            assert proc.poll() is None, f"the dashboard exited ({proc.returncode}):\n{dash.output()}"
            assert time.monotonic() < deadline, f"the dashboard did not answer:\n{dash.output()}"
            with contextlib.suppress(OSError):
                if http("GET", dash.base + "/api/snapshot", headers=headers)[0] == 200:
                    break
            time.sleep(0.1)
        yield dash
    finally:
        stop(proc)


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not in {timeout_s}s: {what}"
        time.sleep(0.05)


def instance(url: str, prefix: str) -> Cachify:
    return init_cachify(url=url, prefix=prefix, is_global=False, lock_poll_interval=0.05)


def click_through(button: Any, clicks: int) -> None:
    """Click an action button ``clicks`` times (it re-renders each tick: find it again each time)."""
    for _ in range(clicks):
        button.click()


# -- the tests --------------------------------------------------------------------------------------
def test_pool_with_parked_workers_live_and_released_from_the_page(
    flushed_redis_url: str, raw: redis.Redis, browser: Browser, tmp_path: Path
) -> None:
    """3 worker processes share a pool of 2 with a waiting room: 2 hold a slot, 3 messages wait.
    The page shows 2/2 and 3 waiting; a worker finishing hands a slot over (the page follows,
    without a reload); releasing a slot from the page frees it and a parked entry is handed
    over; holds, a forced release, a cache clear; every write is logged."""
    prefix = f"D{uuid.uuid4().hex[:8]}-"
    pool_key = "{" + prefix + "dash-pool}"
    for n in range(5):
        raw.rpush(prefix + "queue", json.dumps({"n": n, "reservation": None}))
    procs = start_all(mp_workers_dash.holding_worker, [(flushed_redis_url, prefix, i, 2) for i in range(3)])
    c = instance(flushed_redis_url, prefix)
    store = ops.connect(flushed_redis_url, prefix)
    with contextlib.ExitStack() as held:
        try:

            def room() -> tuple[int, int]:
                found = [p for p in ops.pools(store) if p.key == pool_key]
                return (found[0].in_use, found[0].room.parked if found[0].room else 0) if found else (0, 0)

            wait_for("2 slots held and 3 entries parked", lambda: room() == (2, 3))
            # the rest of an operator's morning: holds, a rate limit in use, a cache
            held.enter_context(c.lock("nightly", exp=120))
            held.enter_context(c.lock("stuck-import", exp=600))
            for _ in range(3):
                held.enter_context(c.rate_limit("tenant-acme", "5/m"))  # its state lives ~36 s
            with as_global(c):
                report = c.cached("report-{day}", ttl=300)(lambda day: f"report {day}")
                report("mon"), report("tue"), report("mon")

            with dashboard(tmp_path, flushed_redis_url, prefix, "--allow-writes") as dash:
                page = browser.page
                page.goto(dash.base + "/")
                page.evaluate("window.__sameDocument = true")
                card = page.locator(".pool", has=page.locator(".title", has_text=pool_key))
                expect(card.locator(".occupancy")).to_have_text("2/2")
                expect(card.locator(".parked")).to_have_text("3")
                expect(page.locator("#conn")).to_have_text("live")

                # a worker finishes: room_release hands its slot over; the page follows live
                worker = next(i for i in range(3) if raw.get(f"{prefix}holding:{i}"))
                raw.set(f"{prefix}let-go:{worker}", 1)
                expect(card.locator(".parked")).to_have_text("2")
                expect(card.locator(".occupancy")).to_have_text("2/2")
                assert page.evaluate("window.__sameDocument") is True, "the page reloaded"

                # release a slot from the page: freed, then handed to the longest-waiting entry
                slot = card.locator("tr.slot", has=page.locator("button")).first
                holder = slot.get_attribute("data-holder")
                assert holder
                assert not holder.startswith("#")
                button = card.locator(f'tr.slot[data-holder="{holder}"] button')
                expect(button).to_have_text("release")
                button.click()
                expect(button).to_have_text("confirm release?")
                button.click()
                expect(page.locator("#status")).to_contain_text("released slot of " + holder)
                expect(card.locator(".parked")).to_have_text("1")
                expect(card.locator(f'tr.slot[data-holder="{holder}"]')).to_have_count(0)
                assert raw.zscore(pool_key, holder) is None
                wait_for("the worker saw its slot go", lambda: raw.llen(prefix + "lost") == 1)
                shot = os.environ.get("CACHIFY_DASHBOARD_SCREENSHOT")
                if shot:  # the picture in the README: the pool under load, a few seconds of history
                    page.wait_for_timeout(3000)
                    page.screenshot(path=shot, full_page=True)

                # a hold: compare-and-delete against the holder shown
                row = page.locator("tr.hold", has=page.locator("td.key", has_text=prefix + "nightly-lock"))
                (shown,) = ops.holds(store, "nightly")
                expect(row.locator("td.holder")).to_have_text(shown.holder)
                click_through(row.locator('button[data-action="release"]'), 2)
                expect(row).to_have_count(0)
                assert not c.lock("nightly").is_locked()

                # a forced release needs a second confirmation
                stuck = page.locator(
                    "tr.hold", has=page.locator("td.key", has_text=prefix + "stuck-import-lock")
                )
                force = stuck.locator('button[data-action="force…"]')
                force.click()
                expect(force).to_have_text("release whoever holds it?")
                force.click()
                expect(force).to_have_text("really force? (2nd confirm)")
                assert c.lock("stuck-import").is_locked()
                force.click()
                expect(stuck).to_have_count(0)
                assert not c.lock("stuck-import").is_locked()

                # rate limit and cache views; a cache clear
                limit = page.locator(
                    "tr.limit", has=page.locator("td.key", has_text=prefix + "tenant-acme-rate")
                )
                expect(limit).to_contain_text("5/m")
                expect(limit.locator("td").nth(2)).to_have_text("2/5*")  # remaining burst
                cache = page.locator(
                    "tr.cache", has=page.locator("td.key", has_text=prefix + "report-{day}-cached")
                )
                expect(cache.locator(".entries")).to_have_text("2")
                expect(cache.locator(".hitrate")).to_have_text("metrics off")
                click_through(cache.locator("button"), 2)
                expect(cache.locator(".entries")).to_have_text("0")

                # the last parked entry goes; then a release leaves a slot free
                worker = next(i for i in range(3) if raw.get(f"{prefix}holding:{i}"))
                raw.set(f"{prefix}let-go:{worker}", 1)
                expect(card.locator(".parked")).to_have_text("0")
                click_through(card.locator("tr.slot", has=page.locator("button")).first.locator("button"), 2)
                expect(card.locator(".occupancy")).to_have_text("1/2")
                assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
                assert browser.dialogs == []
                assert browser.errors == []

            log = dash.output()
            writes = [
                line for line in log.splitlines() if "cachify.dashboard INFO write by 127.0.0.1:" in line
            ]
            assert len(writes) == 5, log  # two slots, two holds, one cache clear
            assert any(f"holder={holder!r}" in line and "released" in line for line in writes), log
            assert any("force (whoever holds it)" in line for line in writes), log
            assert any("cache clear" in line and "report-{day}-cached" in line for line in writes), log
        finally:
            raw.set(prefix + "stop", 1)
            join_all(procs, raw, prefix, WAIT_S)
            store.close()


def test_read_only_has_no_buttons_and_refuses_writes(
    flushed_redis_url: str, browser: Browser, tmp_path: Path
) -> None:
    prefix = f"D{uuid.uuid4().hex[:8]}-"
    c = instance(flushed_redis_url, prefix)
    with (
        c.lock("nightly", exp=120),
        c.pool("erp", 3, slot_exp=120),
        dashboard(tmp_path, flushed_redis_url, prefix) as dash,
    ):
        page = browser.page
        page.goto(dash.base + "/")
        expect(page.locator("td.key", has_text=prefix + "nightly-lock")).to_be_visible()
        expect(page.locator(".pool .title", has_text=prefix + "erp-pool")).to_be_visible()
        expect(page.locator("#writes")).to_have_text("read-only")
        assert page.locator("button").count() == 0
        key = "{" + prefix + "nightly-lock}"
        status, body, _ = http(
            "POST", dash.base + "/api/release", {"key": key, "force": True, "confirm": key}
        )
        assert status == 403
        assert "--allow-writes" in body
        # not even from the page itself, nonce and all
        answer = page.evaluate(
            """async (key) => {
                const nonce = document.querySelector('meta[name="cachify-nonce"]').content;
                const r = await fetch("/api/cache/clear", {method: "POST",
                    headers: {"Content-Type": "application/json", "X-Cachify-Nonce": nonce},
                    body: JSON.stringify({namespace: "report-{day}"})});
                return r.status;
            }""",
            key,
        )
        assert answer == 403
        assert c.lock("nightly").is_locked()
        assert "refused release from 127.0.0.1" in dash.output()


def test_untrusted_keys_render_as_text(flushed_redis_url: str, browser: Browser, tmp_path: Path) -> None:
    prefix = f"D{uuid.uuid4().hex[:8]}-"
    c = instance(flushed_redis_url, prefix)
    script, img = "<script>alert(1)</script>", '<img src=x onerror="alert(2)">'
    with (
        c.lock(script, exp=120),
        c.pool(img, 2, slot_exp=120),
        dashboard(tmp_path, flushed_redis_url, prefix, "--allow-writes") as dash,
    ):
        page = browser.page
        page.goto(dash.base + "/")
        cell = page.locator("td.key", has_text=script)
        expect(cell).to_be_visible()
        expect(cell).to_have_text("{" + prefix + script + "-lock}")
        expect(page.locator(".pool .title", has_text=img)).to_be_visible()
        page.wait_for_timeout(1500)  # a few more live renders
        assert browser.dialogs == []
        assert page.locator("main img, main script").count() == 0
        assert page.locator("script").count() == 1  # the page's own app.js


def test_non_loopback_bind_without_token_refuses_to_start(flushed_redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CACHIFY_DASHBOARD_TOKEN"}
    args = ["--url", flushed_redis_url, "dashboard", "--host", "0.0.0.0", "--port", str(free_port())]
    done = subprocess.run(cli(*args), capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done
    assert "refusing to serve the dashboard on '0.0.0.0' without a token" in done.stderr
    assert "--token" in done.stderr
    assert "CACHIFY_DASHBOARD_TOKEN" in done.stderr


def test_a_token_guards_every_request(flushed_redis_url: str, browser: Browser, tmp_path: Path) -> None:
    prefix = f"D{uuid.uuid4().hex[:8]}-"
    token = uuid.uuid4().hex
    c = instance(flushed_redis_url, prefix)
    with c.lock("nightly", exp=120), dashboard(tmp_path, flushed_redis_url, prefix, token=token) as dash:
        for path in ("/", "/api/snapshot", "/api/events", "/static/app.js"):
            assert http("GET", dash.base + path)[0] == 401, path
        assert http("GET", dash.base + "/api/snapshot", headers={"X-Cachify-Token": "x" * 32})[0] == 401
        status, _, headers = http("GET", f"{dash.base}/?token={token}")
        assert status == 303
        assert headers["location"] == "/"
        assert "HttpOnly" in headers["set-cookie"]
        assert "SameSite=strict" in headers["set-cookie"]
        page = browser.page
        page.goto(f"{dash.base}/?token={token}")
        assert page.url == dash.base + "/"  # the token left the address bar
        expect(page.locator("#conn")).to_have_text("live")  # the event stream got in by cookie
        expect(page.locator("td.key", has_text=prefix + "nightly-lock")).to_be_visible()


def test_filtering_holds_by_pattern(flushed_redis_url: str, browser: Browser, tmp_path: Path) -> None:
    prefix = f"D{uuid.uuid4().hex[:8]}-"
    c = instance(flushed_redis_url, prefix)
    with contextlib.ExitStack() as held:
        for name in ("sync-1", "sync-2", "import-1"):
            held.enter_context(c.lock(name, exp=120))
        dash = held.enter_context(dashboard(tmp_path, flushed_redis_url, prefix))
        page = browser.page
        page.goto(dash.base + "/")
        expect(page.locator("tr.hold")).to_have_count(3)
        page.locator("#holds-pattern").fill("sync-*")
        expect(page.locator("tr.hold")).to_have_count(2)
        expect(page.locator("#holds-count")).to_have_text("(2 of 3 match)")


def test_cluster_holds_and_pools_from_every_master(
    flushed_redis_cluster: list[tuple[str, int]], tmp_path: Path
) -> None:
    from .conftest import sync_cluster_client
    from .test_cluster import lock_key, spread

    prefix = f"D{uuid.uuid4().hex[:8]}-"
    client = sync_cluster_client(flushed_redis_cluster)
    c = init_cachify(sync_client=client, prefix=prefix, is_global=False)
    # names picked to land 4 on every master (keys that differ only in a counter can share
    # their CRC16's top bits and so all land in one master's slot range)
    names = spread(c, lambda k: lock_key(c, k), per_node=4)
    host, port = flushed_redis_cluster[0]
    try:
        with contextlib.ExitStack() as held:
            for name in names:
                held.enter_context(c.lock(name, exp=120))
            held.enter_context(c.pool("erp", 2, slot_exp=120))
            dash = held.enter_context(dashboard(tmp_path, f"redis://{host}:{port}/0", prefix))
            snap = json.loads(http("GET", dash.base + "/api/snapshot")[1])
            assert snap["error"] is None
            assert sorted(h["name"] for h in snap["holds"]) == sorted(names)
            # each hold is labelled with the master that holds its key (asked of the cluster
            # itself), and the twelve keys land on more than one master
            owner = {}
            for h in snap["holds"]:
                node = client.get_node_from_key(h["key"])
                owner[h["name"]] = f"{node.host}:{node.port}"
            assert {h["name"]: h["node"] for h in snap["holds"]} == owner
            assert len(set(owner.values())) > 1, f"all keys on one master: {owner}"
            assert [(p["name"], p["in_use"]) for p in snap["pools"]] == [("erp", 1)]
    finally:
        client.close()


def test_hit_rate_from_the_processes_metrics(flushed_redis_url: str) -> None:
    """Embedded in an application's process (create_app / the Collector), the cache view reads
    hit rates from the active Prometheus recorder; with metrics off it says so."""
    from prometheus_client import CollectorRegistry

    from cachify_core.dashboard.state import Collector
    from cachify_core.metrics import disable, enable_prometheus

    prefix = f"D{uuid.uuid4().hex[:8]}-"
    c = instance(flushed_redis_url, prefix)
    store = ops.connect(flushed_redis_url, prefix)
    collector = Collector(store)
    try:
        enable_prometheus(CollectorRegistry())
        with as_global(c):
            report = c.cached("report-{day}", ttl=300)(lambda day: day.upper())
            for day in ("mon", "mon", "mon", "tue"):
                report(day)
        (row,) = collector.collect().caches
        assert (row["namespace"], row["entries"]) == (f"{prefix}report-{{day}}-cached", 2)
        assert (row["hits"], row["misses"], row["hit_rate"]) == (2, 2, 0.5)
        assert collector.collect().metrics == "prometheus"
        disable()
        snap = collector.collect()
        assert snap.metrics == "off"
        assert snap.caches[0]["hit_rate"] is None
    finally:
        disable()
        store.close()
