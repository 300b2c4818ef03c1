"""The dashboard's web app (the ``dashboard`` extra: Starlette, served by uvicorn).

Routes: ``GET /`` the page (static files from the package, no build step), ``GET /api/snapshot``
one reading as JSON, ``GET /api/events`` the same as server-sent events every tick,
``POST /api/release`` and ``POST /api/cache/clear`` the writes (403 unless ``allow_writes``).

One background task reads the store every ``interval_s`` (:class:`~.state.Collector`, in a
worker thread: ops is sync) and wakes every open event stream; a write reads again at once.

Who gets in (:class:`_Guard`, pure ASGI so event streams are not buffered):

* with a token, every request shows it: header ``X-Cachify-Token`` (or
  ``Authorization: Bearer``), or the cookie a ``GET /?token=T`` sets once (then redirected to a
  URL without it); without a token (loopback only, :func:`~.state.check_bind`) the ``Host``
  header must name this machine, so a page elsewhere cannot reach it by DNS rebinding;
* a write is a JSON ``POST`` carrying ``X-Cachify-Nonce``: the HMAC of the session cookie the
  page was served with (SameSite=Strict), which another site can neither read nor forge.

Every write (and every refused one) is logged on ``cachify.dashboard``: client address, what,
when (UTC), and the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import asdict
from http.cookies import SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

try:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the cachify dashboard needs Starlette and uvicorn ({exc}): pip install 'cachify-tasks[dashboard]'"
    ) from None

from .. import ops
from ..errors import CachifyError
from .state import Collector, Snapshot, is_loopback, session_nonce

__all__ = ["TOKEN_COOKIE", "create_app"]

log = logging.getLogger("cachify.dashboard")

TOKEN_COOKIE = "cachify_token"
SESSION_COOKIE = "cachify_session"
NONCE_HEADER = "x-cachify-nonce"
#: A stream with nothing new sends a comment this often, so proxies keep it open.
KEEPALIVE_S = 15.0
#: Largest write request body accepted.
MAX_BODY_BYTES = 16_384


class _Hub:
    """The latest snapshot and a version counter every event stream waits on."""

    def __init__(self) -> None:
        self.latest: Snapshot | None = None
        self.version = 0
        self.changed = asyncio.Condition()
        self.poke = asyncio.Event()

    async def publish(self, snap: Snapshot) -> None:
        async with self.changed:
            self.latest = snap
            self.version += 1
            self.changed.notify_all()

    async def newer_than(self, version: int, timeout_s: float) -> int:
        async with self.changed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(lambda: self.version > version), timeout_s)
            return self.version


def _cookies(scope: Scope) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            with contextlib.suppress(Exception):
                jar.load(value.decode("latin-1"))
    return {k: m.value for k, m in jar.items()}


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown"


def _host_name(host: str) -> str:
    """The name in a ``Host`` header, without its port: ``[::1]:8765`` → ``[::1]``."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0]


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class _Guard:
    """Token (when set) on every request, else a loopback ``Host``; see the module docstring."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.token is None:
            if not is_loopback(_host_name(_header(scope, b"host") or "")):
                await PlainTextResponse(
                    "this dashboard answers only to a loopback Host (127.0.0.1, localhost, [::1])", 421
                )(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        auth = _header(scope, b"authorization") or ""
        offered = _header(scope, b"x-cachify-token") or (
            auth[7:] if auth.lower().startswith("bearer ") else None
        )
        if _same(offered, self.token) or _same(_cookies(scope).get(TOKEN_COOKIE), self.token):
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if scope["method"] == "GET" and _same((query.get("token") or [None])[0], self.token):
            response = Response(status_code=303, headers={"location": "/", "cache-control": "no-store"})
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict", path="/")
            await response(scope, receive, send)
            return
        log.warning("refused %s %s from %s: no valid token", scope["method"], scope["path"], _client(scope))
        await PlainTextResponse(
            "a token is required: open /?token=T once, or send the header X-Cachify-Token: T", 401
        )(scope, receive, send)


#: The files the page loads, read once from the package data (nothing else is served).
STATIC_TYPES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


def _asset(name: str) -> str:
    return (
        resources.files(__package__ or "cachify_core.dashboard")
        .joinpath("static")
        .joinpath(name)
        .read_text("utf-8")
    )


def _page(html: str, writes: bool, nonce: str) -> str:
    # Both values are ours (hex, a fixed word): nothing from the store goes into the HTML.
    return html.replace("__NONCE__", nonce).replace("__WRITES__", "on" if writes else "off")


def _pattern(request: Request) -> str:
    pattern = request.query_params.get("pattern", "*") or "*"
    if len(pattern) > 200:
        raise ValueError("pattern is longer than 200 characters")
    return pattern


def create_app(
    store: ops.Store,
    *,
    allow_writes: bool = False,
    token: str | None = None,
    interval_s: float = 1.0,
    history_s: float = 300.0,
    burst: int | None = None,
) -> ASGIApp:
    """The dashboard as an ASGI app on ``store`` (a :func:`cachify_core.ops.connect` result).

    Serve it with uvicorn (``cachify dashboard`` does), or mount it in your own app: there,
    if metrics are enabled in that process, the cache view shows hit rates. ``token``: every
    request must carry it (required for a non-loopback bind; :func:`~.state.check_bind`)."""
    if not 0.05 <= interval_s <= 60:
        raise ValueError(f"interval_s must be between 0.05 and 60 seconds, got {interval_s!r}")
    collector = Collector(store, writes=allow_writes, history_s=history_s, burst=burst)
    secret = secrets.token_bytes(32)
    hub: _Hub | None = None
    page = _asset("index.html")
    assets = {name: _asset(name) for name in STATIC_TYPES}

    async def poll(h: _Hub) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await h.publish(await asyncio.to_thread(collector.collect))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(h.poke.wait(), max(0.0, interval_s - (loop.time() - began)))
            h.poke.clear()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        nonlocal hub
        hub = _Hub()
        task = asyncio.create_task(poll(hub))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def current() -> _Hub:
        assert hub is not None, "the dashboard app runs under a server that sends lifespan events"
        return hub

    async def index(request: Request) -> Response:
        session = request.cookies.get(SESSION_COOKIE)
        if not session or len(session) != 32:
            session = secrets.token_hex(16)
        response = Response(
            _page(page, allow_writes, session_nonce(secret, session)),
            media_type="text/html; charset=utf-8",
            headers={
                "cache-control": "no-store",
                "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                "x-content-type-options": "nosniff",
                "referrer-policy": "no-referrer",
            },
        )
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict", path="/")
        return response

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:
            return PlainTextResponse("not found", 404)
        return Response(assets[name], media_type=STATIC_TYPES[name], headers={"cache-control": "no-cache"})

    async def latest() -> Snapshot:
        h = current()
        if h.latest is None:
            await h.newer_than(0, 10.0)
        assert h.latest is not None
        return h.latest

    async def snapshot(request: Request) -> Response:
        try:
            pattern = _pattern(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse((await latest()).view(pattern), headers={"cache-control": "no-store"})

    async def events(request: Request) -> Response:
        try:
            pattern = _pattern(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        h = current()

        async def stream() -> AsyncIterator[str]:
            seen = 0
            yield "retry: 1000\n\n"
            while True:
                version = await h.newer_than(seen, KEEPALIVE_S)
                if version == seen or h.latest is None:
                    yield ": idle\n\n"
                    continue
                seen = version
                yield f"data: {json.dumps(h.latest.view(pattern), separators=(',', ':'))}\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def write_body(request: Request, action: str) -> dict[str, Any] | Response:
        """The JSON body of an allowed write, or the response refusing it (logged)."""
        who = _client(request.scope)
        if not allow_writes:
            log.warning("refused %s from %s: writes are off (start with --allow-writes)", action, who)
            return JSONResponse({"error": "writes are off: start the dashboard with --allow-writes"}, 403)
        session = request.cookies.get(SESSION_COOKIE) or ""
        if not session or not _same(request.headers.get(NONCE_HEADER), session_nonce(secret, session)):
            log.warning("refused %s from %s: no valid %s header", action, who, NONCE_HEADER)
            return JSONResponse({"error": "missing or stale nonce: reload the page"}, 403)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "send the write as application/json"}, 415)
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return JSONResponse({"error": "request body too large"}, 413)
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, 400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, 400)
        return body

    def _done(request: Request, action: str, detail: str, outcome: str) -> None:
        when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        log.info("write by %s at %s: %s %s -> %s", _client(request.scope), when, action, detail, outcome)
        current().poke.set()

    async def release(request: Request) -> Response:
        body = await write_body(request, "release")
        if isinstance(body, Response):
            return body
        key, holder, force = body.get("key"), body.get("holder"), body.get("force") is True
        if not isinstance(key, str) or (holder is not None and not isinstance(holder, str)):
            return JSONResponse(
                {"error": "release needs 'key' (a string) and 'holder' (a string) or 'force'"}, 400
            )
        if force and (holder is not None or body.get("confirm") != key):
            return JSONResponse(
                {"error": "a forced release names no holder and repeats the key as 'confirm'"}, 400
            )
        try:
            kind = ops.parse_key(key)[1]
            if force and kind == "pool":
                raise ValueError("release: a pool's slots are released one by one, each by its holder")
            done = await asyncio.to_thread(ops.release, store, key, None if force else holder, force)
        except (ValueError, CachifyError) as exc:
            log.warning("refused release from %s: %r holder=%r: %s", _client(request.scope), key, holder, exc)
            return JSONResponse({"error": str(exc)}, 400)
        released = any(r.released for r in done)
        shown = f"{kind} {key!r} " + ("force (whoever holds it)" if force else f"holder={holder!r}")
        was = ", ".join(repr(r.holder) for r in done)
        _done(request, "release", shown, f"released (held by {was})" if released else "not released")
        return JSONResponse({"released": released, "results": [asdict(r) for r in done]})

    async def cache_clear(request: Request) -> Response:
        body = await write_body(request, "cache clear")
        if isinstance(body, Response):
            return body
        namespace = body.get("namespace")
        if not isinstance(namespace, str):
            return JSONResponse({"error": "cache clear needs 'namespace' (a string)"}, 400)
        try:
            cleared = await asyncio.to_thread(ops.cache_clear, store, namespace)
        except (ValueError, CachifyError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        _done(request, "cache clear", repr(cleared.namespace), f"generation {cleared.generation}")
        return JSONResponse(asdict(cleared))

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/api/snapshot", snapshot, methods=["GET"]),
            Route("/api/events", events, methods=["GET"]),
            Route("/api/release", release, methods=["POST"]),
            Route("/api/cache/clear", cache_clear, methods=["POST"]),
            Route("/static/{name}", static, methods=["GET"]),
            Route("/favicon.ico", lambda _request: Response(status_code=204), methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    return _Guard(app, token)
