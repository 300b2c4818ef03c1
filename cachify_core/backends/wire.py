"""Sending one Redis command and reading its reply with the least client-side work.

redis-py's ``execute_command`` wraps every command in retry, observability and pool
bookkeeping: about 50 µs of CPU per command here, against about 30 µs for writing the request
and parsing the reply (hiredis) on a connection we keep ourselves. On loopback that CPU is
most of an operation's cost, so the Redis backend sends through these wires:

* connections are redis-py ``Connection`` objects built with the client's own settings (host,
  auth, TLS, timeouts, parser), kept in a LIFO stack per wire: as many as were in use at once,
  up to :data:`MAX_IDLE` (and the pool's ``max_connections``);
* a connection idle for over a second is checked before use (``can_read``: the server may have
  closed it), and one that raised is disconnected, never reused mid-reply; one answered with an
  error reply is kept (it is in step), except after ``READONLY``: a primary demoted by a
  failover, where a new connection may reach the new primary (DNS-based failover);
* a fork empties the stack (sockets are not shared with a child);
* cluster clients, and anything that is not a plain ``redis.Redis``, use ``execute_command``;
* :meth:`SyncWire.pipeline` / :meth:`AsyncWire.pipeline` send several commands in one write
  and read their replies in order (one round trip); a command's error reply is returned in
  its place (the connection stays in step), a broken connection raises;
* with hiredis installed (the ``redis`` extra brings it) and the client's default UTF-8
  encoding, requests are packed by ``hiredis.pack_command`` in C: 3 µs for an admission batch
  of three scripts (13 keys and 9 arguments in the largest) against 23 µs through redis-py's
  per-argument encoder, measured here. The bytes on the wire are the same.

No retries: a command that fails on a live connection may have run, and re-running a lock or
pool script could take a second slot; the caller gets ``CachifyBackendError`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import Callable
from typing import Any

__all__ = ["AsyncWire", "SyncWire"]

#: Replies of a pipeline: each command's reply, or the ``ResponseError`` it answered with.
Replies = list[Any]

#: A connection unused for longer than this is checked before use (one poll syscall).
IDLE_CHECK_S = 1.0
#: Idle connections kept per wire, at most (and never more than the client pool's own
#: ``max_connections``: 100 by default on redis-py 8, 2**31 before): every connection a burst
#: of concurrent callers opened is kept for the next burst. A cap below a worker's concurrency
#: (Taskiq runs 100 deliveries at once by default) made each burst open and close the surplus: a
#: connect, redis-py's handshake and a close per request above the cap, which doubled the CPU
#: of an asyncio claim at send. A burst above the cap still opens and closes its surplus.
MAX_IDLE = 256

_now = time.monotonic

#: Packs a list of commands into the bytes of one write (see :func:`_packer`).
Packer = Callable[[list[tuple[Any, ...]]], Any]


def _packer(kwargs: dict[str, Any]) -> Packer | None:
    """hiredis's C packer when it encodes exactly as the connection would, else None.

    redis-py encodes ``str`` with the connection's ``encoding``/``encoding_errors`` and numbers
    with ``repr``; hiredis uses UTF-8 (strict) and the same ``repr``, so the two agree only on
    the defaults. Our commands carry only str, bytes and int/float arguments."""
    if kwargs.get("encoding", "utf-8").lower().replace("_", "-") not in ("utf-8", "utf8"):
        return None
    if kwargs.get("encoding_errors", "strict") != "strict":
        return None
    try:
        from hiredis import pack_command
    except ImportError:
        return None

    def pack(commands: list[tuple[Any, ...]]) -> list[bytes]:
        # a list: ``send_packed_command`` writes each item (a bare bytes would be iterated)
        return [b"".join([pack_command(command) for command in commands])]

    return pack


def _lean(client: Any) -> bool:
    pool = getattr(client, "connection_pool", None)
    return (
        pool is not None
        and getattr(client, "connection", None) is None  # not a single-connection client
        and hasattr(pool, "connection_class")
        and hasattr(pool, "connection_kwargs")
        and type(pool).__name__ == "ConnectionPool"  # sentinel/blocking pools keep their own logic
    )


class _Wire:
    """What both wires keep: the client, how to open a connection like its pool does, idle ones."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.lean = _lean(client)
        if self.lean:
            pool = client.connection_pool
            self._cls = pool.connection_class
            self._kwargs = dict(pool.connection_kwargs)
            self._pack = _packer(self._kwargs)
            from redis.exceptions import ReadOnlyError, ResponseError

            self._error_reply: type[Exception] = ResponseError
            self._read_only: type[Exception] = ReadOnlyError
        self._idle: list[tuple[Any, float]] = []
        limit = getattr(getattr(client, "connection_pool", None), "max_connections", None)
        self._max_idle = min(MAX_IDLE, limit) if isinstance(limit, int) and limit > 0 else MAX_IDLE

    def _in_step(self, replies: Replies) -> bool:
        """Whether a connection that read ``replies`` is kept: not after a ``READONLY``."""
        return not any(isinstance(reply, self._read_only) for reply in replies)

    def _packed(self, conn: Any, commands: list[tuple[Any, ...]]) -> Any:
        """``commands`` as the chunks of one write: hiredis's packer, else the connection's."""
        return (self._pack or conn.pack_commands)(commands)


