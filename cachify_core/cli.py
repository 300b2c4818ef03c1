"""``cachify``: the operators' command line (the ``cli`` extra: click + rich).

Every command is a thin view over :mod:`cachify_core.ops` (the reads and writes, no UI):
``holds``, ``pools``, ``limits``, ``cache stats`` read (``--json`` for scripts); ``release``
and ``cache clear`` write, after a confirmation on a terminal (``--yes`` skips it; without a
terminal a write is refused unless ``--yes``); ``top`` redraws pools, waiting rooms, holds
and limits every second until ``q`` or Ctrl-C. See docs/CLI.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

try:
    import click
    from rich.console import Console, Group, RenderableType
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the cachify command line needs click and rich ({exc}): pip install 'cachify-tasks[cli]'"
    ) from None

from . import ops
from .errors import CachifyError

__all__ = ["main"]


@dataclass
class _Settings:
    url: str | None
    prefix: str
    cluster: bool | None
    store: ops.Store | None = None

    def connect(self) -> ops.Store:
        if self.store is None:
            if not self.url:
                raise click.UsageError("no Redis to look at: pass --url redis://host:6379/0 or set REDIS_URL")
            self.store = ops.connect(self.url, self.prefix, self.cluster)
        return self.store


def _store(ctx: click.Context) -> ops.Store:
    settings: _Settings = ctx.find_root().obj
    return settings.connect()


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Store failures and bad input as one clear line and exit status 1, not a traceback."""
    try:
        yield
    except (click.ClickException, click.Abort):
        raise
    except (ValueError, CachifyError) as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        if type(exc).__module__.split(".")[0] == "redis" or isinstance(exc, OSError):
            raise click.ClickException(f"the store failed: {type(exc).__name__}: {exc}") from None
        raise


def _console() -> Console:
    # A pipe or a file gets whole keys and tokens, not a table cut to 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 240)


def _json(records: Any) -> None:
    records = [asdict(r) for r in records] if isinstance(records, list) else asdict(records)
    click.echo(json.dumps(records, indent=2))


def _duration_ms(ms: float | None) -> str:
    if ms is None:
        return "no expiry"
    if ms < 1000:
        return f"{ms:.0f} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(s), 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


