"""The database lock backend: a lease table through Django's database connections.

PostgreSQL and SQLite (>= 3.35, for ``RETURNING``). One row per held lock in
``locks_locklease`` (the name is the primary key), claimed by one atomic statement: an
``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`` cannot grant a name twice, whatever the
interleaving. Its fencing token comes from ``locks_lockcounter`` in the same transaction:
``GREATEST(last + 1, database clock in microseconds)``, so tokens strictly increase per name
even if the counter row were lost (see models.py on UNLOGGED tables). Expiry times are read
off the database clock, so the clocks of the nodes do not matter.

Fairness: a waiter that failed its first try takes a ticket in ``locks_lockwaiter``; a free
lock goes to the claimer no live ticket is ahead of, or, at most ``MAX_BARGES`` times in a row
(counted in ``locks_lockcounter.streak``), to another claimer, usually the process that just
released it: that saves a hand-off per section without letting anyone wait long. Waiters poll
(a database cannot wake them): the first in line every few ms, the others less often (see
backoff.py).

Connections: statements run on the calling thread's connection in autocommit, one short
statement (or, on SQLite, one short ``BEGIN IMMEDIATE`` transaction) each, so a lock is visible
to others the moment it is granted. Inside a caller's ``transaction.atomic()`` on PostgreSQL
they run on a short-lived second connection instead, so the lock is neither invisible until
the caller commits nor rolled back with it. On SQLite there is one writer at a time and a
caller inside ``atomic()`` already holds the write lock (``BEGIN IMMEDIATE``), so a second
connection could only wait for it: there the lock statements join the caller's transaction,
which is safe for exclusion (nobody else can write until it ends) but means that a rollback
of the caller's transaction also drops the lease. Take database locks outside transactions.
No session-level advisory locks are used anywhere, so PgBouncer transaction pooling is safe.

That is the default ``MODE``, ``"table"``. On PostgreSQL, ``OPTIONS = {"MODE": "advisory"}``
selects transaction-level advisory locks on dedicated connections instead (pg_advisory.py):
no row is written per grant, so a cycle costs about what raw advisory locks cost.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import InterfaceError, OperationalError, connections, transaction
from django.db.models.functions import Now
from django.utils.dateparse import parse_datetime

from ..backoff import jittered, poll_interval
from ..lease import Lease, LeaseInfo, validate_name
from ..settings import lock_settings
from .base import BaseLockBackend, Grant, Waiter, actor_label, unavailable

NO_TICKET = 2**63 - 1  # a claimer without a ticket is behind every live waiter
KNOWN_OPTIONS = {"DATABASE", "MODE"}
# "table": the lease table above (PostgreSQL and SQLite); "advisory": PostgreSQL advisory locks
# held in a transaction on a dedicated connection (pg_advisory.py), for speed.
MODES = ("table", "advisory")


@dataclass(frozen=True)
class Dialect:
    """The few SQL fragments that differ between vendors; ``%(ttl)s`` is a parameter."""

    now: str
    later: str
    now_us: str
    seconds: Any  # ttl -> parameter value

    def sql(self, template: str) -> str:
        return template.format(now=self.now, later=self.later, now_us=self.now_us)


POSTGRESQL = Dialect(
    now="clock_timestamp()",
    later="(clock_timestamp() + make_interval(secs => %(ttl)s))",
    now_us="(extract(epoch from clock_timestamp()) * 1000000)::bigint",
    seconds=float,
)
SQLITE = Dialect(
    now="strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now')",
    later="strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', %(ttl)s)",
    # SQLite's clock counts milliseconds: after a lost counter row, two grants within one
    # millisecond got the same token. A SQLite database is on this machine, so the claimer's clock
    # (sqlite_now_us) is the database's, to the microsecond.
    now_us="%(now_us)s",
    seconds=lambda ttl: f"+{ttl:.3f} seconds",
)


def sqlite_now_us() -> int:
    """The token floor on SQLite: microseconds since the epoch."""
    return time.time_ns() // 1000


# On PostgreSQL the whole claim is one call of the PL/pgSQL function of migration 0002: count
# the live tickets ahead; if the lease looks free and the claimer is first in line (or may
# barge, see MAX_BARGES), bump the counter and upsert the lease. The upsert's WHERE is what
# guarantees exclusion: under READ COMMITTED it re-checks the latest committed row, so a claim
# that raced another one grants nothing.
PG_CLAIM = "SELECT * FROM locks_claim(%(name)s, %(owner)s, %(ttl)s, %(ticket)s, %(barges)s)"

# SQLite runs the same steps from Python: a read first (WAL readers never wait), then, only when the
# lock looks free, the same steps in one BEGIN IMMEDIATE transaction, where SQLite's single
# writer makes the re-check and the writes atomic.
SQLITE_CHECK = """
SELECT
    (SELECT count(*) FROM locks_lockwaiter WHERE name = %(name)s AND id < %(ticket)s AND expires_at > {now}),
    (SELECT count(*) FROM locks_locklease WHERE name = %(name)s AND expires_at > {now}),
    coalesce((SELECT streak FROM locks_lockcounter WHERE name = %(name)s), 0)
