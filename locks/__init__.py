"""Distributed locks on the database and on Redis: leases, fencing tokens, force-release."""

from __future__ import annotations

from .api import alock, get_backend, lock
from .exceptions import InvalidLockBackend, LockBackendUnavailable, LockError, LockLost, LockNotAcquired
from .fencing import StaleFencingToken
from .lease import Lease, LeaseInfo

__all__ = [
    "InvalidLockBackend",
    "Lease",
    "LeaseInfo",
    "LockBackendUnavailable",
    "LockError",
    "LockLost",
    "LockNotAcquired",
    "StaleFencingToken",
    "alock",
    "get_backend",
    "lock",
]
