"""``cluster_task``: Celery tasks routed to their key's owner, run under a lock and an idempotency record.

Celery delivers at least once; a ``cluster_task`` makes each job's *effect* happen once:

1. ``delay()`` validates the arguments, writes a ``Job`` row and publishes the message when the
   caller's transaction commits, to the queue of the first active owner of the routing key.
2. The worker marks the job running (dropping stale copies of a re-dispatched message), claims the
   idempotency record (a duplicate returns the stored result and the job ends ``duplicate``), takes
   the lock with auto-renew, and runs the body in ``transaction.atomic()``.
3. The body's writes, the idempotency completion and the job's success commit together; the job
   update is fenced by the dispatch number, so a late original whose job moved elsewhere rolls back.

Transient failures (lock busy, a backend down, the key held by a running attempt) are retried
with exponential backoff and jitter; any other exception fails the job and releases the key.
"""

from __future__ import annotations

import inspect
import json
import logging
import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Retry
from django.db import InterfaceError, OperationalError, connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from idempotency import IdempotencyInProgress, IdempotencyKeyMismatch, StaleFencingToken
from idempotency import services as idem
from idempotency.keys import arguments_fingerprint
from idempotency.leases import lease_keeper
from idempotency.models import IdempotencyRecord
from locks import Lease, LockBackendUnavailable, LockLost, LockNotAcquired, lock

from .jobs import PUBLISHERS, RunningJob, announce, canonical_json, job_create, task_scope
from .models import OPEN_JOB_STATES, Job, JobState
from .results import JobTask
from .routing import node_name_for
from .statements import Statement, can_batch, execute_together

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    LockNotAcquired,
    LockBackendUnavailable,
    LockLost,
    IdempotencyInProgress,
)
# Lease of a task's idempotency claim, renewed every third of it while the body runs.
IDEMPOTENCY_LEASE = 30.0
# Jobs that were replaced (re-dispatched elsewhere) or already ended are skipped, not failed.
RUNNABLE_STATES = (JobState.QUEUED, JobState.RETRYING, JobState.REQUEUED, JobState.RUNNING)


@dataclass(frozen=True)
class JobContext:
    """What the body of a ``cluster_task`` knows about the run it is part of."""

    job_id: str
    attempt: int
    node: str
    fencing_token: int | None
    task: Task


class StaleDispatch(Exception):
    """The job was handed to another node while this copy ran: its writes must not commit."""


Template = str | Callable[..., str] | None


@dataclass(frozen=True)
class TaskSpec:
    name: str
    func: Callable[..., Any]
    params: tuple[str, ...]
    required: frozenset[str]
    key: Template
    lock: Template
    idempotency_key: Template
    lock_ttl: float
    lock_timeout: float
    lock_backend: str
    idempotency_ttl: timedelta
    retry_backoff: bool
    retry_backoff_max: float
    max_retries: int

    def format(self, template: Template, kwargs: dict[str, Any], what: str) -> str | None:
        if template is None:
            return None
        try:
            value = template(**kwargs) if callable(template) else template.format(**kwargs)
        except (KeyError, IndexError, AttributeError) as exc:
            raise ValueError(f"{self.name}: {what} template {template!r} needs {exc} from the arguments") from exc
        if not isinstance(value, str) or not value:
            raise ValueError(f"{self.name}: {what} must format to a non-empty string, got {value!r}")
        return value

    def backoff(self, retries: int) -> float:
        if not self.retry_backoff:
            return 1.0
        # Full jitter (AWS architecture blog): spreads retries of a contended lock apart.
        return random.uniform(0, min(self.retry_backoff_max, 0.5 * 2**retries))  # noqa: S311 (not security)


def _template_fields(template: Template) -> set[str]:
    if not isinstance(template, str):
        return set()
    return {
        field.split(".", 1)[0].split("[", 1)[0]
        for _, field, _, _ in string.Formatter().parse(template)
        if field is not None
    }


