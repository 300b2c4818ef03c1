"""Owner tokens: the value a lock or pool slot holds, naming the acquisition that owns it.

A token is ``<host>:<pid>:<random>:<counter>``. The random part is drawn once per process and
again after ``fork()`` (a child must never reuse its parent's tokens); the counter makes each
acquisition distinct. Drawing randomness per acquisition would cost ~1 µs; a counter costs
~0.1 µs, which matters on the in-memory backend.
"""

from __future__ import annotations

import itertools
import os
import socket

__all__ = ["new_token"]

_prefix = ""
_counter = itertools.count()


def _reseed() -> None:
    global _prefix, _counter
    _prefix = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(6).hex()}:"
    _counter = itertools.count()


_reseed()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def new_token() -> str:
    """A process-unique, host-identifying owner token (no I/O)."""
    return f"{_prefix}{next(_counter)}"
