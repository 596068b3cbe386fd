"""Exceptions of the ``locks`` app, importable from ``locks``."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class LockError(Exception):
    """Base class of the errors the lock API raises."""


class LockNotAcquired(LockError):
    """``lock()`` gave up: the lock stayed held by someone else until the timeout passed."""

    def __init__(self, name: str, timeout: float | None, *, backend: str = "") -> None:
        self.name = name
        self.timeout = timeout
        self.backend = backend
        wait = "on the first try" if not timeout else f"within timeout={timeout}s"
        super().__init__(f"lock {name!r} (backend {backend!r}) was not acquired {wait}")


class LockLost(LockError):
    """The lease is no longer held: it expired, was force-released, or another holder took over."""

    def __init__(self, name: str, token: int, reason: str) -> None:
        self.name = name
        self.token = token
        self.reason = reason
        super().__init__(f"lock {name!r} with token {token} was lost: {reason}")


class LockBackendUnavailable(LockError):
    """The lock store (database or Redis) could not be reached; nothing was granted."""

    def __init__(self, backend: str, detail: str) -> None:
        self.backend = backend
        self.detail = detail
        super().__init__(f"lock backend {backend!r} is unavailable: {detail}")


class InvalidLockBackend(ImproperlyConfigured, ValueError):
    """An alias that ``settings.LOCKS`` does not define, or a backend that cannot be loaded.

    Both a configuration problem and a bad argument value (a typo in ``backend=``), so it is
    an ``ImproperlyConfigured`` as Django's cache handler raises, and a ``ValueError``.
    """
