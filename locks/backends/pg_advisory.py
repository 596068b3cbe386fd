"""The advisory mode of the database lock backend (PostgreSQL only): ``OPTIONS = {"MODE": "advisory"}``.

Why a second mode: the default (table) mode commits a counter row and a lease row for every grant
and deletes a row for every release. Each committed write costs about as much as a whole round
trip of ``pg_advisory_lock`` (benchmarks/results/locks.md), so a cycle could not get near raw
advisory locks. This mode takes a lock in one round trip and releases it in one, and commits no
row write at all:

- **The lock** is ``pg_advisory_xact_lock`` on a 64-bit key (blake2b of the name) in a transaction
  left open on a dedicated connection of this module's small pool: never one of Django's
  connections and never a session-level advisory lock, so PgBouncer in transaction mode keeps
  the server connection pinned for exactly the life of the lease. Release is ``COMMIT``.
- **The lease**: the claim sets ``idle_in_transaction_session_timeout`` to the ttl for that
  transaction, so the server itself ends a holder that stops renewing, and the lock with it.
  ``extend`` re-arms the timer with the new ttl, ``verify`` with what is left of the lease. The
  local deadline starts when the claim is sent, before the server's timer starts, so a holder
  always gives up before the server lets anyone else in.
- **Waiting**: a blocking acquire queues in PostgreSQL's lock manager (``pg_advisory_xact_lock``
  with ``lock_timeout`` = what is left of its timeout), which is FIFO, refuses a try while anyone
  is queued, and hands a released lock to the first waiter at once: fair without polling.
- **Fencing tokens** come from one logged sequence, ``locks_advisory_token``, drawn after the lock
  is taken: strictly increasing across all names, so per name too, and kept across restarts. The
  one way a sequence can hand out a value again is a crash that loses WAL not yet flushed to disk
  (``nextval`` WAL-logs 32 values ahead). The lock transaction commits with ``synchronous_commit
  = off`` (its only write is that sequence record; a flush per 32 grants cost more than the rest
  of the claim), so the WAL of the last fraction of a second (``wal_writer_delay``) may be lost:
  a few thousand values at most. The UNLOGGED table ``locks_advisory_guard`` is emptied by every
  crash recovery (and is empty in a base backup or on a promoted standby); a claim that finds it
  empty hands out nothing until ``locks_advisory_new_epoch()`` has moved the sequence 2^32 past
  its recovered value (and to at least the clock in microseconds) in a transaction committed with
  ``synchronous_commit = on``. 2^32 is over four billion grants, far more than can go unflushed,
  so tokens never repeat, trusting no clock. Each session reads the guard once (migration 0004):
  a crash recovery first ends every session, so a session that found the guard in place has
  seen no crash since.
- **Operators**: ``held()`` reads ``pg_locks`` and ``pg_stat_activity``: the claim and keep
  statements carry the lease's name and owner in their text (base64 JSON: no quoting to get
  wrong), the transaction's ``application_name`` its token and grant time. ``force_release``
  ends the holder's session with ``pg_terminate_backend`` (waiting for it to end) and writes the
  audit entry.

Trade-offs (README): one connection per held lock; a lock also ends when its connection does
(holder process killed, server restart, broken connection), which can be before its lease ends:
harmless for a dead holder, and a live one learns it at its next extend or ``ensure_held()``
(fence your writes, as always). ``held()`` needs to read other sessions' statement text (the
same database role, or ``pg_read_all_stats``) and ``track_activity_query_size`` (default 1024
bytes) to fit the statement: names up to about 600 bytes of UTF-8.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from ..lease import Lease, LeaseInfo
from .base import Grant, Waiter, unavailable

if TYPE_CHECKING:
    from .db import DatabaseLockBackend

logger = logging.getLogger("locks")

MAX_MS = 2**31 - 1  # PostgreSQL's largest timeout setting, in milliseconds (about 24.8 days)
MAX_IDLE_CONNECTIONS = 8  # idle dedicated connections kept per process for the next lease
APP_NAME = "ringmaster-lock"
LEASE_IN_STATEMENT = re.compile(r"locks_advisory_(?:claim|keep)\('([A-Za-z0-9+/=]*)', (\d+)")
TERMINATE_WAIT_MS = 5000

# Every granted lock of this mode in this database, with the session that holds it. Waiters
# that already hold the lock but have not claimed it yet (no application_name) are not listed.
HELD = """
SELECT a.pid, a.query, a.application_name, a.state_change, clock_timestamp()
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND a.application_name LIKE 'ringmaster-lock %'
"""
TERMINATE = (
    "SELECT pg_terminate_backend(pid, %(wait)s) FROM pg_stat_activity "
    "WHERE pid = %(pid)s AND application_name = %(app_name)s"
)


@functools.lru_cache(maxsize=4096)  # the same names are locked again and again
def advisory_key(name: str) -> int:
    """The signed 64-bit advisory-lock key of a lock name: blake2b, so names do not collide in practice."""
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=APP_NAME.encode()).digest()
    return int.from_bytes(digest, "big", signed=True)


def describe(name: str, owner: str) -> str:
    """The lease as the statements' text carries it: base64 of JSON, safe inside a SQL literal.

    The JSON is exactly ``json.dumps([name, owner], ensure_ascii=False)``, built from the encoder's
    own string quoting: a fifth of the time of a json.dumps call, on every acquire.
    """
    text = f"[{encode_basestring(name)}, {encode_basestring(owner)}]"
    return base64.b64encode(text.encode()).decode("ascii")


def milliseconds(seconds: float) -> int:
    """A timeout for PostgreSQL: rounded up (never shorter than asked), at least 1 (0 means none).

    At most PostgreSQL's largest, which is also what waiting without a timeout (infinity) waits
    each time round the acquire loop.
    """
    if seconds * 1000 >= MAX_MS:
        return MAX_MS
    return max(1, math.ceil(seconds * 1000))


class LockConnection(psycopg.Connection):
    """A dedicated connection of the advisory mode, with one cursor kept for the claim and the release.

    A cursor per statement costs about as much client time as the rest of the statement; only the
    thread that acquires (or releases) uses the kept one. Extend and verify, which a renewal thread
    may run meanwhile, take a cursor of their own.
    """

    _kept_cursor: psycopg.Cursor | None = None

    def run(self, sql: str) -> psycopg.Cursor:
        """Run ``sql`` (no parameters: the simple protocol, several statements allowed); on its last result."""
        cursor = self._kept_cursor
        if cursor is None:
            cursor = self._kept_cursor = self.cursor()
        cursor.execute(sql)
        while cursor.nextset():
            pass
        return cursor


class AdvisoryLocks:
    """The advisory mode of one ``DatabaseLockBackend``: its connections and its leases."""

    def __init__(self, backend: DatabaseLockBackend) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self._idle: list[LockConnection] = []
        self._held: dict[str, LockConnection] = {}  # lease owner -> the connection holding it
        self._pid = os.getpid()
        # Connections inherited from the parent of a fork: never used, and never closed either,
        # since closing them would end the parent's sessions (and its locks).
        self._inherited: list[LockConnection] = []

    # --- connections --------------------------------------------------------------------------

    def pooled(self) -> LockConnection | None:
        """An idle dedicated connection kept from an earlier lease, if any."""
        with self._lock:
            self._forget_after_fork()
            return self._idle.pop() if self._idle else None

    def connect(self) -> LockConnection:
        """A new dedicated connection, in autocommit (the statements say BEGIN and COMMIT themselves)."""
        params = self.backend.connection().get_connection_params()
        # Not Django's cursor class and adapters; its prepare_threshold (None) stays: PgBouncer-safe.
        for key in ("cursor_factory", "context"):
            params.pop(key, None)
        try:
            return LockConnection.connect(**params, autocommit=True)
        except psycopg.Error as exc:
            raise unavailable(self.backend.alias, exc) from exc

    def give_back(self, conn: LockConnection) -> None:
        """Keep a connection that is outside any transaction for the next lease (or close it)."""
        with self._lock:
            if os.getpid() == self._pid and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def end(self, conn: LockConnection) -> None:
        """Roll back whatever ``conn`` holds (a lock included) and give it back."""
        try:
            if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
        except psycopg.Error:
            conn.close()
            return
        self.give_back(conn)

    def _forget_after_fork(self) -> None:
        if os.getpid() != self._pid:
            self._inherited += self._idle + list(self._held.values())
            self._idle, self._held, self._pid = [], {}, os.getpid()

    def close(self, *, held_too: bool = False) -> None:
        """Close the idle connections; with ``held_too``, also those of live leases (releasing their locks)."""
        with self._lock:
            self._forget_after_fork()
            conns, self._idle = self._idle, []
            if held_too:
                conns += list(self._held.values())
                self._held = {}
        for conn in conns:
            conn.close()

    # --- leases ----------------------------------------------------------------------------------

    def adopt(self, owner: str, conn: LockConnection) -> None:
        with self._lock:
            self._held[owner] = conn

    def _take(self, owner: str) -> LockConnection | None:
        with self._lock:
            return self._held.pop(owner, None)

    def drop(self, owner: str) -> None:
        """Forget a lease and close its connection, which releases its lock."""
        conn = self._take(owner)
        if conn is not None:
            conn.close()

    def new_epoch(self) -> None:
        """After a crash: move the token sequence past what it may have handed out (migration 0003)."""
        try:
            with self.connect() as conn:
                conn.execute("SELECT locks_advisory_new_epoch()")
        except psycopg.Error as exc:
            raise unavailable(self.backend.alias, exc) from exc
        logger.warning(
            "lock backend %r: fencing tokens start a new epoch (first use, or after a PostgreSQL crash)",
            self.backend.alias,
        )

    def release(self, lease: Lease) -> bool:
        conn = self._take(lease.owner)
        if conn is None:
            return False
        try:
            committed = conn.run("COMMIT").statusmessage == "COMMIT"
        except psycopg.Error as exc:
            # The session is gone (lease expired, force-released, connection broken): so is the lock.
            logger.warning("releasing lock %r token %s: its session had ended (%s)", lease.name, lease.token, exc)
            conn.close()
            return False
        self.give_back(conn)
        return committed

    def keep(self, lease: Lease, seconds: float) -> datetime | None:
        """Re-arm the server's timer of a held lease to ``seconds``; its new expiry, or None if it is gone."""
        conn = self._held.get(lease.owner)
        if conn is None:
            return None
        try:
            row = conn.execute(f"SELECT locks_advisory_keep('{lease.handle}', {milliseconds(seconds)})").fetchone()
        except psycopg.Error as exc:
            logger.warning("lock %r token %s: its session has ended (%s)", lease.name, lease.token, exc)
            self.drop(lease.owner)
            return None
        return row[0]

    def extend(self, lease: Lease, ttl: float) -> datetime | None:
        check_ttl(ttl)
        return self.keep(lease, ttl)

    def verify(self, lease: Lease) -> bool:
        # Re-arming with what is left keeps the server's expiry where it was (not ttl from now).
        remaining = lease.remaining()
        return remaining > 0 and self.keep(lease, remaining) is not None

    # --- operators -------------------------------------------------------------------------------

    def _held_rows(self) -> list[tuple[LeaseInfo, int, str]]:
        """(lease, holder pid, its application_name) for every lock of this mode held now."""
        with self.backend.cursor() as cursor:
            cursor.execute(HELD)
            rows = cursor.fetchall()
        held = []
        for pid, query, app_name, state_change, now in rows:
            info = self._info(query, app_name, state_change)
            if info is None:
                logger.warning(
                    "lock backend %r: session %s holds a lock whose statement cannot be read "
                    "(privileges, or track_activity_query_size too small)",
                    self.backend.alias,
                    pid,
                )
            elif info.expires_at > now:
                held.append((info, pid, app_name))
        return sorted(held, key=lambda row: row[0].acquired_at)

    def _info(self, query: str | None, app_name: str, state_change: datetime) -> LeaseInfo | None:
        match = LEASE_IN_STATEMENT.search(query or "")
        parts = app_name.split(" ")
        if match is None or len(parts) != 3:
            return None
        name, owner = json.loads(base64.b64decode(match[1]))
        acquired_at = datetime.fromtimestamp(int(parts[2]) / 1_000_000, UTC)
        expires_at = state_change + timedelta(milliseconds=int(match[2]))
        return LeaseInfo(name, owner, int(parts[1]), acquired_at, expires_at, self.backend.alias)

    def held(self) -> list[LeaseInfo]:
        return [info for info, _, _ in self._held_rows()]

    def force_release(self, name: str, *, actor: Any, token: int | None = None) -> bool:
        """End the session holding ``name`` (it takes the lock with it) and write the audit entry."""
        targets = [row for row in self._held_rows() if row[0].name == name and token in (None, row[0].token)]
        if not targets:
            return False
        info, pid, app_name = targets[0]
        # application_name names the token, so a session that has moved on to another lease since
        # the read above is not ended. Ending a session cannot be rolled back, so there is no
        # transaction to share with the audit entry: it is written right after.
        with self.backend.cursor() as cursor:
            cursor.execute(TERMINATE, {"wait": TERMINATE_WAIT_MS, "pid": pid, "app_name": app_name})
            row = cursor.fetchone()
        if not (row and row[0]):
            return False
        self.backend.record_force_release(info, actor=actor, using=self.backend.using)
        return True


