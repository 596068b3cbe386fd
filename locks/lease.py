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
        self._auto_renewed = False
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
        """Renew every ttl x RENEW_FRACTION, from the process's renewal thread, until release or loss."""
        if not self._auto_renewed:
            self._auto_renewed = True
            _renewals.add(self)

    def start_async_auto_renew(self) -> None:
        """Renew from a task of the running event loop until release or loss."""
        if self._arenewer is None:
            self._arenewer = asyncio.get_running_loop().create_task(_arenew(self), name=f"lock-renew:{self.name}")

    def stop_auto_renew(self) -> None:
        """Stop renewing; returns once no renewal of this lease is in flight."""
        if self._auto_renewed:
            self._auto_renewed = False
            _renewals.remove(self)
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
        if self._auto_renewed:
            self._auto_renewed = False
            await asyncio.to_thread(_renewals.remove, self)


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


class _Renewals:
    """Renews the auto-renewed leases of this process, all from one daemon thread.

    One thread rather than one per lease: starting and joining a thread per lock cost a short job
    more than the lock itself. A lease is due every ttl x RENEW_FRACTION; a lock released before
    its first renewal (most jobs) never wakes the thread. Renewals run one at a time; a renewal
    that hangs is bounded by the backend's own timeouts, and a failed one marks its lease lost
    exactly as before. After each renewal the thread drops what it opened (a database
    connection), so an idle process holds nothing for it.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._due: dict[Lease, float] = {}  # lease -> when its next renewal is due (monotonic)
        self._busy: Lease | None = None  # the lease being renewed right now
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        # When the thread looks next; -inf while it works (it looks again right after).
        self._wake_at = math.inf

    def add(self, lease: Lease) -> None:
        with self._condition:
            if self._pid != os.getpid():  # a forked child inherits the registry, not the thread
                self._pid, self._due, self._busy, self._thread = os.getpid(), {}, None, None
                self._wake_at = math.inf
            due = time.monotonic() + _renew_interval(lease)
            self._due[lease] = due
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lock-renewals", daemon=True)
                self._thread.start()
            if due < self._wake_at:
                self._condition.notify()

    def remove(self, lease: Lease) -> None:
        with self._condition:
            self._due.pop(lease, None)
            while self._busy is lease and threading.current_thread() is not self._thread:
                self._condition.wait()

    def _next(self) -> Lease:
        """Wait until some lease is due and return it, marked busy (call with the condition held)."""
        while True:
            now = time.monotonic()
            lease, due = min(self._due.items(), key=lambda item: item[1], default=(None, math.inf))
            if lease is not None and due <= now:
                self._busy, self._wake_at = lease, -math.inf
                return lease
            self._wake_at = due
            self._condition.wait(None if due == math.inf else due - now)

    def _run(self) -> None:
        while True:
            with self._condition:
                lease = self._next()
            interval = None
            try:
                interval = _renew_once(lease, lease.backend.extend)
            except Exception as exc:  # one backend's bug must not stop the renewals of every lease
                logger.exception("renewing lock %r token %s failed unexpectedly", lease.name, lease.token)
                if lease.remaining() <= 0:
                    lease.mark_lost(f"renewal failed until the lease expired: {exc!r}")
                else:
                    interval = max(0.01, min(_renew_interval(lease), lease.remaining() / 3))
            finally:
                try:
                    lease.backend.close_thread_resources()
                finally:
                    with self._condition:
                        if interval is None:
                            self._due.pop(lease, None)
                        elif lease in self._due:
                            self._due[lease] = time.monotonic() + interval
                        self._busy = None
                        self._condition.notify_all()


_renewals = _Renewals()


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
