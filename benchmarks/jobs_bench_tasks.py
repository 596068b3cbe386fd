"""Tasks of ``benchmarks/bench_jobs.py`` only: never imported by the app.

Workers load this module with ``celery -A config worker -I jobs_bench_tasks`` (``benchmarks/`` on
``PYTHONPATH``), so it registers nothing in a normal deployment. Both tasks do the same trivial work
(build and return a small dict); the difference is everything ``cluster_task`` adds around it.
"""

from __future__ import annotations

import hashlib
import uuid

from celery import shared_task

from cluster.jobs import canonical_json
from cluster.models import Job
from cluster.tasks import JobContext, cluster_task

CLUSTER_TASK_NAME = "bench_jobs.cluster_noop"
PLAIN_TASK_NAME = "bench_jobs.plain_noop"


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