class SyncWire(_Wire):
    """Blocking command path for one ``redis.Redis`` (or a fallback to its ``execute_command``)."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self._pid = os.getpid()

    def _take(self) -> Any:
        if self._pid != os.getpid():
            self._idle = []
            self._pid = os.getpid()
        try:
            conn, used_at = self._idle.pop()
        except IndexError:
            return self._cls(**self._kwargs)
        if _now() - used_at > IDLE_CHECK_S:
            try:
                stale = conn.can_read()  # EOF (closed by the server) or unread data
            except Exception:
                stale = True
            if stale:
                conn.disconnect()  # reconnects on the next send
        return conn

    def _give(self, conn: Any) -> None:
        if len(self._idle) < self._max_idle:
            self._idle.append((conn, _now()))
        else:
            conn.disconnect()

    def __call__(self, *args: Any) -> Any:
        if not self.lean:
            return self.client.execute_command(*args)
        conn = self._take()
        try:
            conn.send_packed_command(self._packed(conn, [args]))
            reply = conn.read_response()
        except self._error_reply as exc:  # an error reply (a NOSCRIPT, say): in step
            self._settle(conn, [exc])
            raise
        except BaseException:
            conn.disconnect()
            raise
        self._give(conn)
        return reply

    def pipeline(self, commands: list[tuple[Any, ...]]) -> Replies:
        """Send ``commands`` in one write, read their replies (only on a lean wire)."""
        assert self.lean, "pipeline() needs a plain redis.Redis client"
        conn = self._take()
        replies: Replies = []
        try:
            conn.send_packed_command(self._packed(conn, commands))
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except self._error_reply as exc:  # that command's error reply: the rest follow
                    replies.append(exc)
        except BaseException:
            conn.disconnect()
            raise
        self._settle(conn, replies)
        return replies

    def _settle(self, conn: Any, replies: Replies) -> None:
        if self._in_step(replies):
            self._give(conn)
        else:
            conn.disconnect()


class AsyncWire(_Wire):
    """The asyncio twin, for one event loop (asyncio connections belong to the loop that opened them)."""

    def abandon(self) -> None:
        """Close the idle sockets of a wire whose event loop has closed (no awaiting possible)."""
        for conn, _used in self._idle:
            writer = getattr(conn, "_writer", None)
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.transport.abort()
        self._idle = []

    async def _take(self) -> Any:
        try:
            conn, used_at = self._idle.pop()
        except IndexError:
            return self._cls(**self._kwargs)
        if _now() - used_at > IDLE_CHECK_S and conn.is_connected:
            try:
                stale = await conn.can_read()
            except Exception:
                stale = True
            if stale:
                await conn.disconnect()
        return conn

    async def _give(self, conn: Any) -> None:
        if len(self._idle) < self._max_idle:
            self._idle.append((conn, _now()))
        else:
            await conn.disconnect()

    @staticmethod
    async def _drop(conn: Any) -> None:
        # Cancelled or failed mid-reply: the socket may hold a partial reply; drop it.
        with contextlib.suppress(BaseException):  # already failing; the original error matters
            await asyncio.shield(conn.disconnect(nowait=True))

    @staticmethod
    async def _send(conn: Any, chunks: Any) -> None:
        """Write a packed request. redis-py bounds every write with ``asyncio.wait_for``, which
        on Python < 3.12 runs it as a task of its own: two more event-loop passes per request.
        Here the bytes go straight to the transport, which hands them to the socket at once;
        only when the socket did not take them all is the drain awaited, bounded by the
        connection's ``socket_timeout`` as redis-py bounds it."""
        writer = getattr(conn, "_writer", None)
        if writer is None or conn.health_check_interval or writer.transport.is_closing():
            await conn.send_packed_command(chunks)  # connects (or health-checks) as redis-py does
            return
        writer.writelines(chunks)
        if not writer.transport.get_write_buffer_size():
            return
        try:
            await asyncio.wait_for(writer.drain(), conn.socket_timeout)
        except asyncio.TimeoutError as exc:  # not an OSError before Python 3.11
            from redis.exceptions import TimeoutError as RedisTimeoutError

            raise RedisTimeoutError("Timeout writing to socket") from exc

    async def _replies(self, conn: Any, count: int) -> Replies:
        """Read ``count`` replies, each reply or the ``ResponseError`` it answered with.

        On a connected hiredis connection the replies come straight off its hiredis reader
        and stream, under one ``socket_timeout`` for the batch: redis-py's
        ``read_response`` opens an ``asyncio.timeout`` (a timer scheduled and cancelled) and
        checks its state once per reply, about 15 µs each here, and an admission batch has
        three replies. A push frame (RESP3) goes to redis-py's push handler, as redis-py does
        with it. Anything else (Python 3.10, the pure-Python parser, a connection not yet
        connected, health checks on, RESP3 on a hiredis without push frames) reads reply by
        reply through redis-py. Any error while reading leaves the connection to the caller,
        which drops it: a partial reply is never read as the next request's."""
        fast = _hiredis_stream(conn)
        if fast is None:
            replies: Replies = []
            for _ in range(count):
                try:
                    replies.append(await conn.read_response())
                except self._error_reply as exc:
                    replies.append(exc)
            return replies
        reader, stream, push = fast
        not_enough_data = _not_enough_data()
        replies = []
        try:
            async with _timeout(conn.socket_timeout):
                while len(replies) < count:
                    reply = reader.gets()
                    if reply is not_enough_data:
                        chunk = await stream.read(_READ_SIZE)
                        if not chunk:
                            raise _closed()
                        reader.feed(chunk)
                        continue
                    if push is not None and isinstance(reply, push):
                        await conn._parser.handle_push_response(reply)
                        continue
                    if isinstance(reply, Exception) and not isinstance(reply, self._error_reply):
                        raise reply  # hiredis's protocol error, as redis-py raises it
                    replies.append(reply)
        except TimeoutError as exc:  # OSError's subclass: the batch's deadline, or the OS's
            if exc.errno is not None:  # ETIMEDOUT from the socket: a dead connection, not a slow one
                raise _closed() from exc
            from redis.exceptions import TimeoutError as RedisTimeoutError

            raise RedisTimeoutError("Timeout reading from socket") from exc
        except OSError as exc:  # a reset socket, as redis-py words it
            raise _closed() from exc
        return replies

    async def __call__(self, *args: Any) -> Any:
        if not self.lean:
            return await self.client.execute_command(*args)
        conn = await self._take()
        try:
            await self._send(conn, self._packed(conn, [args]))
            replies = await self._replies(conn, 1)
        except BaseException:
            await self._drop(conn)
            raise
        await self._settle(conn, replies)
        (reply,) = replies
        if isinstance(reply, self._error_reply):
            raise reply  # an error reply: the connection stays in step
        return reply

    async def pipeline(self, commands: list[tuple[Any, ...]]) -> Replies:
        """The asyncio twin of :meth:`SyncWire.pipeline`."""
        assert self.lean, "pipeline() needs a plain redis.asyncio.Redis client"
        conn = await self._take()
        try:
            await self._send(conn, self._packed(conn, commands))
            replies = await self._replies(conn, len(commands))
        except BaseException:
            await self._drop(conn)
            raise
        await self._settle(conn, replies)
        return replies

    async def _settle(self, conn: Any, replies: Replies) -> None:
        if self._in_step(replies):
            await self._give(conn)
        else:
            await self._drop(conn)


