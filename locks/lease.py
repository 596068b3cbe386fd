"""Leases: what a holder gets from a backend, how it renews, and how a lost lease makes itself known."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from .exceptions import LockBackendUnavailable, LockLost
from .settings import lock_settings

if TYPE_CHECKING:
    from .backends.base import BaseLockBackend

logger = logging.getLogger("locks")

MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class LeaseInfo:
    """A held lock as ``backend.held()`` reports it."""

    name: str
    owner: str
    token: int
    acquired_at: datetime
    expires_at: datetime
    backend: str = ""


# The random part of owner identities: a random start per process, then one more per acquire.
# Reading os.urandom for every acquire cost more than the rest of new_owner; a counter also
# cannot repeat within a process (for 2**32 acquires), which random draws could.
_owner_suffixes = itertools.count(secrets.randbits(32))


def new_owner() -> str:
    """A holder identity: node name, pid, thread and a random part (one per acquire)."""
    suffix = next(_owner_suffixes) & 0xFFFFFFFF
    return f"{lock_settings.NODE_NAME}:{os.getpid()}:{threading.get_native_id()}:{suffix:08x}"


def validate_name(name: object) -> str:
    if not isinstance(name, str):
        raise ValueError(f"name must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError("name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"name must be at most {MAX_NAME_LENGTH} characters, got {len(name)}")
    if "\x00" in name:
        raise ValueError("name must not contain NUL characters")
    return name


def validate_ttl(ttl: object) -> float:
    if ttl is None:
        ttl = lock_settings.DEFAULT_TTL
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise ValueError(f"ttl must be a finite number of seconds, got {ttl!r}")
    if ttl <= 0:
        raise ValueError(f"ttl must be > 0 seconds, got {ttl!r}")
    return float(ttl)


def validate_timeout(timeout: object) -> float | None:
    """``None`` (or infinity) waits without limit; 0 tries once."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or math.isnan(timeout):
        raise ValueError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds (0 tries once), got {timeout!r}")
    return None if math.isinf(timeout) else float(timeout)


