"""Writes of the idempotency app: claim a key, complete, release and renew it, purge expired records.

The claim is one ``INSERT ... ON CONFLICT (scope, key) DO UPDATE ... RETURNING *`` (PostgreSQL,
and SQLite >= 3.35) that inserts a fresh record (we hold the key, fencing token 1) or returns the
existing row, counting a replay when it is completed with our fingerprint. So a replay costs one
statement and a first request two (the claim and the completion). There is never a
check-then-insert: the unique constraint on (scope, key) decides every race.

A record whose holder's lease ran out (same fingerprint), or that has expired, is taken over by
a conditional UPDATE that bumps the fencing token ``WHERE fencing_token = <the one we read>``:
of several racing attempts exactly one wins, and the old holder's later writes are refused.

Later writes are conditional on the fencing token (the completion follows the rule of
``locks.fencing.fenced_update``), so a holder that lost its lease cannot overwrite its successor.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, models, transaction
from django.db.models import Q
from django.utils import timezone

from locks.fencing import StaleFencingToken

from .models import IdempotencyRecord
from .settings import idempotency_settings

logger = logging.getLogger("idempotency")

CLAIMED = "claimed"
REPLAY = "completed"
IN_PROGRESS = "in_progress"
MISMATCH = "mismatch"

_HOST = socket.gethostname()


@dataclass(frozen=True)
class Claim:
    """What a claim attempt found: ``outcome`` is one of claimed, completed, in_progress, mismatch."""

    outcome: str
    record: IdempotencyRecord
    now: datetime

    @property
    def token(self) -> int:
        return self.record.fencing_token

    @property
    def retry_after(self) -> int:
        """Whole seconds until the holder's lease runs out (at least 1): the Retry-After to send."""
        if self.record.locked_until is None:
            return 1
        remaining = (self.record.locked_until - self.now).total_seconds()
        return max(1, int(remaining + 0.999))


def database_alias() -> str:
    return idempotency_settings.DATABASE


# The attempt part of owner names: a random start per process, then one more per attempt (as
# locks.lease.new_owner does): a uuid4 per attempt was most of what building a job's claim cost.
_attempts = itertools.count(secrets.randbits(64))


def new_owner() -> str:
    """A name for one attempt, unique across hosts, processes and attempts."""
    return f"{_HOST[:180]}:{os.getpid()}:{next(_attempts) & 0xFFFFFFFFFFFFFFFF:016x}"


def _claim_sql(connection) -> tuple[str, list[str]]:
    """The claim's SQL with positional parameters, and the names of the values they take in order."""
    qn = connection.ops.quote_name
    table = qn(IdempotencyRecord._meta.db_table)
    col = {f.name: qn(f.column) for f in IdempotencyRecord._meta.concrete_fields}
    inserted = {
        "scope": "%(scope)s",
        "key": "%(key)s",
        "fingerprint": "%(fingerprint)s",
        "state": "'in_progress'",
        "response_status": "NULL",
        "response_headers": "'[]'",
        "response_body": "NULL",
        "result": "NULL",
        "locked_until": "%(locked_until)s",
        "owner": "%(owner)s",
        "fencing_token": "1",
        "created_at": "%(now)s",
        "completed_at": "NULL",
        "expires_at": "%(expires_at)s",
        "replay_count": "0",
    }
    # DO UPDATE (rather than DO NOTHING) so that the existing row comes back in the same round trip;
    # it only counts a replay. Only quoted names from the model's _meta are interpolated here, every
    # value is a bound parameter. Kept short on purpose: PostgreSQL plans it on every execution.
    named = (
        f"INSERT INTO {table} AS r ({', '.join(col[name] for name in inserted)})"  # noqa: S608
        f" VALUES ({', '.join(inserted.values())})"
        f" ON CONFLICT ({col['scope']}, {col['key']}) DO UPDATE SET {col['replay_count']} = CASE"
        f" WHEN r.{col['state']} = 'completed' AND r.{col['fingerprint']} = excluded.{col['fingerprint']}"
        f" AND r.{col['expires_at']} > %(now)s THEN r.{col['replay_count']} + 1 ELSE r.{col['replay_count']} END"
        " RETURNING *"
    )
    return re.sub(r"%\((\w+)\)s", "%s", named), re.findall(r"%\((\w+)\)s", named)