#: ``asyncio.timeout`` (Python 3.11 and later); on 3.10 replies are read through redis-py.
_timeout: Any = getattr(asyncio, "timeout", None)
#: Bytes asked of the stream per read (redis-py's own default ``socket_read_size``).
_READ_SIZE = 65536


@functools.cache
def _not_enough_data() -> object:
    """What redis-py's hiredis reader returns while a reply is incomplete (its own sentinel;
    ``False`` before redis-py 5.1). Looked up at the first read, not at import: cachify's core
    imports no third-party package until a Redis backend is used."""
    try:
        from redis._parsers.hiredis import NOT_ENOUGH_DATA
    except ImportError:  # redis-py without that name
        return False
    return NOT_ENOUGH_DATA


def _hiredis_stream(conn: Any) -> tuple[Any, Any, Any] | None:
    """The hiredis reader, asyncio stream and push-frame type (RESP3's, else None) of a
    connected connection parsed by hiredis, else None."""
    parser = getattr(conn, "_parser", None)
    if _timeout is None or type(parser).__name__ != "_AsyncHiredisParser":
        return None
    if getattr(conn, "health_check_interval", None):
        return None  # redis-py's reads move its next health check on; ours would not
    if not getattr(parser, "_connected", False):
        return None
    reader, stream = getattr(parser, "_reader", None), getattr(conn, "_reader", None)
    if reader is None or stream is None or getattr(parser, "_stream", None) is not stream:
        return None
    push = getattr(parser, "_hiredis_PushNotificationType", None)
    if push is None and str(getattr(conn, "protocol", 2) or 2) != "2":
        return None  # RESP3 with a hiredis that cannot tell a push frame from a reply
    return reader, stream, push


def _closed() -> Exception:
    from redis.exceptions import ConnectionError as RedisConnectionError

    return RedisConnectionError("Connection closed by server.")