class Lease:
    """A granted lock: its name, fencing token and owner, valid until its deadline unless renewed.

    The local deadline is measured on the monotonic clock from the moment the grant (or the last
    extension) was requested, so it never outlives the lease the store holds.
    """

    def __init__(
        self,
        *,
        backend: BaseLockBackend,
        name: str,
        owner: str,
        token: int,
        ttl: float,
        acquired_at: datetime,
        expires_at: datetime,
        deadline: float,
        handle: str = "",
    ) -> None:
        self.backend = backend
        self.name = name
        self.owner = owner
        self.token = token
        self.ttl = ttl
        self.acquired_at = acquired_at
        self.expires_at = expires_at
        self._deadline = deadline
        self.handle = handle
        self._granted_mono = time.monotonic()
        self._lost_reason: str | None = None
        self._released = False
        self._state_lock = threading.Lock()
        self._renewer: _Renewer | None = None
        self._arenewer: asyncio.Task | None = None

    def __repr__(self) -> str:
        state = "lost" if self.lost else "released" if self._released else "held"
        return f"<Lease {self.name!r} token={self.token} backend={self.alias!r} {state}>"

    @property
    def alias(self) -> str:
        return self.backend.alias

    @property
    def lost(self) -> bool:
        return self._lost_reason is not None

    @property
    def released(self) -> bool:
        return self._released

    def remaining(self) -> float:
        """Seconds left before the local deadline (negative once past it)."""
        return self._deadline - time.monotonic()

    # --- holder API -------------------------------------------------------------------------

    def extend(self, ttl: float | None = None) -> None:
        """Push the expiry to ``ttl`` seconds from now; raises ``LockLost`` if the lease is gone."""
        self._raise_if_gone()
        if not self.backend.extend(self, ttl):
            self._raise_if_gone()

    def ensure_held(self) -> None:
        """Raise ``LockLost`` unless this lease is still held.

        Checks the local deadline, then asks the store (owner and token). Inside a running event
        loop only the local state is checked (use ``aensure_held``). If the store cannot be
        reached, the lease counts as held until its local deadline: that is what a lease promises.
        """
        self._check_local()
        if _in_event_loop():
            return
        try:
            held = self.backend.verify(self)
        except LockBackendUnavailable as exc:
            logger.warning("could not verify lock %r token %s, trusting its deadline: %s", self.name, self.token, exc)
            return
        if not held:
            self.mark_lost("the store no longer has this lease (expired, force-released or taken over)")
            self._raise_if_gone()

    def release(self) -> bool:
        """Release the lock; False if it was already lost (a successor's lock is never touched)."""
        return self.backend.release(self)

    async def aextend(self, ttl: float | None = None) -> None:
        self._raise_if_gone()
        if not await self.backend.aextend(self, ttl):
            self._raise_if_gone()

    async def aensure_held(self) -> None:
        self._check_local()
        try:
            held = await self.backend.averify(self)
        except LockBackendUnavailable as exc:
            logger.warning("could not verify lock %r token %s, trusting its deadline: %s", self.name, self.token, exc)
            return
        if not held:
            self.mark_lost("the store no longer has this lease (expired, force-released or taken over)")
            self._raise_if_gone()

    async def arelease(self) -> bool:
        return await self.backend.arelease(self)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    # --- state kept by the backend ------------------------------------------------------------

    def mark_lost(self, reason: str) -> None:
        """Record the loss once: log it, count it, send ``lock_lost``."""
        with self._state_lock:
            if self._lost_reason is not None or self._released:
                return
            self._lost_reason = reason
        self.backend.on_lost(self, reason)

    def _set_deadline(self, deadline: float, expires_at: datetime, ttl: float) -> None:
        self._deadline = deadline
        self.expires_at = expires_at
        self.ttl = ttl

    def _check_local(self) -> None:
        self._raise_if_gone()
        if time.monotonic() >= self._deadline:
            self.mark_lost(f"its {self.ttl:g}s lease expired before it was renewed")
            self._raise_if_gone()

    def _raise_if_gone(self) -> None:
        if self._lost_reason is not None:
            raise LockLost(self.name, self.token, self._lost_reason)
        if self._released:
            raise LockLost(self.name, self.token, "it was released")

    # --- automatic renewal --------------------------------------------------------------------

    def start_auto_renew(self) -> None:
        """Renew from a background thread every ttl x RENEW_FRACTION until release or loss."""
        if self._renewer is None:
            self._renewer = _Renewer(self)
            self._renewer.start()

    def start_async_auto_renew(self) -> None:
        """Renew from a task of the running event loop until release or loss."""
        if self._arenewer is None:
            self._arenewer = asyncio.get_running_loop().create_task(_arenew(self), name=f"lock-renew:{self.name}")

    def stop_auto_renew(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.stop()
        task, self._arenewer = self._arenewer, None
        if task is not None and task is not _current_task():
            task.cancel()

    async def astop_auto_renew(self) -> None:
        task, self._arenewer = self._arenewer, None
        if task is not None and task is not _current_task():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            await asyncio.to_thread(renewer.stop)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _current_task() -> asyncio.Task | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _renew_interval(lease: Lease) -> float:
    return max(0.01, lease.ttl * lock_settings.RENEW_FRACTION)


class _Renewer(threading.Thread):
    """Extends one lease until told to stop; marks it lost when an extension fails or time runs out."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(name=f"lock-renew:{lease.name}"[:60], daemon=True)
        self.lease = lease
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        if threading.current_thread() is not self and self.is_alive():
            self.join()

    def run(self) -> None:
        lease = self.lease
        try:
            interval = _renew_interval(lease)
            while not self._stop_event.wait(interval):
                interval = _renew_once(lease, lease.backend.extend)
                if interval is None:
                    return
        finally:
            lease.backend.close_thread_resources()


def _renew_once(lease: Lease, extend) -> float | None:
    """One renewal; the next interval, or None when renewing is over (lease lost)."""
    try:
        ok = extend(lease, lease.ttl)
    except LockBackendUnavailable as exc:
        lease.backend.metrics.renew_failures.inc()
        left = lease.remaining()
        if left <= 0:
            lease.mark_lost(f"renewal failed until the lease expired: {exc}")
            return None
        logger.warning("renewing lock %r token %s failed, retrying: %s", lease.name, lease.token, exc)
        return max(0.01, min(_renew_interval(lease), left / 3))
    if not ok:
        lease.backend.metrics.renew_failures.inc()
        return None
    return _renew_interval(lease)


async def _arenew(lease: Lease) -> None:
    interval = _renew_interval(lease)
    while True:
        await asyncio.sleep(interval)
        if lease.released or lease.lost:
            return
        try:
            ok = await lease.backend.aextend(lease, lease.ttl)
        except LockBackendUnavailable as exc:
            lease.backend.metrics.renew_failures.inc()
            left = lease.remaining()
            if left <= 0:
                lease.mark_lost(f"renewal failed until the lease expired: {exc}")
                return
            logger.warning("renewing lock %r token %s failed, retrying: %s", lease.name, lease.token, exc)
            interval = max(0.01, min(_renew_interval(lease), left / 3))
            continue
        if not ok:
            lease.backend.metrics.renew_failures.inc()
            return
        interval = _renew_interval(lease)
