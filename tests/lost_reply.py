"""A TCP proxy in front of a real Redis server that can lose one reply: the request reaches the
server and is carried out, and the client's connection is closed before the answer reaches it
— what a client sees when the store dies, or the network drops, between the two.

    with ReplyLosingProxy("127.0.0.1", 6379) as proxy:
        url = proxy.url(0)
        proxy.lose_next_reply()   # the next script call is carried out, its reply never arrives
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time

__all__ = ["ReplyLosingProxy"]

#: A lost reply: the server's answer is read until it has been quiet this long, then dropped.
QUIET_S = 0.05
#: Bounds of the proxy's waits, so a test never hangs on it.
REPLY_WITHIN_S = 5.0


class ReplyLosingProxy:
    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._armed = threading.Event()
        self._to = b""
        self._closed = threading.Event()
        #: Replies lost so far (a test checks its fault happened).
        self.lost = 0
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def lose_next_reply(self, to: bytes = b"EVALSHA") -> None:
        """Lose the reply to the next request that contains ``to`` (a script call, by default:
        not a connection's handshake)."""
        self._to = to
        self._armed.set()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._pipe, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pipe(self, client: socket.socket) -> None:
        server = socket.create_connection(self._upstream, timeout=REPLY_WITHIN_S)
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, server)
        sel.register(server, selectors.EVENT_READ, client)
        try:
            while not self._closed.is_set():
                for key, _ in sel.select(timeout=0.2):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(65536)
                    if not data:
                        return
                    if source is client and self._armed.is_set() and self._to in data:
                        self._armed.clear()
                        server.sendall(data)
                        self._swallow_reply(server)
                        self.lost += 1
                        return  # the client's connection closes with its answer unread
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            for s in (client, server):
                with contextlib.suppress(OSError):
                    s.close()

    @staticmethod
    def _swallow_reply(server: socket.socket) -> None:
        """Read the server's answer (so the request was surely carried out) and drop it."""
        deadline = time.monotonic() + REPLY_WITHIN_S
        got = False
        while time.monotonic() < deadline:
            server.settimeout(QUIET_S if got else max(deadline - time.monotonic(), 0.01))
            try:
                chunk = server.recv(65536)
            except TimeoutError:
                if got:
                    return
                continue
            if not chunk:
                return
            got = True

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._accepting.join(timeout=2)
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> ReplyLosingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