"""
SQLITE_BUMP = """
INSERT INTO locks_lockcounter (name, last_token, streak) VALUES (%(name)s, {now_us}, %(streak)s)
ON CONFLICT (name) DO UPDATE SET
    last_token = max(last_token + 1, excluded.last_token),
    streak = CASE WHEN excluded.streak = 0 THEN 0 ELSE streak + 1 END
RETURNING last_token
"""
SQLITE_CLAIM = """
INSERT INTO locks_locklease (name, owner, token, acquired_at, expires_at)
VALUES (%(name)s, %(owner)s, %(token)s, {now}, {later})
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, token = excluded.token,
    acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
WHERE locks_locklease.expires_at <= excluded.acquired_at
RETURNING token, acquired_at, expires_at
"""
SERVED = "DELETE FROM locks_lockwaiter WHERE id = %(ticket)s"

RELEASE = """
DELETE FROM locks_locklease WHERE name = %(name)s AND owner = %(owner)s AND token = %(token)s
RETURNING expires_at > {now}
"""
RELEASE_OWNER = "DELETE FROM locks_locklease WHERE name = %(name)s AND owner = %(owner)s"
EXTEND = """
UPDATE locks_locklease SET expires_at = {later}
WHERE name = %(name)s AND owner = %(owner)s AND token = %(token)s AND expires_at > {now}
RETURNING expires_at
"""
VERIFY = """
SELECT 1 FROM locks_locklease
WHERE name = %(name)s AND owner = %(owner)s AND token = %(token)s AND expires_at > {now}
"""
FORCE_RELEASE = """
DELETE FROM locks_locklease WHERE name = %(name)s AND expires_at > {now} {and_token}
RETURNING owner, token, acquired_at, expires_at
"""
ENQUEUE_SWEEP = "DELETE FROM locks_lockwaiter WHERE name = %(name)s AND expires_at < {now}"
ENQUEUE = "INSERT INTO locks_lockwaiter (name, owner, expires_at) VALUES (%(name)s, %(owner)s, {later}) RETURNING id"
HEARTBEAT = "UPDATE locks_lockwaiter SET expires_at = {later} WHERE id = %(ticket)s RETURNING id"


def as_datetime(value: Any) -> datetime:
    """A timestamp as the cursor returns it (aware on PostgreSQL, text on SQLite) as an aware UTC datetime."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