def _confirm(question: str, yes: bool) -> None:
    """Writes ask first on a terminal; without one they need ``--yes``."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"{question} Refused: no terminal to confirm on; pass --yes to do it anyway.")
    if not click.confirm(question, default=False):
        raise click.Abort()


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (one list of records) instead of a table."
)
yes_option = click.option("--yes", "-y", is_flag=True, help="Do it without asking.")


# -- tables (shared by the commands and `top`) -----------------------------------------------
def _holds_table(records: Sequence[ops.Hold]) -> Table:
    table = Table(title=f"holds ({len(records)})", title_justify="left")
    for column in ("key", "kind", "holder", "ttl", "waiters"):
        table.add_column(column, justify="right" if column == "ttl" else "left")
    for h in records:
        table.add_row(h.key, h.kind, h.holder, _duration_ms(h.ttl_ms), "yes" if h.waiters else "")
    return table


def _pools_table(records: Sequence[ops.Pool]) -> Table:
    table = Table(title=f"pools ({len(records)})", title_justify="left")
    for column in ("key", "in use", "parked", "oldest wait", "handed", "timed", "slots (holder: lease left)"):
        table.add_column(column, justify="left" if column.startswith(("key", "slots")) else "right")
    for p in records:
        size = "?" if p.max_size is None else str(p.max_size)
        room = p.room
        slots = "\n".join(f"{s.holder}: {_duration_ms(s.lease_ms)}" for s in p.slots) or "-"
        if p.expired:
            slots += f"\n({p.expired} expired, not pruned yet)"
        table.add_row(
            p.key,
            f"{p.in_use}/{size}",
            "-" if room is None else str(room.parked),
            "-" if room is None or not room.parked else f"{room.oldest_wait_s:.1f} s",
            "-" if room is None else str(room.handed),
            "-" if room is None else str(room.timed),
            slots,
        )
    return table


def _limits_table(records: Sequence[ops.Limit]) -> Table:
    table = Table(title=f"rate limits ({len(records)})", title_justify="left")
    for column in ("key", "rate", "remaining", "next allowed in", "backlog"):
        table.add_column(column, justify="left" if column in ("key", "rate") else "right")
    for lim in records:
        burst = f"{lim.burst}{'*' if lim.burst_assumed else ''}"
        table.add_row(
            lim.key,
            lim.rate,
            f"{lim.remaining}/{burst}",
            "now" if not lim.next_allowed_ms else _duration_ms(lim.next_allowed_ms),
            _duration_ms(lim.backlog_us / 1000),
        )
    if any(lim.burst_assumed for lim in records):
        table.caption = "* burst is not stored: taken as the rate's count (--burst N to say otherwise)"
    return table


# -- the commands ------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="REDIS_URL",
    metavar="URL",
    help="The Redis (or a node of the Redis Cluster) cachify stores on; default: $REDIS_URL.",
)
@click.option(
    "--prefix",
    default="PYC-",
    show_default=True,
    help="The instance's key prefix (init_cachify(prefix=...)).",
)
@click.option(
    "--cluster/--no-cluster",
    default=None,
    help="The URL is a Redis Cluster node (default: ask the server, INFO cluster).",
)
@click.pass_context
def main(ctx: click.Context, url: str | None, prefix: str, cluster: bool | None) -> None:
    """Look at and step into what cachify stores on Redis: holds, pools, waiting rooms, rate
    limits, caches. Reads use SCAN on every master and change nothing; `dashboard` serves the
    same live on a web page."""
    settings = _Settings(url, prefix, cluster)
    ctx.obj = settings
    ctx.call_on_close(lambda: settings.store.close() if settings.store is not None else None)


@main.command()
@click.argument("pattern", default="*")
@json_option
@click.pass_context
def holds(ctx: click.Context, pattern: str, as_json: bool) -> None:
    """Locks, run-once holds (@once, task once_key) and fill locks whose name matches PATTERN
    (a glob over the key as the application formats it: 'sync-*')."""
    with _errors():
        records = ops.holds(_store(ctx), pattern)
    if as_json:
        _json(records)
    else:
        _console().print(_holds_table(records))


@main.command()
@click.argument("pattern", default="*")
@json_option
@click.pass_context
def pools(ctx: click.Context, pattern: str, as_json: bool) -> None:
    """Pools whose name matches PATTERN: slots in use / max (max is stored only by a waiting
    room, else '?'), each slot's holder and lease left, the waiting room's length and oldest wait."""
    with _errors():
        records = ops.pools(_store(ctx), pattern)
    if as_json:
        _json(records)
    else:
        _console().print(_pools_table(records))


@main.command()
@click.argument("pattern", default="*")
@click.option(
    "--burst",
    type=click.IntRange(min=1),
    help="The burst the limiters were declared with (default: each rate's count).",
)
@json_option
@click.pass_context
def limits(ctx: click.Context, pattern: str, burst: int | None, as_json: bool) -> None:
    """Rate limits whose limiter key matches PATTERN: calls admitted now, when the next is due,
    and the stored backlog (theoretical arrival time minus now)."""
    with _errors():
        records = ops.limits(_store(ctx), pattern, burst)
    if as_json:
        _json(records)
    else:
        _console().print(_limits_table(records))


@main.group()
def cache() -> None:
    """A cached function's namespace: NAMESPACE is its @cached key template ('report-{day}')."""


@cache.command("stats")
@click.argument("namespace")
@json_option
@click.pass_context
def cache_stats(ctx: click.Context, namespace: str, as_json: bool) -> None:
    """Generation, fill epoch and stored entries (current and stale) of NAMESPACE."""
    with _errors():
        stats = ops.cache_stats(_store(ctx), namespace)
    if as_json:
        _json(stats)
        return
    table = Table(title=stats.namespace, title_justify="left", show_header=False)
    table.add_row("generation", str(stats.generation))
    table.add_row("fill epoch", str(stats.fill_epoch))
    table.add_row("entries", str(stats.entries))
    table.add_row("stale entries", f"{stats.stale} (older generations, left to their TTL)")
    _console().print(table)


