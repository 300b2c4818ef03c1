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
