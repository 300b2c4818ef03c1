"""Counting the requests this process sends to Redis, for the benchmarks' round-trip columns
(nothing measured pipelines across operations, so requests = round trips).

One ``redis.Connection.send_packed_command`` per blocking request; one
``asyncio.StreamWriter.writelines`` per asyncio one: redis-py's asyncio connection and cachify's
asyncio wire (which writes to the transport itself, without redis-py's per-write task) both
write a request with one such call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def counting_requests() -> Iterator[list[int]]:
    """Count the requests sent inside the block: ``count[0]`` of the list it yields."""
    import redis.connection as sync_conn

    count = [0]
    own = sync_conn.Connection.__dict__.get("send_packed_command")  # restored afterwards
    sync_send: Any = sync_conn.Connection.send_packed_command
    writelines: Any = asyncio.StreamWriter.writelines

    def send(conn: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return sync_send(conn, *args, **kwargs)

    def write(writer: Any, data: Any) -> None:
        count[0] += 1
        writelines(writer, data)

    setattr(sync_conn.Connection, "send_packed_command", send)  # noqa: B010
    setattr(asyncio.StreamWriter, "writelines", write)  # noqa: B010
    try:
        yield count
    finally:
        setattr(asyncio.StreamWriter, "writelines", writelines)  # noqa: B010
        if own is None:
            del sync_conn.Connection.send_packed_command
        else:
            setattr(sync_conn.Connection, "send_packed_command", own)  # noqa: B010