class DatabaseLockBackend(BaseLockBackend):
    """Locks in a table of the database ``OPTIONS["DATABASE"]`` (default: ``"default"``)."""

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        unknown = set(self.options) - KNOWN_OPTIONS
        if unknown:
            raise ImproperlyConfigured(
                f"LOCKS[{alias!r}]['OPTIONS'] has unknown keys {sorted(unknown)}; known: {sorted(KNOWN_OPTIONS)}."
            )
        self.using = self.options.get("DATABASE", "default")
        if self.using not in connections.settings:
            raise ImproperlyConfigured(
                f"LOCKS[{alias!r}]['OPTIONS']['DATABASE'] = {self.using!r} is not an alias in settings.DATABASES."
            )
        self._dialect: Dialect | None = None
        self._sql: dict[str, str] = {}
        self.mode = self.options.get("MODE", "table")
        if self.mode not in MODES:
            raise ImproperlyConfigured(
                f"LOCKS[{alias!r}]['OPTIONS']['MODE'] = {self.mode!r}; use one of {list(MODES)}."
            )
        self.advisory = None
        self.advisory_waiter = None
        if self.mode == "advisory":
            vendor = connections[self.using].vendor  # a class attribute: no connection is opened
            if vendor != "postgresql":
                raise ImproperlyConfigured(
                    f"LOCKS[{alias!r}]['OPTIONS']['MODE'] = 'advisory' needs PostgreSQL; database "
                    f"{self.using!r} is {vendor}. Remove MODE to use the lease table."
                )
            from .pg_advisory import AdvisoryLocks, AdvisoryWaiter

            self.advisory = AdvisoryLocks(self)
            self.advisory_waiter = AdvisoryWaiter  # imported here, not on every acquire

    def store_key(self) -> tuple:
        # The two modes keep their locks in different places: they never exclude each other.
        return (type(self).__name__, self.using, self.mode)

    def connection(self) -> Any:
        """The calling thread's connection to the lock database."""
        return connections[self.using]

    @property
    def dialect(self) -> Dialect:
        if self._dialect is None:
            vendor = self.connection().vendor
            if vendor == "postgresql":
                self._dialect = POSTGRESQL
            elif vendor == "sqlite":
                self._dialect = SQLITE
            else:
                raise ImproperlyConfigured(
                    f"LOCKS[{self.alias!r}]: the database lock backend supports PostgreSQL and SQLite, "
                    f"not {vendor!r} (database {self.using!r})."
                )
        return self._dialect

    def sql(self, template: str) -> str:
        text = self._sql.get(template)
        if text is None:
            text = self._sql[template] = self.dialect.sql(template)
        return text

    @contextlib.contextmanager
    def cursor(self) -> Iterator[Any]:
        """A cursor in autocommit that others see at once (see the module docstring)."""
        conn = self.connection()
        temp = None
        try:
            if conn.vendor != "sqlite" and (conn.in_atomic_block or not conn.get_autocommit()):
                temp = conn.copy()
            with (temp or conn).cursor() as cursor:
                yield cursor
        except (OperationalError, InterfaceError) as exc:
            if temp is None and not conn.in_atomic_block:
                conn.close()  # a broken connection is reopened by the next call
            raise unavailable(self.alias, exc) from exc
        finally:
            if temp is not None:
                temp.close()

    def close(self) -> None:
        if self.advisory is not None:
            self.advisory.close()

    def close_thread_resources(self) -> None:
        conn = self.connection()
        if not conn.in_atomic_block:
            conn.close()

    # --- claim ---------------------------------------------------------------------------------

    def _waiter(self, name: str, owner: str, ttl: float) -> Waiter:
        if self.advisory is not None:
            return self.advisory_waiter(self.advisory, name, owner, ttl)
        return DatabaseWaiter(self, name, owner, ttl)

    def claim(self, name: str, owner: str, ttl: float, ticket: int) -> tuple[Grant | None, int]:
        """One claim attempt: the grant (or None) and how many live waiters are ahead of ``ticket``."""
        params = {
            "name": name,
            "owner": owner,
            "ticket": ticket,
            "ttl": self.dialect.seconds(ttl),
            "barges": lock_settings.MAX_BARGES,
        }
        sent = time.monotonic()
        with self.cursor() as cursor:
            if self.dialect is POSTGRESQL:
                cursor.execute(self.sql(PG_CLAIM), params)
                token, acquired_at, expires_at, ahead = cursor.fetchone()
            else:
                token, acquired_at, expires_at, ahead = self._claim_sqlite(cursor, params)
        if token is None:
            return None, ahead
        return Grant(int(token), as_datetime(acquired_at), as_datetime(expires_at), sent), ahead

    def _claim_sqlite(self, cursor: Any, params: dict[str, Any]) -> tuple:
        def refused() -> tuple[bool, int]:
            cursor.execute(self.sql(SQLITE_CHECK), params)
            ahead, busy, streak = cursor.fetchone()
            return bool(busy or (ahead and streak >= params["barges"])), ahead

        no, ahead = refused()
        if no:
            return None, None, None, ahead
        with transaction.atomic(using=self.using):
            no, ahead = refused()
            if no:
                return None, None, None, ahead
            cursor.execute(self.sql(SQLITE_BUMP), {**params, "streak": 1 if ahead else 0, "now_us": sqlite_now_us()})
            (token,) = cursor.fetchone()
            cursor.execute(self.sql(SQLITE_CLAIM), {**params, "token": token})
            row = cursor.fetchone()
            if row is None:  # unreachable while BEGIN IMMEDIATE holds the write lock; never grant blindly
                return None, None, None, 0
            if params["ticket"] != NO_TICKET:
                cursor.execute(SERVED, params)
        return (*row, 0)

    def enqueue(self, name: str, owner: str) -> int:
        params = {"name": name, "owner": owner, "ttl": self.dialect.seconds(lock_settings.WAITER_TTL)}
        with self.cursor() as cursor:
            cursor.execute(self.sql(ENQUEUE_SWEEP), params)
            cursor.execute(self.sql(ENQUEUE), params)
            return int(cursor.fetchone()[0])

    def heartbeat(self, ticket: int) -> bool:
        params = {"ticket": ticket, "ttl": self.dialect.seconds(lock_settings.WAITER_TTL)}
        with self.cursor() as cursor:
            cursor.execute(self.sql(HEARTBEAT), params)
            return cursor.fetchone() is not None

    def dequeue(self, ticket: int) -> None:
        with self.cursor() as cursor:
            cursor.execute(SERVED, {"ticket": ticket})

    def drop_unseen_grant(self, name: str, owner: str) -> None:
        with self.cursor() as cursor:
            cursor.execute(RELEASE_OWNER, {"name": name, "owner": owner})

    # --- owner-checked primitives ------------------------------------------------------------

    def _params(self, lease: Lease, ttl: float | None = None) -> dict[str, Any]:
        params = {"name": lease.name, "owner": lease.owner, "token": lease.token}
        if ttl is not None:
            params["ttl"] = self.dialect.seconds(ttl)
        return params

    def _release(self, lease: Lease) -> bool:
        if self.advisory is not None:
            return lease.backend.advisory.release(lease)  # the instance holding its connection
        with self.cursor() as cursor:
            cursor.execute(self.sql(RELEASE), self._params(lease))
            row = cursor.fetchone()
        return bool(row and row[0])

    def _extend(self, lease: Lease, ttl: float) -> datetime | None:
        if self.advisory is not None:
            return lease.backend.advisory.extend(lease, ttl)  # the instance holding its connection
        with self.cursor() as cursor:
            cursor.execute(self.sql(EXTEND), self._params(lease, ttl))
            row = cursor.fetchone()
        return as_datetime(row[0]) if row else None

    def _verify(self, lease: Lease) -> bool:
        if self.advisory is not None:
            return lease.backend.advisory.verify(lease)  # the instance holding its connection
        with self.cursor() as cursor:
            cursor.execute(self.sql(VERIFY), self._params(lease))
            return cursor.fetchone() is not None

    # --- operators ------------------------------------------------------------------------------

    def held(self) -> list[LeaseInfo]:
        if self.advisory is not None:
            return self.advisory.held()
        from ..models import LockLease

        try:
            rows = list(
                LockLease.objects.using(self.using)
                .filter(expires_at__gt=Now())
                .order_by("acquired_at")
                .values_list("name", "owner", "token", "acquired_at", "expires_at")
            )
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self.alias, exc) from exc
        return [LeaseInfo(*row, backend=self.alias) for row in rows]

    def force_release(self, name: str, *, actor: Any, token: int | None = None) -> bool:
        """Delete the lease of ``name`` and write its audit entry in one transaction."""
        validate_name(name)
        actor_label(actor)
        if self.advisory is not None:
            return self.advisory.force_release(name, actor=actor, token=token)
        params = {"name": name, "token": token}
        template = FORCE_RELEASE.replace("{and_token}", "" if token is None else "AND token = %(token)s")
        try:
            with transaction.atomic(using=self.using):
                with connections[self.using].cursor() as cursor:
                    cursor.execute(self.sql(template), params)
                    row = cursor.fetchone()
                if row is None:
                    return False
                owner, token, acquired_at, expires_at = row
                info = LeaseInfo(name, owner, int(token), as_datetime(acquired_at), as_datetime(expires_at), self.alias)
                self.record_force_release(info, actor=actor, using=self.using)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self.alias, exc) from exc
        return True


