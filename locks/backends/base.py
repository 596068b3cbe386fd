"""What every lock backend does the same way: validation, the wait loop, leases, signals, metrics.

A backend supplies a ``Waiter`` (one per acquire call: one claim attempt, one wait between
attempts, and giving up) and the owner-checked primitives ``_release``, ``_extend`` and
``_verify``. Everything a caller sees (``acquire``, ``release``, ``extend``, the async twins)
is here, so both backends behave alike.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from ..exceptions import LockBackendUnavailable
from ..lease import Lease, LeaseInfo, new_owner, validate_name, validate_timeout, validate_ttl
from ..metrics import BackendMetrics
from ..signals import lock_acquired, lock_lost, lock_released

logger = logging.getLogger("locks")

T = TypeVar("T")


class Grant(NamedTuple):  # a tuple: half the cost of a frozen dataclass, made on every acquire
    """What a successful claim returns; ``sent_at`` is the monotonic time the claim was sent."""

    token: int
    acquired_at: datetime
    expires_at: datetime
    sent_at: float
    handle: str = ""  # what the backend needs to recognise this grant later (Redis: the lease value)


class Waiter:
    """One acquire call's view of a lock: claim, wait, give up. Backends subclass it."""

    deadline: float = math.inf  # the acquire call's deadline (monotonic), set before the first claim

    def try_claim(self, *, enqueue: bool) -> Grant | None:
        """One atomic claim; when it fails and ``enqueue`` is true, take (or keep) a place in line."""
        raise NotImplementedError

    def wait(self, remaining: float) -> None:
        """Block until a release may have made the lock free, at most ``remaining`` seconds."""
        raise NotImplementedError

    async def async_wait(self, remaining: float, backend: BaseLockBackend) -> None:
        await backend.run_in_thread(self.wait, remaining)

    def abandon(self, *, after_error: bool) -> None:
        """Leave the line; after an error, also drop a grant this owner may have received unseen."""