_claim_sql_cache: dict[str, tuple[str, list[str]]] = {}


def _reclaimable(now: datetime, fingerprint: str) -> Q:
    """Records a new attempt may take over: a dead holder's (same request), or any expired and not running."""
    lease_dead = Q(state=IdempotencyRecord.State.IN_PROGRESS) & (
        Q(locked_until__lte=now) | Q(locked_until__isnull=True)
    )
    completed = Q(state=IdempotencyRecord.State.COMPLETED)
    return (Q(expires_at__lte=now) & (completed | lease_dead)) | (lease_dead & Q(fingerprint=fingerprint))


def _is_reclaimable(record: IdempotencyRecord, now: datetime, fingerprint: str) -> bool:
    lease_dead = record.state == IdempotencyRecord.State.IN_PROGRESS and (
        record.locked_until is None or record.locked_until <= now
    )
    expired = record.expires_at <= now
    completed = record.state == IdempotencyRecord.State.COMPLETED
    return (expired and (completed or lease_dead)) or (lease_dead and record.fingerprint == fingerprint)


def record_claim(
    *,
    scope: str,
    key: str,
    fingerprint: str,
    ttl: timedelta,
    lease_seconds: float | None = None,
    owner: str | None = None,
    now: datetime | None = None,
    using: str | None = None,
) -> Claim:
    """Claim ``key`` in ``scope`` for this attempt, or learn who holds it.

    One statement on the common paths (a fresh key, a replay, a key in flight, a mismatch); a
    takeover of a dead holder's or an expired record adds one conditional UPDATE that bumps the
    fencing token and only succeeds for one of several racing attempts.
    """
    statement = record_claim_statement(
        scope=scope,
        key=key,
        fingerprint=fingerprint,
        ttl=ttl,
        lease_seconds=lease_seconds,
        owner=owner,
        now=now,
        using=using,
    )
    return record_claim_settle(statement)


@dataclass(frozen=True)
class ClaimStatement:
    """A claim as ``record_claim`` sends it: ``sql`` and ``params`` (positional), and what settling needs.

    A caller that sends the statement itself, along with its own in one round trip
    (``cluster_task``), passes the row it returned to ``record_claim_settle``.
    """

    sql: str
    params: list[Any]
    scope: str
    key: str
    fingerprint: str
    owner: str
    now: datetime
    locked_until: datetime
    expires_at: datetime
    using: str


def record_claim_statement(
    *,
    scope: str,
    key: str,
    fingerprint: str,
    ttl: timedelta,
    lease_seconds: float | None = None,
    owner: str | None = None,
    now: datetime | None = None,
    using: str | None = None,
) -> ClaimStatement:
    using = using or database_alias()
    now = now or timezone.now()
    lease = lease_seconds if lease_seconds is not None else idempotency_settings.LEASE_SECONDS
    owner = owner or new_owner()
    connection = connections[using]
    cached = _claim_sql_cache.get(connection.vendor)
    if cached is None:
        cached = _claim_sql_cache[connection.vendor] = _claim_sql(connection)
    sql, names = cached
    values = {
        "scope": scope,
        "key": key,
        "fingerprint": fingerprint,
        "owner": owner,
        "now": now,
        "locked_until": now + timedelta(seconds=lease),
        "expires_at": now + ttl,
    }
    return ClaimStatement(
        sql=sql,
        params=[values[name] for name in names],
        scope=scope,
        key=key,
        fingerprint=fingerprint,
        owner=owner,
        now=now,
        locked_until=values["locked_until"],
        expires_at=values["expires_at"],
        using=using,
    )


def record_from_row(*, using: str, columns: list[str], row: tuple) -> IdempotencyRecord:
    """The record a ``RETURNING *`` row describes, with Django's conversions applied (as ``raw()`` does)."""
    connection = connections[using]
    ops = connection.ops
    key = (type(ops), tuple(columns))
    plan = _row_plans.get(key)
    if plan is None:
        plan = _row_plans[key] = _row_plan(connection, columns)
    names, values = [], []
    for (attname, col, converters), value in zip(plan, row, strict=True):
        for converter, on_ops in converters:
            value = converter(ops, value, col, connection) if on_ops else converter(value, col, connection)
        names.append(attname)
        values.append(value)
    return IdempotencyRecord.from_db(using, names, values)