def check_ttl(ttl: float) -> None:
    if ttl * 1000 > MAX_MS:
        raise ValueError(
            f"ttl must be at most {MAX_MS // 1000} s in the advisory mode (PostgreSQL's limit), got {ttl!r}"
        )


class AdvisoryWaiter(Waiter):
    """One acquire call in the advisory mode: a dedicated connection, and its place in PostgreSQL's queue."""

    def __init__(self, locks: AdvisoryLocks, name: str, owner: str, ttl: float) -> None:
        check_ttl(ttl)
        self.locks = locks
        self.owner = owner
        self.ttl = ttl
        self.key = advisory_key(name)
        self.lease_text = describe(name, owner)
        self.conn: LockConnection | None = None
        self.untried = False  # self.conn comes from the pool and has not answered yet
        self.queued = False  # wait() got the lock in the transaction open on self.conn

    def _conn(self) -> LockConnection:
        if self.conn is None:
            self.conn = self.locks.pooled()
            self.untried = self.conn is not None
            if self.conn is None:
                self.conn = self.locks.connect()
        return self.conn

    def _run(self, sql: str) -> tuple:
        conn = self._conn()
        try:
            row = conn.run(sql).fetchone()
        except pg_errors.LockNotAvailable:
            raise  # wait()'s lock_timeout: the connection is fine
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.conn = None
            conn.close()
            if self.untried:
                # A kept connection the server has dropped since (a restart, a timeout): the others
                # kept are likely gone too. Its session is over, so nothing it did holds: start again
                # once on a new connection.
                self.untried = False
                self.locks.close()
                return self._run(sql)
            raise unavailable(self.locks.backend.alias, exc) from exc
        self.untried = False
        return row

    def try_claim(self, *, enqueue: bool) -> Grant | None:
        ttl_ms = milliseconds(self.ttl)
        # Literals, not parameters: held() reads them back from pg_stat_activity. They are safe:
        # base64 text and integers.
        claim = f"SELECT * FROM locks_advisory_claim('{self.lease_text}', {ttl_ms}, {self.key})"  # noqa: S608
        sent = time.monotonic()
        token, acquired_at = self._run(claim if self.queued else "BEGIN; " + claim)
        self.queued = False
        if token is None or token == 0:
            self._rollback()
            if token is None:
                return None
            self.locks.new_epoch()
            return self.try_claim(enqueue=enqueue)
        self.locks.adopt(self.owner, self.conn)
        self.conn = None
        acquired = datetime.fromtimestamp(acquired_at, UTC)
        return Grant(token, acquired, acquired + timedelta(milliseconds=ttl_ms), sent, handle=self.lease_text)

    def wait(self, remaining: float) -> None:
        """Queue for the lock in PostgreSQL, at most ``remaining`` s; the next ``try_claim`` claims it."""
        try:
            self._run(
                f"BEGIN; SET LOCAL lock_timeout = {milliseconds(remaining)}; "
                # A waiter that got the lock and then stalls must not keep it forever either.
                f"SET LOCAL idle_in_transaction_session_timeout = {milliseconds(self.ttl)}; "
                f"SELECT pg_advisory_xact_lock({self.key})"
            )
        except pg_errors.LockNotAvailable:
            self._rollback()
            return
        self.queued = True

    def _rollback(self) -> None:
        conn = self.conn
        try:
            conn.run("ROLLBACK")
        except psycopg.Error as exc:
            self.conn = None
            conn.close()
            raise unavailable(self.locks.backend.alias, exc) from exc

    def abandon(self, *, after_error: bool) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            self.locks.end(conn)
        if after_error:
            self.locks.drop(self.owner)  # a grant the caller never saw