class ClusterTask:
    """What ``@cluster_task`` returns: call ``delay(**kwargs)`` or ``apply_async(kwargs=...)``."""

    def __init__(self, spec: TaskSpec, celery_task: Task) -> None:
        self.spec = spec
        self.celery_task = celery_task
        self.name = spec.name
        self.__doc__ = spec.func.__doc__
        self.__wrapped__ = spec.func

    def __repr__(self) -> str:
        return f"<cluster_task {self.name}>"

    def delay(self, *args: Any, **kwargs: Any):
        if args:
            raise TypeError(f"{self.name}: arguments are keyword-only, got {len(args)} positional")
        return self.apply_async(kwargs=kwargs)

    def apply_async(self, args: tuple | list | None = None, kwargs: dict[str, Any] | None = None, **options: Any):
        """Record the job and publish it on commit to the key owner's queue; returns its AsyncResult."""
        if args:
            raise TypeError(f"{self.name}: arguments are keyword-only, got {len(args)} positional")
        if options:
            raise TypeError(f"{self.name}: unsupported apply_async options {sorted(options)}")
        kwargs = dict(kwargs or {})
        self.check_arguments(kwargs)
        spec = self.spec
        job, _queue = job_create(
            task_name=spec.name,
            kwargs=kwargs,
            routing_key=spec.format(spec.key, kwargs, "key"),
            lock_name=spec.format(spec.lock, kwargs, "lock") or "",
            idempotency_key=spec.format(spec.idempotency_key, kwargs, "idempotency_key") or "",
        )
        return self.celery_task.AsyncResult(str(job.id))

    def check_arguments(self, kwargs: dict[str, Any]) -> None:
        unknown = set(kwargs) - set(self.spec.params)
        if unknown:
            raise TypeError(f"{self.name}: unexpected arguments {sorted(unknown)}")
        missing = self.spec.required - set(kwargs)
        if missing:
            raise TypeError(f"{self.name}: missing arguments {sorted(missing)}")
        for name, value in kwargs.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{self.name}: argument {name!r} is not JSON-serialisable ({exc})") from None

    def publish(self, job_id: str, dispatch: int, queue: str, kwargs: dict[str, Any]) -> None:
        self.celery_task.apply_async(args=(job_id, dispatch), kwargs={"kwargs": kwargs}, task_id=job_id, queue=queue)


