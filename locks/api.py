"""The lock API other apps use: ``lock``, ``alock``, ``get_backend``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator

from .backends.base import BaseLockBackend
from .exceptions import LockBackendUnavailable, LockNotAcquired
from .handler import backends
from .lease import Lease

logger = logging.getLogger("locks")


def get_backend(alias: str = "default") -> BaseLockBackend:
    """The backend of ``settings.LOCKS[alias]``; ``InvalidLockBackend`` (an ImproperlyConfigured) if unknown."""
    return backends[alias]


@contextlib.contextmanager
def lock(
    name: str,
    ttl: float | None = None,
    timeout: float | None = None,
    *,
    backend: str = "default",
    auto_renew: bool = False,
) -> Iterator[Lease]:
    """Hold ``name`` for the block: ``LockNotAcquired`` after ``timeout`` s (0: one try; None: no limit)."""
    lock_backend = get_backend(backend)
    lease = lock_backend.acquire(name, ttl, timeout=timeout, auto_renew=auto_renew)
    if lease is None:
        raise LockNotAcquired(name, timeout, backend=backend)
    try:
        yield lease
    except BaseException:
        _release_quietly(lease)
        raise
    lease.release()


@contextlib.asynccontextmanager
async def alock(
    name: str,
    ttl: float | None = None,
    timeout: float | None = None,
    *,
    backend: str = "default",
    auto_renew: bool = False,
) -> AsyncIterator[Lease]:
    """``lock`` for asyncio code (Channels consumers); renewal runs as a task of the event loop."""
    lock_backend = get_backend(backend)
    lease = await lock_backend.aacquire(name, ttl, timeout=timeout, auto_renew=auto_renew)
    if lease is None:
        raise LockNotAcquired(name, timeout, backend=backend)
    try:
        yield lease
    except BaseException:
        try:
            await lease.arelease()
        except LockBackendUnavailable:
            logger.exception("could not release lock %r token %s after an error in its block", name, lease.token)
        raise
    await lease.arelease()


def _release_quietly(lease: Lease) -> None:
    """Release after the block raised: the block's exception is the one to propagate."""
    try:
        lease.release()
    except LockBackendUnavailable:
        logger.exception("could not release lock %r token %s after an error in its block", lease.name, lease.token)