def _row_plan(connection, columns: list[str]) -> list[tuple[str, Any, list]]:
    """Per column: the field's attname, its ``Col`` and Django's converters, none bound to ``connection``.

    The backend's converters are methods of ``connection.ops``: the plan keeps their functions and
    the caller passes its own connection's ``ops``, so the cache holds no connection alive (a
    worker thread's connection is dropped with its thread).
    """
    meta = IdempotencyRecord._meta
    by_column = {field.column: field for field in meta.concrete_fields}
    plan = []
    for column in columns:
        field = by_column[column]
        col = field.get_col(meta.db_table)
        converters = []
        for converter in connection.ops.get_db_converters(col) + col.get_db_converters(connection):
            if getattr(converter, "__self__", None) is connection.ops:
                converters.append((converter.__func__, True))
            else:  # the field's own from_db_value: bound to the field, which lives as long as the model
                converters.append((converter, False))
        plan.append((field.attname, col, converters))
    return plan


# (the backend's operations class, the columns) -> _row_plan: building the converters for each row
# cost more than the row's statement.
_row_plans: dict[tuple[type, tuple[str, ...]], list] = {}


def record_claim_settle(statement: ClaimStatement, record: IdempotencyRecord | None = None) -> Claim:
    """What the claim found; ``record`` is the row its statement returned, if the caller sent it.

    Without ``record`` the statement is sent here. A record to take over is taken (one more
    statement); losing that race to another attempt sends the claim again.
    """
    using, now, owner, fingerprint = statement.using, statement.now, statement.owner, statement.fingerprint
    # A lost takeover race (or a record deleted meanwhile) sends us round again; each round some
    # attempt makes progress, so a few rounds always settle.
    for _ in range(5):
        if record is None:
            record = list(IdempotencyRecord.objects.using(using).raw(statement.sql, statement.params))[0]
        if isinstance(record.response_body, memoryview):
            record.response_body = record.response_body.tobytes()
        if record.owner == owner:
            return Claim(CLAIMED, record, now)
        if _is_reclaimable(record, now, fingerprint):
            taken = _take_over(record, statement=statement)
            if taken is not None:
                return Claim(CLAIMED, taken, now)
            record = None
            continue
        if record.fingerprint != fingerprint:
            return Claim(MISMATCH, record, now)
        if record.state == IdempotencyRecord.State.COMPLETED:
            return Claim(REPLAY, record, now)
        return Claim(IN_PROGRESS, record, now)
    raise RuntimeError(f"could not settle the claim of idempotency key {statement.key!r} in scope {statement.scope!r}")


def _take_over(record: IdempotencyRecord, *, statement: ClaimStatement) -> IdempotencyRecord | None:
    """Claim a reclaimable record for us with the next fencing token; None if another attempt won."""
    now, fingerprint, owner, using = statement.now, statement.fingerprint, statement.owner, statement.using
    token = record.fencing_token + 1
    fresh = {
        "fingerprint": fingerprint,
        "state": IdempotencyRecord.State.IN_PROGRESS,
        "owner": owner,
        "locked_until": statement.locked_until,
        "fencing_token": token,
        "created_at": now,
        "expires_at": statement.expires_at,
        "response_status": None,
        "response_headers": [],
        "response_body": None,
        "result": None,
        "completed_at": None,
        "replay_count": 0,
    }
    updated = (
        IdempotencyRecord.objects.using(using)
        .filter(_reclaimable(now, fingerprint), pk=record.pk, fencing_token=record.fencing_token)
        .update(**fresh)
    )
    if not updated:
        return None
    logger.info(
        "idempotency key taken over scope=%s key=%s token=%s previous_owner=%s owner=%s",
        record.scope,
        record.key,
        token,
        record.owner,
        owner,
    )
    for name, value in fresh.items():
        setattr(record, name, value)
    return record


# The columns the completion writes, in the order of _complete_sql's SET clause.
_COMPLETION_FIELDS = (
    "state",
    "response_status",
    "response_headers",
    "response_body",
    "result",
    "completed_at",
    "expires_at",
    "locked_until",
    "fencing_token",
)