def cluster_task(
    *,
    key: Template = None,
    lock: Template = None,
    idempotency_key: Template = None,
    lock_ttl: float = 30.0,
    lock_timeout: float = 0.0,
    lock_backend: str = "default",
    idempotency_ttl: timedelta = timedelta(days=1),
    retry_backoff: bool = True,
    retry_backoff_max: float = 60.0,
    max_retries: int = 5,
    name: str | None = None,
    **celery_options: Any,
) -> Callable[[Callable[..., Any]], ClusterTask]:
    """Make ``func(ctx, **kwargs)`` a routed, locked, exactly-once Celery task (see the module docstring)."""
    for what, template in (("key", key), ("lock", lock), ("idempotency_key", idempotency_key)):
        if template is not None and not (isinstance(template, str) and template) and not callable(template):
            raise ValueError(f"{what} must be a non-empty format string or a callable, got {template!r}")
    if isinstance(lock_ttl, bool) or not isinstance(lock_ttl, int | float) or lock_ttl <= 0:
        raise ValueError(f"lock_ttl must be a number of seconds > 0, got {lock_ttl!r}")
    if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, int | float) or lock_timeout < 0:
        raise ValueError(f"lock_timeout must be a number of seconds >= 0, got {lock_timeout!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
    if not isinstance(idempotency_ttl, timedelta) or idempotency_ttl <= timedelta(0):
        raise ValueError(f"idempotency_ttl must be a positive timedelta, got {idempotency_ttl!r}")

    def decorate(func: Callable[..., Any]) -> ClusterTask:
        parameters = list(inspect.signature(func).parameters.values())
        if not parameters:
            raise TypeError(f"{func.__qualname__}: the first parameter must take the JobContext")
        rest = parameters[1:]
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY) for p in rest):
            raise TypeError(f"{func.__qualname__}: after ctx, parameters must be named (keyword-only), no *args/**kw")
        params = tuple(p.name for p in rest)
        for what, template in (("key", key), ("lock", lock), ("idempotency_key", idempotency_key)):
            unknown = _template_fields(template) - set(params)
            if unknown:
                raise ValueError(f"{func.__qualname__}: {what} template {template!r} names unknown {sorted(unknown)}")
        spec = TaskSpec(
            name=name or f"{func.__module__}.{func.__qualname__}",
            func=func,
            params=params,
            required=frozenset(p.name for p in rest if p.default is p.empty),
            key=key,
            lock=lock,
            idempotency_key=idempotency_key,
            lock_ttl=float(lock_ttl),
            lock_timeout=float(lock_timeout),
            lock_backend=lock_backend,
            idempotency_ttl=idempotency_ttl,
            retry_backoff=retry_backoff,
            retry_backoff_max=float(retry_backoff_max),
            max_retries=max_retries,
        )

        def run(task: Task, job_id: str, dispatch: int, kwargs: dict[str, Any]) -> Any:
            return run_job(spec, task, job_id, dispatch, kwargs)

        run.__name__ = run.__qualname__ = func.__name__
        run.__module__ = func.__module__
        # JobTask: results are read from the Job rows, not stored twice (cluster/results.py).
        options = {"acks_late": True, "reject_on_worker_lost": True, "base": JobTask, **celery_options}
        celery_task = shared_task(name=spec.name, bind=True, max_retries=max_retries, **options)(run)
        wrapper = ClusterTask(spec, celery_task)
        PUBLISHERS[spec.name] = wrapper.publish
        REGISTRY[spec.name] = wrapper
        return wrapper

    return decorate


# Every cluster_task of this process, by name (the system check reads it).
REGISTRY: dict[str, ClusterTask] = {}


# --- the worker side ---------------------------------------------------------------------------


def _start_sql(connection: BaseDatabaseWrapper) -> str:
    qn = connection.ops.quote_name
    col = {f.name: qn(f.column) for f in Job._meta.concrete_fields}
    runnable = ", ".join(["%s"] * len(RUNNABLE_STATES))
    # Only quoted names from the model's _meta are interpolated; every value is a bound parameter.
    return (
        f"UPDATE {qn(Job._meta.db_table)} SET {col['state']} = %s, {col['attempts']} = {col['attempts']} + 1,"  # noqa: S608
        f" {col['ran_on']} = %s, {col['started_at']} = %s, {col['updated_at']} = %s"
        f" WHERE {col['id']} = %s AND {col['dispatch']} = %s AND {col['state']} IN ({runnable})"
        f" RETURNING {col['attempts']}, {col['owner_node']}"
    )


_start_sql_cache: dict[str, str] = {}


