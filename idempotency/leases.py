"""Keeps the leases of in-flight attempts alive: one daemon thread per process renews them all.

An attempt registers its record when the work starts and unregisters it in ``finally``. Every
third of the lease the thread extends ``locked_until`` with one conditional UPDATE; a renewal
that matches no row means a successor took the key over (our process stalled past the lease),
which is logged: the attempt's completion will then be refused by its fencing token. One shared
thread rather than one per attempt keeps the cost of a short request at a dict insert, and it
opens a database connection only when a renewal is actually due (and closes it after).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
from dataclasses import dataclass

from django.db import connections

logger = logging.getLogger("idempotency")


@dataclass
class _Lease:
    record_id: int
    token: int
    lease_seconds: float
    using: str
    scope: str
    key: str
    due: float


class LeaseKeeper:
    """Renews registered leases every ``lease_seconds / 3`` until they are unregistered."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._leases: dict[int, _Lease] = {}
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        # When the thread looks next (monotonic); infinity while it waits for a first lease.
        self._wake_at = math.inf

    def register(self, *, record_id: int, token: int, lease_seconds: float, using: str, scope: str, key: str) -> int:
        """Start renewing a lease; returns a handle for ``unregister``."""
        with self._condition:
            self._after_fork()
            handle = next(self._ids)
            due = time.monotonic() + lease_seconds / 3
            self._leases[handle] = _Lease(record_id, token, lease_seconds, using, scope, key, due)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="idempotency-lease-keeper", daemon=True)
                self._thread.start()
            # Wake the thread only if this lease is due before it looks anyway: a job of a few
            # milliseconds registers and unregisters long before, so a busy worker does not pay a
            # thread wake-up per job.
            if due < self._wake_at:
                self._condition.notify()
            return handle

    def unregister(self, handle: int) -> None:
        with self._condition:
            self._leases.pop(handle, None)

    def _after_fork(self) -> None:
        # A forked child (Celery prefork, gunicorn) inherits the registry but not the thread.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._leases.clear()
            self._thread = None
            self._wake_at = math.inf

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._leases:
                    self._wake_at = math.inf
                    self._condition.wait()
                now = time.monotonic()
                due = [(handle, lease) for handle, lease in self._leases.items() if lease.due <= now]
                if not due:
                    self._wake_at = min(lease.due for lease in self._leases.values())
                    self._condition.wait(self._wake_at - now)
                    continue
                self._wake_at = now  # renewing: a lease registered meanwhile is looked at next round
                for _, lease in due:
                    lease.due = now + lease.lease_seconds / 3
            for handle, lease in due:
                try:
                    if not self._renew(lease):
                        self._lost(handle, lease)
                except Exception:
                    # The database may be back before the lease runs out: try again at the next tick.
                    logger.exception(
                        "idempotency lease renewal failed scope=%s key=%s token=%s", lease.scope, lease.key, lease.token
                    )
            # Renewals are seconds apart: a fresh connection each round costs little, and a kept one
            # would outlive test databases and pool slots for nothing.
            for alias in {lease.using for _, lease in due}:
                connections[alias].close()

    def _lost(self, handle: int, lease: _Lease) -> None:
        with self._condition:
            # An attempt that completed while we renewed is not lost: it unregistered first.
            if self._leases.pop(handle, None) is None:
                return
        if self._completed(lease):
            return
        logger.warning(
            "idempotency lease lost scope=%s key=%s token=%s: a newer attempt holds the key, "
            "this attempt's completion will be refused",
            lease.scope,
            lease.key,
            lease.token,
        )

    @staticmethod
    def _completed(lease: _Lease) -> bool:
        # The attempt may have committed its completion between our UPDATE and its unregister.
        from .models import IdempotencyRecord

        return (
            IdempotencyRecord.objects.using(lease.using)
            .filter(pk=lease.record_id, fencing_token=lease.token, state=IdempotencyRecord.State.COMPLETED)
            .exists()
        )

    def _renew(self, lease: _Lease) -> bool:
        from .services import record_renew_lease

        return record_renew_lease(
            record_id=lease.record_id, token=lease.token, lease_seconds=lease.lease_seconds, using=lease.using
        )


lease_keeper = LeaseKeeper()
