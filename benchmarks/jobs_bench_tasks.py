"""Tasks of ``benchmarks/bench_jobs.py`` only: never imported by the app.

Workers load this module with ``celery -A config worker -I jobs_bench_tasks`` (``benchmarks/`` on
``PYTHONPATH``), so it registers nothing in a normal deployment. Both tasks do the same trivial work
(build and return a small dict); the difference is everything ``cluster_task`` adds around it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from celery import shared_task
from psycopg.types.json import Jsonb

from cluster.jobs import PUBLISHERS, canonical_json, job_create
from cluster.models import Job
from cluster.routing import node_name_for
from cluster.tasks import JobContext, cluster_task

CLUSTER_TASK_NAME = "bench_jobs.cluster_noop"
PLAIN_TASK_NAME = "bench_jobs.plain_noop"
IDEMPOTENCY_TTL = timedelta(days=1)


@cluster_task(
    key="bench:{item}",  # routed to the owner of the key on the ring
    lock="bench:{item}",  # under a distributed lock (the Redis backend), auto-renewed
    idempotency_key="bench:{run}:{item}",  # with an idempotency record
    lock_ttl=30,
    name=CLUSTER_TASK_NAME,
)
def cluster_noop(ctx: JobContext, *, run: str, item: int) -> dict:
    return {"item": item}


# The same task less one option at a time, for ``bench_jobs.py --parts``: what each option costs
# in the same run (the lock: the difference between ``cluster_noop`` and ``cluster_nolock``).
@cluster_task(key="bench:{item}", idempotency_key="bench:{run}:{item}", name="bench_jobs.cluster_nolock")
def cluster_nolock(ctx: JobContext, *, run: str, item: int) -> dict:
    return {"item": item}


@cluster_task(key="bench:{item}", name="bench_jobs.cluster_keyonly")
def cluster_keyonly(ctx: JobContext, *, run: str, item: int) -> dict:
    return {"item": item}


@shared_task(name=PLAIN_TASK_NAME, acks_late=True)
def plain_noop(*, run: str, item: int) -> dict:
    return {"item": item}


def make_job(task_name: str, run: str, item: int) -> tuple[str, dict]:
    """A queued Job row as ``delay()`` writes it, without publishing: for running the task in-process."""
    kwargs = {"run": run, "item": item}
    job = Job.objects.create(
        id=uuid.uuid4(),
        task_name=task_name,
        args=kwargs,
        args_digest=hashlib.sha256(canonical_json(kwargs).encode()).hexdigest(),
        routing_key=f"bench:{item}",
        lock_name=f"bench:{item}",
        idempotency_key=f"bench:{run}:{item}",
        owner_node="inproc",
    )
    return str(job.id), kwargs


# --- ``bench_jobs.py --parts``: the floor --------------------------------------------------------
# ``cluster_noop``'s server work with none of its Python: a plain task (no result stored, as a
# cluster_task stores none) sends, on a bare psycopg connection of its own, the statements the
# worker sends for an all-options job (start + idempotency claim in one round trip committed
# without waiting for the disk; then idempotency completion + job success and COMMIT) and takes
# the same Redis lock through the same API. Its rate is what ``cluster_noop`` could reach if its
# wrapper cost nothing: below 0.5x the plain task, no wrapper can meet the target on this machine.
FLOOR_TASK_NAME = "bench_jobs.floor"
FLOOR_LEAN_TASK_NAME = "bench_jobs.floor_lean"
FLOOR_ONE_TX_TASK_NAME = "bench_jobs.floor_one_tx"
_floor_local = threading.local()


def floor_connection() -> psycopg.Connection:
    conn = getattr(_floor_local, "conn", None)
    if conn is None or conn.closed:
        # Client-side binding, as Django's PostgreSQL backend: the same protocol and round trips.
        conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, cursor_factory=psycopg.ClientCursor)
        _floor_local.conn = conn
    return conn


@functools.cache
def _floor_sql(lean: bool, one_tx: bool) -> tuple[str, str]:
    """(start, finish) SQL: the worker's, or the lean variant's (no ``running`` write, attempt counted at the end).

    In one transaction (``one_tx``, lean too), the start locks the job's row instead of committing a
    state: the lock held to the end is what fences a second copy of the message.
    """
    from django.db import connection

    from cluster import tasks
    from idempotency import services

    succeed = tasks._succeed_sql(connection)
    if not lean:
        start = f"SET LOCAL synchronous_commit TO off;\n{tasks._start_sql(connection)};\n"
        return start, f"{services._complete_sql(connection)};\n{succeed}"
    qn = connection.ops.quote_name
    job = f"SELECT {qn('attempts')}, {qn('owner_node')} FROM {qn(Job._meta.db_table)}"  # noqa: S608 (names only)
    job += f" WHERE {qn('id')} = %s AND {qn('dispatch')} = %s AND {qn('state')} IN (%s, %s, %s, %s)"
    start = f"{job} FOR UPDATE;\n" if one_tx else f"SET LOCAL synchronous_commit TO off;\n{job};\n"
    counted = f", {qn('attempts')} = {qn('attempts')} + 1, {qn('ran_on')} = %s, {qn('started_at')} = %s WHERE "
    return start, f"{services._complete_sql(connection)};\n{succeed.replace(' WHERE ', counted, 1)}"


def _floor(task, job_id: str, dispatch: int, run: str, item: int, *, lean: bool, one_tx: bool = False) -> None:
    from idempotency import services
    from idempotency.keys import arguments_fingerprint
    from locks import lock

    start, finish = _floor_sql(lean, one_tx)
    kwargs = {"run": run, "item": item}
    claim = services.record_claim_statement(
        scope=f"task:{task.name}",
        key=f"bench:{run}:{item}",
        fingerprint=arguments_fingerprint(canonical_json(kwargs)),
        ttl=IDEMPOTENCY_TTL,
        lease_seconds=30.0,
    )
    started = datetime.now(UTC)
    runnable = ["queued", "retrying", "requeued", "running"]
    conn = floor_connection()
    cur = conn.cursor()
    node = node_name_for(task.request.hostname or "")
    job_params = (
        [job_id, dispatch, *runnable] if lean else ["running", node, started, started, job_id, dispatch, *runnable]
    )
    conn.autocommit = not one_tx
    try:
        cur.execute(start + claim.sql, [*job_params, *claim.params])
        if not one_tx:
            cur.nextset()  # past SET LOCAL
        if cur.fetchone() is None:
            raise RuntimeError(f"floor job {job_id}: not runnable")
        cur.nextset()
        columns = [column.name for column in cur.description]
        record = dict(zip(columns, cur.fetchone(), strict=True))
        result = {"item": item}
        with lock(f"bench:{item}", ttl=30, auto_renew=True) as lease:
            if conn.autocommit:  # the start committed on its own: BEGIN (one_tx: still in the start's)
                conn.autocommit = False
            now = datetime.now(UTC)
            token = record["fencing_token"]
            completion = ["completed", None, Jsonb([]), None, Jsonb(result), now, now + IDEMPOTENCY_TTL, None, token]
            success = ["succeeded", Jsonb(result), lease.token, now, now, *([node, started] if lean else [])]
            cur.execute(finish, [*completion, record["id"], "in_progress", token, *success, job_id, dispatch])
            if not lean:
                lease.ensure_held()
            conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.autocommit = True


@shared_task(name=FLOOR_TASK_NAME, bind=True, acks_late=True, ignore_result=True)
def floor(self, job_id: str, dispatch: int, *, run: str, item: int) -> None:
    _floor(self, job_id, dispatch, run, item, lean=False)


# The floor less two guarantees (README's jobs section): no ``running`` write (the start only reads
# the job; the success counts the attempt) and no lock check before COMMIT.
@shared_task(name=FLOOR_LEAN_TASK_NAME, bind=True, acks_late=True, ignore_result=True)
def floor_lean(self, job_id: str, dispatch: int, *, run: str, item: int) -> None:
    _floor(self, job_id, dispatch, run, item, lean=True)


# The lean floor in one transaction: the idempotency claim is not committed before the body, so a
# concurrent duplicate would wait on its row instead of retrying (a redesign of the exactly-once path).
@shared_task(name=FLOOR_ONE_TX_TASK_NAME, bind=True, acks_late=True, ignore_result=True)
def floor_one_tx(self, job_id: str, dispatch: int, *, run: str, item: int) -> None:
    _floor(self, job_id, dispatch, run, item, lean=True, one_tx=True)


class FloorJobs:
    """Enqueues floor jobs as ``cluster_noop.delay()`` does: a Job row, then the message to the key's owner."""

    def __init__(self, task) -> None:
        self.name = task.name
        # What job_create() calls on commit for this task name (cluster_task registers its own alike).
        PUBLISHERS[self.name] = lambda job_id, dispatch, queue, kwargs: task.apply_async(
            args=(job_id, dispatch), kwargs=kwargs, task_id=job_id, queue=queue
        )

    def delay(self, *, run: str, item: int):
        job, _queue = job_create(
            task_name=self.name,
            kwargs={"run": run, "item": item},
            routing_key=f"bench:{item}",
            lock_name=f"bench:{item}",
            idempotency_key=f"bench:{run}:{item}",
        )
        return job


cluster_floor = FloorJobs(floor)
cluster_floor_lean = FloorJobs(floor_lean)
cluster_floor_one_tx = FloorJobs(floor_one_tx)