def _start(
    spec: TaskSpec, job_id: str, dispatch: int, node: str, claim: idem.ClaimStatement | None
) -> tuple[RunningJob | None, IdempotencyRecord | None]:
    """Mark the job running for this copy of its message; (None, None) when this copy must not run.

    One conditional ``UPDATE ... RETURNING`` in autocommit (PostgreSQL, SQLite >= 3.35): the row
    lock of the UPDATE decides between racing copies as the old SELECT ... FOR UPDATE did, at a
    quarter of the round trips. Only a copy that must not run pays a second read, to log why.

    On PostgreSQL the idempotency claim's statement rides in the same round trip and transaction
    (its returned record comes back as the second value, to be settled), and that transaction
    commits without waiting for the disk: losing it in a database crash is the same as this worker
    dying before it (the job is retried either way), and the body's commit, which does wait,
    flushes the log up to and past it. So a job waits for the disk once.
    """
    using = router.db_for_write(Job)
    connection = connections[using]
    sql = _start_sql_cache.get(connection.vendor)
    if sql is None:
        sql = _start_sql_cache[connection.vendor] = _start_sql(connection)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    pk = Job._meta.pk.get_db_prep_value(uuid.UUID(job_id), connection)
    statements: list[Statement] = [
        (sql, [JobState.RUNNING.value, node, now, now, pk, dispatch, *(s.value for s in RUNNABLE_STATES)])
    ]
    together = can_batch(using) and not connection.in_atomic_block
    if together:
        statements.insert(0, ("SET LOCAL synchronous_commit TO off", []))
    with_claim = together and claim is not None and claim.using == using
    if with_claim:
        statements.append((claim.sql, claim.params))
    results = execute_together(using, statements)
    record = None
    if with_claim:
        claimed = results[-1]
        record = idem.record_from_row(using=using, columns=claimed.columns, row=claimed.rows[0])
        results = results[:-1]
    rows = results[-1].rows
    if not rows:
        if record is not None and record.owner == claim.owner:
            idem.record_release(record=record, token=record.fencing_token, using=using)  # not ours to run
        _log_skipped(spec, job_id, dispatch, using)
        return None, None
    attempts, owner_node = rows[0]
    job = RunningJob(
        id=uuid.UUID(job_id),
        task_name=spec.name,
        owner_node=owner_node,
        state=JobState.RUNNING,
        attempts=attempts,
        ran_on=node,
    )
    announce(job)
    return job, record


def _log_skipped(spec: TaskSpec, job_id: str, dispatch: int, using: str) -> None:
    job = Job.objects.using(using).filter(pk=job_id).only("dispatch", "state").first()
    if job is None:
        logger.error("job %s of %s: no record (was the enqueueing transaction rolled back?)", job_id, spec.name)
    elif job.dispatch != dispatch:
        logger.info("job %s: dropped a stale copy (dispatch %s, current %s)", job_id, dispatch, job.dispatch)
    else:
        logger.info("job %s already %s: redelivery ignored", job_id, job.state)