def _complete_sql(connection) -> str:
    qn = connection.ops.quote_name
    meta = IdempotencyRecord._meta
    col = {name: qn(meta.get_field(name).column) for name in (*_COMPLETION_FIELDS, "id")}
    # locks.fencing.fenced_update's rule (the stored token never goes down; equal tokens pass) as one
    # hand-written statement: every job and idempotent request completes here, and the ORM's query
    # building cost more CPU than the round trip. Only quoted names from _meta are interpolated.
    return (
        f"UPDATE {qn(meta.db_table)} SET {', '.join(f'{col[name]} = %s' for name in _COMPLETION_FIELDS)}"  # noqa: S608
        f" WHERE {col['id']} = %s AND {col['state']} = %s AND {col['fencing_token']} <= %s"
    )


_complete_sql_cache: dict[str, str] = {}


def record_complete(
    *,
    record: IdempotencyRecord,
    token: int,
    ttl: timedelta,
    response_status: int | None = None,
    response_headers: list[list[str]] | None = None,
    response_body: bytes | None = None,
    result: Any = None,
    now: datetime | None = None,
    using: str | None = None,
) -> None:
    """Store the outcome of the attempt holding ``token``; raise ``StaleFencingToken`` if it lost the key.

    Call it inside the transaction of the work's own writes, so both commit or neither does.
    """
    sql, params = record_complete_statement(
        record=record,
        token=token,
        ttl=ttl,
        response_status=response_status,
        response_headers=response_headers,
        response_body=response_body,
        result=result,
        now=now,
        using=using,
    )
    with connections[using or database_alias()].cursor() as cursor:
        cursor.execute(sql, params)
        written = cursor.rowcount
    record_complete_check(record=record, token=token, written=written)


def record_complete_statement(
    *,
    record: IdempotencyRecord,
    token: int,
    ttl: timedelta,
    response_status: int | None = None,
    response_headers: list[list[str]] | None = None,
    response_body: bytes | None = None,
    result: Any = None,
    now: datetime | None = None,
    using: str | None = None,
) -> tuple[str, list[Any]]:
    """``record_complete``'s UPDATE as (sql, params), for a caller that sends it along with its own
    statements in one round trip (``cluster_task``); it then passes the rows written to
    ``record_complete_check``."""
    if isinstance(token, bool) or not isinstance(token, int) or token < 0:
        raise ValueError(f"token must be a non-negative int, got {token!r}")
    now = now or timezone.now()
    connection = connections[using or database_alias()]
    sql = _complete_sql_cache.get(connection.vendor)
    if sql is None:
        sql = _complete_sql_cache[connection.vendor] = _complete_sql(connection)
    values = {
        "state": IdempotencyRecord.State.COMPLETED.value,
        "response_status": response_status,
        "response_headers": response_headers or [],
        "response_body": response_body,
        "result": result,
        "completed_at": now,
        "expires_at": now + ttl,
        "locked_until": None,
        "fencing_token": token,
    }
    params = [prepare(values[name], connection) for name, prepare in _completion_preparers()]
    params += [record.pk, IdempotencyRecord.State.IN_PROGRESS.value, token]
    return sql, params


def _completion_preparers() -> list[tuple[str, Any]]:
    """Per completed column, in order: its name and what turns a value into the database's form.

    What each field's ``get_db_prep_save`` does for the plain values a completion holds (the
    generic path cost more than the rest of the statement): JSON and datetimes through the
    connection's adapters, None as SQL NULL, other fields (text, integers, bytes) as the field does.
    """
    global _preparers
    if _preparers is None:
        preparers = []
        for name in _COMPLETION_FIELDS:
            field = IdempotencyRecord._meta.get_field(name)
            if isinstance(field, models.JSONField):
                prepare = functools.partial(_json_or_null, field.encoder)
            elif isinstance(field, models.DateTimeField):
                prepare = functools.partial(_datetime_or_null, field)
            else:
                prepare = field.get_db_prep_save
            preparers.append((name, prepare))
        _preparers = preparers
    return _preparers


_preparers: list[tuple[str, Any]] | None = None


def _json_or_null(encoder, value: Any, connection) -> Any:
    return None if value is None else connection.ops.adapt_json_value(value, encoder)


