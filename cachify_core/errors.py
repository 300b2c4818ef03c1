"""Every exception cachify raises.

Messages match py-cachify 3.1 where it has one (``'{key} is already locked!'``,
``'{key} is full (max_size={n})'``), so code that logs or matches them keeps working.
"""

from __future__ import annotations

__all__ = [
    "CachifyBackendError",
    "CachifyError",
    "CachifyInitError",
    "CachifyKeyError",
    "CachifyLockError",
    "CachifyLockNotOwnedError",
    "CachifyPoolFullError",
    "CachifyRateLimitedError",
    "CachifyUnsupportedError",
]


class CachifyError(Exception):
    """Base class of every cachify error."""


class CachifyInitError(CachifyError):
    """The library (or one of its backends) is not set up for the call that was made."""


class CachifyKeyError(CachifyError, ValueError):
    """A key template does not fit the function it decorates, or its arguments at call time.

    A ``ValueError`` too, as py-cachify raises ``ValueError`` for the same mismatch.
    """


class CachifyLockError(CachifyError):
    """A lock (or ``once`` hold) could not be acquired or released."""


class CachifyLockNotOwnedError(CachifyLockError):
    """A release was asked of a lock that the caller does not hold.

    Nothing was deleted: the lock, if any, still belongs to whoever holds it.
    """


class CachifyPoolFullError(CachifyError):
    """Every slot of a pool is taken."""


class CachifyRateLimitedError(CachifyError):
    """A rate limit does not admit the call now (``nowait``), or not within ``timeout``.

    ``key`` is the limiter's key (its template filled in, without the instance prefix);
    ``retry_after_s`` the seconds until it would admit the call, as the backend reported when it
    refused (other callers may get in first). Nothing was counted for the refused call.
    """

    def __init__(self, key: str, retry_after_s: float, rates: str = "") -> None:
        self.key = key
        self.retry_after_s = retry_after_s
        self.rates = rates
        limits = f" ({rates})" if rates else ""
        super().__init__(f"{key} is rate limited{limits}; retry after {retry_after_s:.3f}s")

    def __reduce__(self) -> tuple[type[CachifyRateLimitedError], tuple[str, float, str]]:
        # pickled across processes (task results, multiprocessing) with its fields, not its message
        return type(self), (self.key, self.retry_after_s, self.rates)


class CachifyBackendError(CachifyError):
    """The backend server could not be reached or did not answer in time.

    The message names the operation and the server. Locks, ``once`` and pools fail closed on it;
    ``cached`` fails open (calls the function) unless told otherwise.
    """


class CachifyUnsupportedError(CachifyError, NotImplementedError):
    """The backend cannot do what was asked atomically (e.g. a waiting room on a custom client).

    The message names the backend and the operation; check the backend's capability flag
    (``supports_waiting_room``) before calling.
    """