class BaseLockBackend:
    """The behaviour shared by every lock backend; see the module docstring."""

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        self.alias = alias
        self.location = params.get("LOCATION", "")
        self.options = dict(params.get("OPTIONS") or {})
        self.metrics = BackendMetrics.for_alias(alias)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} alias={self.alias!r}>"

    # --- hooks ------------------------------------------------------------------------------

    def _waiter(self, name: str, owner: str, ttl: float) -> Waiter:
        raise NotImplementedError

    def _release(self, lease: Lease) -> bool:
        """Delete the lease if it is still this owner's and unexpired; True if it was."""
        raise NotImplementedError

    def _extend(self, lease: Lease, ttl: float) -> datetime | None:
        """Set the expiry to now + ttl if the lease is still this owner's; the new expiry or None."""
        raise NotImplementedError

    def _verify(self, lease: Lease) -> bool:
        raise NotImplementedError

    def held(self) -> list[LeaseInfo]:
        """The locks held now (unexpired), oldest first."""
        raise NotImplementedError

    def force_release(self, name: str, *, actor: Any, token: int | None = None) -> bool:
        """Break ``name`` whoever holds it (only if its token is ``token``, when given); audited."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop clients and connections (the handler calls it when settings change)."""

    def close_thread_resources(self) -> None:
        """Drop what the current thread opened (called when a renewal thread ends)."""

    def store_key(self) -> tuple:
        """Identifies the store: aliases with the same key see the same locks."""
        return (type(self).__name__, self.location, tuple(sorted(self.options.items())))

    # --- acquire ------------------------------------------------------------------------------

    def acquire(
        self,
        name: str,
        ttl: float | None = None,
        blocking: bool = True,
        timeout: float | None = None,
        *,
        auto_renew: bool = False,
    ) -> Lease | None:
        """A lease on ``name``, or None if it stayed held until ``timeout`` (None waits forever)."""
        name, ttl, blocking, timeout = self._validate(name, ttl, blocking, timeout)
        owner = new_owner()
        started = time.monotonic()
        deadline = math.inf if timeout is None else started + timeout
        waiter = self._waiter(name, owner, ttl)
        waiter.deadline = deadline
        grant = None
        contended = False
        try:
            grant = waiter.try_claim(enqueue=blocking)
            if grant is None:
                contended = True
                self.metrics.contention.inc()
                while blocking and (remaining := deadline - time.monotonic()) > 0:
                    waiter.wait(remaining)
                    grant = waiter.try_claim(enqueue=True)
                    if grant is not None:
                        break
        except BaseException as exc:
            self._on_acquire_error(waiter, exc)
            raise
        return self._finish_acquire(
            waiter, grant, name=name, owner=owner, ttl=ttl, started=started, contended=contended, auto_renew=auto_renew
        )

    async def aacquire(
        self,
        name: str,
        ttl: float | None = None,
        blocking: bool = True,
        timeout: float | None = None,
        *,
        auto_renew: bool = False,
    ) -> Lease | None:
        """``acquire`` for asyncio code: the event loop is never blocked."""
        name, ttl, blocking, timeout = self._validate(name, ttl, blocking, timeout)
        owner = new_owner()
        started = time.monotonic()
        deadline = math.inf if timeout is None else started + timeout
        waiter = self._waiter(name, owner, ttl)
        waiter.deadline = deadline
        grant = None
        contended = False
        try:
            grant = await self.run_in_thread(lambda: waiter.try_claim(enqueue=blocking))
            if grant is None:
                contended = True
                self.metrics.contention.inc()
                while blocking and (remaining := deadline - time.monotonic()) > 0:
                    await waiter.async_wait(remaining, self)
                    grant = await self.run_in_thread(lambda: waiter.try_claim(enqueue=True))
                    if grant is not None:
                        break
        except BaseException as exc:
            # Cancellation included: the place in line must not be left behind.
            error = exc
            await asyncio.shield(self.run_in_thread(lambda: self._on_acquire_error(waiter, error)))
            raise
        if grant is None:
            await self.run_in_thread(lambda: waiter.abandon(after_error=False))
            waiter = None
        lease = self._finish_acquire(
            waiter, grant, name=name, owner=owner, ttl=ttl, started=started, contended=contended
        )
        if lease is not None and auto_renew:
            lease.start_async_auto_renew()
        return lease

    def _validate(self, name: Any, ttl: Any, blocking: Any, timeout: Any) -> tuple[str, float, bool, float | None]:
        name = validate_name(name)
        ttl = validate_ttl(ttl)
        timeout = validate_timeout(timeout)
        if not isinstance(blocking, bool):
            raise ValueError(f"blocking must be a bool, got {blocking!r}")
        if timeout == 0:
            blocking = False
        return name, ttl, blocking, timeout

    def _on_acquire_error(self, waiter: Waiter, exc: BaseException) -> None:
        self.metrics.error.inc()
        try:
            waiter.abandon(after_error=True)
        except Exception as cleanup_error:  # the original error is the one to report; this one is only logged
            logger.warning(
                "lock backend %r: could not leave the wait line after %s (%s); an unseen grant expires with its lease",
                self.alias,
                type(exc).__name__,
                cleanup_error,
            )

    def _finish_acquire(
        self,
        waiter: Waiter | None,
        grant: Grant | None,
        *,
        name: str,
        owner: str,
        ttl: float,
        started: float,
        contended: bool,
        auto_renew: bool = False,
    ) -> Lease | None:
        self.metrics.wait.observe(time.monotonic() - started)
        if grant is None:
            self.metrics.not_acquired.inc()
            if waiter is not None:
                waiter.abandon(after_error=False)
            return None
        self.metrics.acquired.inc()
        lease = Lease(
            backend=self,
            name=name,
            owner=owner,
            token=grant.token,
            ttl=ttl,
            acquired_at=grant.acquired_at,
            expires_at=grant.expires_at,
            deadline=grant.sent_at + ttl,
            handle=grant.handle,
        )
        self._send(lock_acquired, lease, contended=contended)
        if auto_renew:
            lease.start_auto_renew()
        return lease

    # --- release, extend, verify -------------------------------------------------------------

    def release(self, lease: Lease) -> bool:
        """Release ``lease``; False (and a log line) if it was already lost. Never touches a successor."""
        self._check_lease(lease)
        lease.stop_auto_renew()
        if lease.released:
            return False
        return self._finish_release(lease, self._release(lease))

    async def arelease(self, lease: Lease) -> bool:
        self._check_lease(lease)
        await lease.astop_auto_renew()
        if lease.released:
            return False
        return self._finish_release(lease, await self.run_in_thread(self._release, lease))

    def _finish_release(self, lease: Lease, deleted: bool) -> bool:
        if not deleted:
            lease.mark_lost("it had expired or been taken over when its holder released it")
        was_lost = lease.lost
        lease._released = True
        self.metrics.hold.observe(time.monotonic() - lease._granted_mono)
        if was_lost:
            logger.warning(
                "release of lost lock %r token %s (backend %r): nothing released, a successor is untouched",
                lease.name,
                lease.token,
                self.alias,
            )
            return False
        self._send(lock_released, lease)
        return True

    def extend(self, lease: Lease, ttl: float | None = None) -> bool:
        """Push the expiry to ``ttl`` seconds from now if the lease is still held (owner-checked)."""
        self._check_lease(lease)
        ttl = validate_ttl(lease.ttl if ttl is None else ttl)
        if lease.lost or lease.released:
            return False
        sent = time.monotonic()
        return self._finish_extend(lease, ttl, sent, self._extend(lease, ttl))

    async def aextend(self, lease: Lease, ttl: float | None = None) -> bool:
        self._check_lease(lease)
        ttl = validate_ttl(lease.ttl if ttl is None else ttl)
        if lease.lost or lease.released:
            return False
        sent = time.monotonic()
        return self._finish_extend(lease, ttl, sent, await self.run_in_thread(self._extend, lease, ttl))

    def _finish_extend(self, lease: Lease, ttl: float, sent: float, expires_at: datetime | None) -> bool:
        if expires_at is None:
            lease.mark_lost("an extension found it expired or held by another owner")
            return False
        lease._set_deadline(sent + ttl, expires_at, ttl)
        return True

    def verify(self, lease: Lease) -> bool:
        """Ask the store whether ``lease`` is still held by its owner (a read, no change)."""
        self._check_lease(lease)
        return self._verify(lease)

    async def averify(self, lease: Lease) -> bool:
        self._check_lease(lease)
        return await self.run_in_thread(self._verify, lease)

    def _check_lease(self, lease: Lease) -> None:
        if not isinstance(lease, Lease):
            raise ValueError(f"lease must be a Lease, got {type(lease).__name__}")
        if lease.backend is not self and lease.backend.store_key() != self.store_key():
            raise ValueError(f"lease of {lease.name!r} belongs to backend {lease.alias!r}, not {self.alias!r}")

    # --- events --------------------------------------------------------------------------------

    def on_lost(self, lease: Lease, reason: str) -> None:
        """Called once per lost lease (by ``Lease.mark_lost``): log, count, signal."""
        logger.error(
            "lock lost: name=%r token=%s owner=%s backend=%r: %s",
            lease.name,
            lease.token,
            lease.owner,
            self.alias,
            reason,
        )
        self.metrics.lost.inc()
        self._send(lock_lost, lease, reason=reason)

    def _send(self, signal, lease: Lease, **extra: Any) -> None:
        signal.send(type(self), name=lease.name, token=lease.token, owner=lease.owner, backend=self.alias, **extra)

    def record_force_release(self, info: LeaseInfo, *, actor: Any, using: str | None = None) -> None:
        """Write the audit entry of a force-release (the caller supplies the transaction, if any)."""
        from django.db import router

        from ..models import LockAudit

        self.metrics.force_releases.inc()
        LockAudit.objects.using(using or router.db_for_write(LockAudit)).create(
            action=LockAudit.Action.FORCE_RELEASE,
            name=info.name,
            backend=self.alias,
            token=info.token,
            owner=info.owner,
            actor=actor_label(actor),
        )
        logger.warning(
            "lock force-released: name=%r token=%s owner=%s backend=%r by %s",
            info.name,
            info.token,
            info.owner,
            self.alias,
            actor_label(actor),
        )

    # --- threads for the async API ---------------------------------------------------------------

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking backend call off the event loop, then drop what that thread opened."""

        def call() -> T:
            try:
                return fn(*args)
            finally:
                self.close_thread_resources()

        return await asyncio.to_thread(call)


def actor_label(actor: Any) -> str:
    """Who did it, as the audit log shows it: a user's username, or the string given."""
    if actor is None:
        raise ValueError("actor is required: who force-released the lock (a user or a name)")
    get_username = getattr(actor, "get_username", None)
    label = get_username() if callable(get_username) else str(actor)
    if not label:
        raise ValueError("actor must name someone")
    return label[:150]


def unavailable(alias: str, exc: BaseException) -> LockBackendUnavailable:
    return LockBackendUnavailable(alias, f"{type(exc).__name__}: {exc}")