@cache.command("clear")
@click.argument("namespace")
@yes_option
@json_option
@click.pass_context
def cache_clear(ctx: click.Context, namespace: str, yes: bool, as_json: bool) -> None:
    """Drop every entry of NAMESPACE at once (its generation moves on, as clear_cache())."""
    with _errors():
        store = _store(ctx)
        ns = ops.cache_namespace(store, namespace)
        _confirm(f"Clear every entry of {ns}?", yes)
        cleared = ops.cache_clear(store, namespace)
    if as_json:
        _json(cleared)
    else:
        click.echo(f"cleared {cleared.namespace}: generation is now {cleared.generation}")


def _print_releases(records: Sequence[ops.Release], dry_run: bool) -> None:
    for r in records:
        if dry_run:
            click.echo(f"would release {r.key} ({r.kind}) held by {r.holder}")
        elif r.released:
            click.echo(f"released {r.key} ({r.kind}) held by {r.holder}")
        elif r.holder:
            click.echo(f"not released: {r.key} ({r.kind}) is not held by {r.holder}")
        else:
            click.echo(f"not released: {r.key} ({r.kind}) was not held")


@main.command()
@click.argument("key", required=False)
@click.option(
    "--holder", metavar="ID", help="Release only if ID (a token or task id) holds it; a pool: that slot."
)
@click.option("--force", is_flag=True, help="Release whoever holds it (a pool: every slot).")
@click.option("--pattern", metavar="GLOB", help="Release every hold and pool slot whose name matches GLOB.")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(ops.RELEASE_KINDS),
    help="With --pattern: only these kinds (repeat; default: all).",
)
@click.option("--dry-run", is_flag=True, help="Print what would be released; change nothing.")
@yes_option
@json_option
@click.pass_context
def release(
    ctx: click.Context,
    key: str | None,
    holder: str | None,
    force: bool,
    pattern: str | None,
    kinds: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Release a hold or a pool slot: KEY as `holds`/`pools` print it ('{PYC-sync-42-once}'),
    with --holder ID (compare-and-delete) or --force; or every match of --pattern."""
    if (key is None) == (pattern is None):
        raise click.UsageError("give a KEY or --pattern GLOB (one of them)")
    with _errors():
        store = _store(ctx)
        if pattern is not None:
            if holder is not None or force:
                raise click.UsageError(
                    "--pattern releases what it lists, each with the holder it had; drop --holder/--force"
                )
            plan = ops.plan_release(store, pattern, kinds or ops.RELEASE_KINDS)
            if dry_run or not plan:
                if as_json:
                    _json(plan)
                elif not plan:
                    click.echo(f"nothing matches {pattern!r} under prefix {store.prefix!r}")
                else:
                    _print_releases(plan, True)
                return
            if not yes:
                _print_releases(plan, True)
            _confirm(f"Release these {len(plan)}?", yes)
            done = ops.apply_release(store, plan)
        else:
            assert key is not None
            if kinds:
                raise click.UsageError("--kind goes with --pattern")
            kind = ops.parse_key(key)[1]
            if (holder is None) == (not force):
                raise click.UsageError(
                    "say whose hold to release (--holder ID), or --force to release it whoever holds it"
                )
            if dry_run:
                target = f"{kind} {key}" + (f" if {holder} holds it" if holder else ", whoever holds it")
                click.echo(f"would release {target}")
                return
            _confirm(
                f"Release {kind} {key}" + (f" held by {holder}?" if holder else " whoever holds it?"), yes
            )
            done = ops.release(store, key, holder, force)
    if as_json:
        _json(done)
    else:
        _print_releases(done, False)
        if not done:
            click.echo("nothing was held")
    if not any(r.released for r in done):
        ctx.exit(1)


# -- top ---------------------------------------------------------------------------------------
class _Keys:
    """Single keys from a terminal (cbreak mode, restored on exit); without one, only waits."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno() if sys.stdin.isatty() else None
        self.saved: Any = None

    def __enter__(self) -> _Keys:
        if self.fd is not None:
            import termios
            import tty

            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None and self.saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def read(self, timeout_s: float) -> str:
        """A key pressed within ``timeout_s`` ("" if none)."""
        if self.fd is None:
            time.sleep(timeout_s)
            return ""
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        return os.read(self.fd, 32).decode("utf-8", "replace") if ready else ""


def _top_view(store: ops.Store, pattern: str, burst: int | None) -> RenderableType:
    header = Text(
        f"cachify top · {store.name} · prefix {store.prefix!r} · {time.strftime('%H:%M:%S')} · q to quit",
        style="bold",
    )
    return Group(
        header,
        _pools_table(ops.pools(store, pattern)),
        _holds_table(ops.holds(store, pattern)),
        _limits_table(ops.limits(store, pattern, burst)),
    )


@main.command()
@click.argument("pattern", default="*")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between redraws.",
)
@click.option("--burst", type=click.IntRange(min=1), help="As for `limits`.")
@click.pass_context
def top(ctx: click.Context, pattern: str, interval: float, burst: int | None) -> None:
    """A live view of pools, waiting rooms, holds and limits, redrawn every --interval seconds;
    q (or Ctrl-C) quits."""
    with _errors():
        store = _store(ctx)
        console = Console(highlight=False)
        try:
            with (
                _Keys() as keys,
                Live(
                    _top_view(store, pattern, burst), console=console, screen=True, auto_refresh=False
                ) as live,
            ):
                while True:
                    if "q" in keys.read(interval).lower():
                        break
                    live.update(_top_view(store, pattern, burst), refresh=True)
        except KeyboardInterrupt:
            pass