def _datetime_or_null(field, value: datetime | None, connection) -> Any:
    if value is None:
        return None
    if timezone.is_naive(value):  # the field warns and makes it aware
        return field.get_db_prep_save(value, connection)
    return connection.ops.adapt_datetimefield_value(value)


def record_complete_check(*, record: IdempotencyRecord, token: int, written: int) -> None:
    """Raise ``StaleFencingToken`` when the completion wrote no row: the attempt lost the key."""
    if written == 0:
        # A successor holds the key with a newer token, or completed it, or the record was deleted
        # (admin, reaper) after our lease ran out.
        logger.warning(
            "idempotency: stale completion rejected scope=%s key=%s token=%s owner=%s",
            record.scope,
            record.key,
            token,
            record.owner,
        )
        raise StaleFencingToken(token, target=f"idempotency record {record.scope!r} {record.key!r}")


def record_release(*, record: IdempotencyRecord, token: int, using: str | None = None) -> bool:
    """Give the key up (the attempt failed) so a retry can run; False if it was no longer ours."""
    using = using or database_alias()
    deleted, _ = (
        IdempotencyRecord.objects.using(using)
        .filter(pk=record.pk, fencing_token=token, state=IdempotencyRecord.State.IN_PROGRESS)
        .delete()
    )
    return deleted > 0


def record_renew_lease(
    *, record_id: int, token: int, lease_seconds: float, now: datetime | None = None, using: str | None = None
) -> bool:
    """Extend the lease of the attempt holding ``token``; False if it has lost the key."""
    using = using or database_alias()
    now = now or timezone.now()
    updated = (
        IdempotencyRecord.objects.using(using)
        .filter(pk=record_id, fencing_token=token, state=IdempotencyRecord.State.IN_PROGRESS)
        .update(locked_until=now + timedelta(seconds=lease_seconds))
    )
    return updated > 0


def record_break_lease(*, scope: str, key: str, now: datetime | None = None, using: str | None = None) -> bool:
    """End the lease of an in-progress record whose holder is known to be gone (its node was declared
    dead), so the next attempt takes it over at once instead of after the lease. The takeover bumps
    the fencing token, so a holder that was only paused cannot complete it later."""
    using = using or database_alias()
    now = now or timezone.now()
    records = IdempotencyRecord.objects.using(using).filter(
        scope=scope, key=key, state=IdempotencyRecord.State.IN_PROGRESS, locked_until__gt=now
    )
    with transaction.atomic(using=using):
        if connections[using].features.has_select_for_update_skip_locked:
            # A holder frozen in the middle of its commit keeps the row locked: skip it rather than
            # wait for it; its lease then ends by time, and the takeover's token still fences it.
            free = list(records.select_for_update(skip_locked=True).values_list("pk", flat=True))
            records = records.filter(pk__in=free)
        updated = records.update(locked_until=now)
    return updated > 0


def _purgeable(now: datetime) -> Q:
    # An expired record whose holder is still inside its lease is left alone: deleting it would let a
    # duplicate start while the first attempt still runs.
    live = Q(state=IdempotencyRecord.State.IN_PROGRESS, locked_until__gt=now)
    return Q(expires_at__lte=now) & ~live


def records_purge_expired(
    *, now: datetime | None = None, batch_size: int | None = None, using: str | None = None
) -> int:
    """Delete expired records in batches (each one short statement on the expires_at index); return how many."""
    using = using or database_alias()
    now = now or timezone.now()
    batch_size = batch_size or idempotency_settings.REAPER_BATCH_SIZE
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    records = IdempotencyRecord.objects.using(using)
    total = 0
    while True:
        ids = list(records.filter(_purgeable(now)).order_by("expires_at").values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        deleted, _ = records.filter(_purgeable(now), pk__in=ids).delete()
        total += deleted
        if len(ids) < batch_size:
            break
    if total:
        logger.info("idempotency reaper deleted %d expired records", total)
    return total


def records_expire(*, ids: list[int], now: datetime | None = None, using: str | None = None) -> int:
    """Make records expire now: the next request with their key runs afresh, and the reaper deletes them."""
    using = using or database_alias()
    now = now or timezone.now()
    return IdempotencyRecord.objects.using(using).filter(pk__in=ids).update(expires_at=now)