class DatabaseWaiter(Waiter):
    """One acquire call on the database backend: its ticket, its polling pace."""

    def __init__(self, backend: DatabaseLockBackend, name: str, owner: str, ttl: float) -> None:
        self.backend = backend
        self.name = name
        self.owner = owner
        self.ttl = ttl
        self.ticket: int | None = None
        self.ahead = 0
        self.head_polls = 0
        self.next_heartbeat = 0.0

    def try_claim(self, *, enqueue: bool) -> Grant | None:
        grant, ahead = self.backend.claim(self.name, self.owner, self.ttl, self.ticket or NO_TICKET)
        if grant is not None:
            self.ticket = None  # the claim statement removed it
            return grant
        self.ahead = ahead or 0
        self.head_polls = self.head_polls + 1 if self.ahead == 0 else 0
        if enqueue:
            now = time.monotonic()
            if self.ticket is None or (now >= self.next_heartbeat and not self.backend.heartbeat(self.ticket)):
                self.ticket = self.backend.enqueue(self.name, self.owner)
            if now >= self.next_heartbeat:
                self.next_heartbeat = now + lock_settings.WAITER_TTL / 4
        return None

    def interval(self) -> float:
        base = poll_interval(
            ahead=self.ahead,
            head_polls=self.head_polls,
            minimum=lock_settings.POLL_INTERVAL_MIN,
            maximum=lock_settings.POLL_INTERVAL_MAX,
        )
        return jittered(base, random.random)  # noqa: S311 (jitter, not a secret)

    def wait(self, remaining: float) -> None:
        time.sleep(min(remaining, self.interval()))

    async def async_wait(self, remaining: float, backend: BaseLockBackend) -> None:
        import asyncio

        await asyncio.sleep(min(remaining, self.interval()))

    def abandon(self, *, after_error: bool) -> None:
        ticket, self.ticket = self.ticket, None
        if ticket is not None:
            self.backend.dequeue(ticket)
        if after_error:
            self.backend.drop_unseen_grant(self.name, self.owner)