# -- dashboard ---------------------------------------------------------------------------------
@main.command()
@click.option("--url", "local_url", metavar="URL", help="As the group's --url (either place works).")
@click.option("--prefix", "local_prefix", help="As the group's --prefix (either place works).")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind; not loopback needs --token."
)
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option(
    "--allow-writes",
    is_flag=True,
    help="Show release and cache-clear buttons and accept them (off: read-only, writes get 403).",
)
@click.option(
    "--token",
    envvar="CACHIFY_DASHBOARD_TOKEN",
    metavar="T",
    help="Every request must carry it (open /?token=T once); required off loopback. Env: CACHIFY_DASHBOARD_TOKEN.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1, max=1.0),
    default=1.0,
    show_default=True,
    help="Seconds between reads of the store (and page updates).",
)
@click.option(
    "--history",
    "history_s",
    type=click.FloatRange(min=10, max=3600),
    default=300,
    show_default=True,
    help="Seconds of pool occupancy the sparklines keep (in this process's memory).",
)
@click.option("--burst", type=click.IntRange(min=1), help="As for `limits`.")
@click.pass_context
def dashboard(
    ctx: click.Context,
    local_url: str | None,
    local_prefix: str | None,
    host: str,
    port: int,
    allow_writes: bool,
    token: str | None,
    interval: float,
    history_s: float,
    burst: int | None,
) -> None:
    """Serve a live web dashboard (the `dashboard` extra): pools and waiting rooms, holds, rate
    limits, caches, updated every second; with --allow-writes, release and cache-clear buttons.
    Binds loopback unless --host says otherwise (then --token is required). See docs/DASHBOARD.md."""
    import logging

    try:
        import uvicorn

        from .dashboard import check_bind
        from .dashboard.app import create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs Starlette and uvicorn ({exc}): pip install 'cachify-tasks[dashboard]'"
        ) from None
    try:
        check_bind(host, token or None)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings: _Settings = ctx.find_root().obj
    if local_url:
        settings.url = local_url
    if local_prefix is not None:
        settings.prefix = local_prefix
    with _errors():
        store = _store(ctx)
        store.client.ping()
        app = create_app(
            store,
            allow_writes=allow_writes,
            token=token or None,
            interval_s=interval,
            history_s=history_s,
            burst=burst,
        )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("cachify.dashboard")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"cachify dashboard on http://{shown}:{port}/{'?token=...' if token else ''} "
        f"({'writes allowed' if allow_writes else 'read-only'}; {store.name}, prefix {store.prefix!r}); Ctrl-C stops",
        err=True,
    )
    # No access log: a first visit's URL carries the token.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=2)


if __name__ == "__main__":  # pragma: no cover
    main()