def run_job(spec: TaskSpec, task: Task, job_id: str, dispatch: int, kwargs: dict[str, Any]) -> Any:
    node = node_name_for(task.request.hostname or "")
    # No per-task health check (a SELECT 1 before the first statement, which CONN_HEALTH_CHECKS
    # asks for after Celery's fixup reset the connection): a dead connection fails _start just the
    # same, which retries the job, and the fixup closes that connection after the task. A round
    # trip fewer per job (benchmarks/results/jobs.md).
    connections[router.db_for_write(Job)].health_check_done = True
    idem_key = spec.format(spec.idempotency_key, kwargs, "idempotency_key")
    claim_statement = _claim_statement(spec, idem_key, kwargs) if idem_key is not None else None
    try:
        job, claimed = _start(spec, job_id, dispatch, node, claim_statement)
    except (OperationalError, InterfaceError) as exc:
        # The database is away (a restart, a failover): the message must not be acked as done.
        logger.warning("job %s: could not start it (%s), retrying", job_id, exc)
        raise task.retry(exc=exc, countdown=spec.backoff(task.request.retries)) from exc
    if job is None:
        return None
    claim = None
    lease_handle = None
    try:
        if claim_statement is not None:
            claim = _claim(claim_statement, claimed)
            if claim.outcome == idem.REPLAY:
                _finish(job, dispatch, JobState.DUPLICATE, result=claim.record.result)
                return claim.record.result
            # Long bodies keep the claim alive; a crashed worker's claim runs out and is taken over.
            lease_handle = lease_keeper.register(
                record_id=claim.record.pk,
                token=claim.token,
                lease_seconds=IDEMPOTENCY_LEASE,
                using=idem.database_alias(),
                scope=claim.record.scope,
                key=claim.record.key,
            )
        lock_name = spec.format(spec.lock, kwargs, "lock")
        if lock_name is None:
            return _run_body(spec, task, job, dispatch, kwargs, claim, lease=None)
        result, committed = None, False
        try:
            with lock(
                lock_name, ttl=spec.lock_ttl, timeout=spec.lock_timeout, backend=spec.lock_backend, auto_renew=True
            ) as lease:
                result = _run_body(spec, task, job, dispatch, kwargs, claim, lease=lease)
                committed = True
        except LockBackendUnavailable as exc:
            if not committed:
                raise
            # The job's effect has committed: a lock store that went away meanwhile only means the
            # release could not be sent. The lease runs out on its own; the job stays succeeded.
            logger.warning("job %s succeeded; lock %r could not be released (it expires): %s", job_id, lock_name, exc)
        return result
    except Retry:
        raise
    except (StaleDispatch, StaleFencingToken) as exc:
        # The job moved to another node (a new dispatch), or another attempt took its key over:
        # that attempt's result is the one that counts, and this one's writes have rolled back.
        logger.warning("job %s was taken over while it ran here (%s): this run rolled back", job_id, exc)
        _release(claim)
        return None
    except TRANSIENT_ERRORS + (OperationalError, InterfaceError) as exc:
        _release(claim)
        if task.request.retries >= spec.max_retries:
            _finish(job, dispatch, JobState.FAILED, error=f"{type(exc).__name__}: {exc} (retries exhausted)")
            raise
        try:
            _finish(job, dispatch, JobState.RETRYING, error=f"{type(exc).__name__}: {exc}", finished=False)
        except (OperationalError, InterfaceError) as db_exc:
            # The database is what failed: the record says running a while longer, the retry runs all the same.
            logger.warning("job %s: could not record the retry (%s)", job_id, db_exc)
        countdown = spec.backoff(task.request.retries)
        if isinstance(exc, IdempotencyInProgress):
            # The holder's lease says when to look again; blind backoff could wait far longer.
            countdown = min(countdown, exc.retry_after)
        raise task.retry(exc=exc, countdown=countdown) from exc
    except BaseException as exc:
        _release(claim)
        _finish(job, dispatch, JobState.FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if lease_handle is not None:
            lease_keeper.unregister(lease_handle)


def _claim_statement(spec: TaskSpec, idem_key: str, kwargs: dict[str, Any]) -> idem.ClaimStatement:
    return idem.record_claim_statement(
        scope=task_scope(spec.name),
        key=idem_key,
        fingerprint=arguments_fingerprint(canonical_json(kwargs)),
        ttl=spec.idempotency_ttl,
        lease_seconds=IDEMPOTENCY_LEASE,
    )


def _claim(statement: idem.ClaimStatement, claimed: IdempotencyRecord | None) -> idem.Claim:
    """Settle the claim (sending it now unless it went with the start); raise unless this run may go on."""
    claim = idem.record_claim_settle(statement, claimed)
    if claim.outcome == idem.MISMATCH:
        raise IdempotencyKeyMismatch(scope=claim.record.scope, key=statement.key)
    if claim.outcome == idem.IN_PROGRESS:
        raise IdempotencyInProgress(scope=claim.record.scope, key=statement.key, retry_after=claim.retry_after)
    return claim


def _run_body(
    spec: TaskSpec,
    task: Task,
    job: RunningJob,
    dispatch: int,
    kwargs: dict[str, Any],
    claim: idem.Claim | None,
    *,
    lease: Lease | None,
) -> Any:
    lease_token = lease.token if lease is not None else None
    ctx = JobContext(job_id=str(job.id), attempt=job.attempts, node=job.ran_on, fencing_token=lease_token, task=task)
    with transaction.atomic():
        result = spec.func(ctx, **kwargs)
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{spec.name} returned a result that is not JSON-serialisable: {exc}") from None
        _complete(spec, job, dispatch, claim, result=result, lock_token=lease_token)
        if lease is not None:
            # Last check before the commit: a lease lost while the body ran (it expired during a
            # pause, or the lock store restarted and forgot it) rolls the body back for a retry.
            lease.ensure_held()
        job.state = JobState.SUCCEEDED
        announce(job)
    return result


def _succeed_sql(connection: BaseDatabaseWrapper) -> str:
    qn = connection.ops.quote_name
    col = {f.name: qn(f.column) for f in Job._meta.concrete_fields}
    return (
        f"UPDATE {qn(Job._meta.db_table)} SET {col['state']} = %s, {col['result']} = %s,"  # noqa: S608
        f" {col['lock_token']} = %s, {col['finished_at']} = %s, {col['updated_at']} = %s, {col['error']} = ''"
        f" WHERE {col['id']} = %s AND {col['dispatch']} = %s"
    )


_succeed_sql_cache: dict[str, str] = {}


def _complete(
    spec: TaskSpec, job: RunningJob, dispatch: int, claim: idem.Claim | None, *, result: Any, lock_token: int | None
) -> None:
    """Complete the idempotency record and record the job's success: one round trip on PostgreSQL.

    Raises ``StaleFencingToken`` when another attempt took the key over, ``StaleDispatch`` when the
    job was handed elsewhere; either way the body's transaction rolls back.
    """
    using = router.db_for_write(Job)
    statements = []
    if claim is not None and idem.database_alias() == using:
        statements.append(
            idem.record_complete_statement(
                record=claim.record, token=claim.token, ttl=spec.idempotency_ttl, result=result, using=using
            )
        )
    elif claim is not None:  # records in another database: their own round trip
        idem.record_complete(record=claim.record, token=claim.token, ttl=spec.idempotency_ttl, result=result)
    statements.append(_succeed_statement(job, dispatch, result=result, lock_token=lock_token, using=using))
    *completed, succeeded = execute_together(using, statements)
    if completed:
        idem.record_complete_check(record=claim.record, token=claim.token, written=completed[0].rowcount)
    if not succeeded.rowcount:
        raise StaleDispatch(str(job.pk))


def _succeed_statement(job: RunningJob, dispatch: int, *, result: Any, lock_token: int | None, using: str) -> Statement:
    """The job's success, fenced by its dispatch number: writes no row when it was handed elsewhere."""
    # Hand-written like _start: the ORM's query building cost more than the statement itself.
    connection = connections[using]
    sql = _succeed_sql_cache.get(connection.vendor)
    if sql is None:
        sql = _succeed_sql_cache[connection.vendor] = _succeed_sql(connection)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    result_value = Job._meta.get_field("result").get_db_prep_save(result, connection)
    pk = Job._meta.pk.get_db_prep_value(job.pk, connection)
    return sql, [JobState.SUCCEEDED.value, result_value, lock_token, now, now, pk, dispatch]


def _finish(
    job: Job | RunningJob, dispatch: int, state: str, *, result: Any = None, error: str = "", finished: bool = True
) -> None:
    # updated_at by hand: update() leaves auto_now alone, and jobs_resend_stalled reads it as progress.
    fields: dict[str, Any] = {"state": state, "error": error[:2000], "updated_at": timezone.now()}
    if result is not None:
        fields["result"] = result
    if finished:
        fields["finished_at"] = timezone.now()
    # Only an open job changes: a late copy of a message never reopens a job that has ended.
    if Job.objects.filter(pk=job.pk, dispatch=dispatch, state__in=OPEN_JOB_STATES).update(**fields):
        job.state = state
        announce(job)


def _release(claim: idem.Claim | None) -> None:
    if claim is None or claim.outcome != idem.CLAIMED:
        return
    try:
        idem.record_release(record=claim.record, token=claim.token)
    except Exception:  # the lease runs out on its own; say so, with the key
        logger.exception("could not release idempotency key %s/%s", claim.record.scope, claim.record.key)


__all__ = ["ClusterTask", "JobContext", "cluster_task"]


@shared_task(name="cluster.trim_jobs")
def trim_jobs() -> int:
    """Beat task: delete finished job records older than ``JOB_RETENTION_DAYS``."""
    from .jobs import jobs_trim
    from .settings import cluster_settings

    return jobs_trim(older_than=timedelta(days=cluster_settings.JOB_RETENTION_DAYS))
