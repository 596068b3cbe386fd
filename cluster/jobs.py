"""Writes of job records: created at dispatch, moved when their node goes away, trimmed when old.

A job is published to its queue only after the transaction that created it commits. When a node
dies (or drains), its open jobs are handed to their new owners in the same transaction as the
membership change, each with a bumped ``dispatch`` number: a conditional update lets only one
re-dispatch win per job, and a message carrying an older number is dropped by the worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from idempotency.services import record_break_lease

from .models import OPEN_JOB_STATES, Job, JobState, Node, NodeState
from .ring import HashRing
from .routing import node_queue, route
from .signals import job_state_changed

logger = logging.getLogger(__name__)

# Arguments larger than this are kept only as a digest.
ARGS_SIZE_CAP = 16_384

# task name -> function(job_id, dispatch, queue, kwargs) that publishes a message; cluster_task fills it.
PUBLISHERS: dict[str, Callable[[str, int, str, dict[str, Any]], None]] = {}


def task_scope(task_name: str) -> str:
    """The idempotency scope of a cluster_task's keys."""
    return f"task:{task_name}"


def canonical_json(kwargs: dict[str, Any]) -> str:
    return json.dumps(kwargs, sort_keys=True, separators=(",", ":"))


@dataclass
class RunningJob:
    """What the worker knows of the job it runs (the fields ``announce`` and the steps read).

    Not a ``Job`` instance: building a model (its defaults, its init signals) cost a measurable
    share of a job's CPU, and every write of the run is a hand-written, fenced statement anyway.
    """

    id: uuid.UUID
    task_name: str
    owner_node: str
    state: str
    attempts: int
    ran_on: str

    @property
    def pk(self) -> uuid.UUID:
        return self.id


def announce(job: Job | RunningJob) -> None:
    payload = {
        "job_id": str(job.id),
        "task_name": job.task_name,
        "state": job.state,
        "owner_node": job.owner_node,
        "attempts": job.attempts,
    }
    transaction.on_commit(lambda: job_state_changed.send(sender=Job, **payload))


def job_create(
    *,
    task_name: str,
    kwargs: dict[str, Any],
    routing_key: str | None,
    lock_name: str = "",
    idempotency_key: str = "",
) -> tuple[Job, str]:
    """Record a job and schedule its message for after commit; returns the job and its queue."""
    encoded = canonical_json(kwargs)
    owner, queue = route(routing_key)
    job = Job.objects.create(
        id=uuid.uuid4(),
        task_name=task_name,
        args=kwargs if len(encoded) <= ARGS_SIZE_CAP else None,
        args_digest=hashlib.sha256(encoded.encode()).hexdigest(),
        routing_key=routing_key or "",
        lock_name=lock_name,
        idempotency_key=idempotency_key,
        owner_node=owner,
    )
    _publish_on_commit(job, queue, kwargs)
    announce(job)
    return job, queue


def _publish_on_commit(job: Job, queue: str, kwargs: dict[str, Any]) -> None:
    publisher = PUBLISHERS.get(job.task_name)
    if publisher is None:
        raise LookupError(f"no cluster_task named {job.task_name!r} is registered in this process")
    job_id, dispatch = str(job.id), job.dispatch
    transaction.on_commit(lambda: publisher(job_id, dispatch, queue, kwargs))


def jobs_hand_over(*, node: str, ring: HashRing, include_running: bool, reason: str) -> int:
    """Re-dispatch ``node``'s open jobs to their owners in ``ring``; call inside the membership change.

    Queued jobs always move; running ones only when the node is gone (dead, restarted), since a
    draining node finishes what it runs. Returns how many jobs this call moved.
    """
    states = [JobState.QUEUED, JobState.RETRYING, JobState.REQUEUED]
    if include_running:
        states.append(JobState.RUNNING)
    routable = frozenset(
        name
        for name, metadata in Node.objects.filter(state=NodeState.ACTIVE)
        .exclude(name=node)
        .values_list("name", "metadata")
        if isinstance(metadata, dict) and node_queue(name) in metadata.get("queues", ())
    )
    jobs = Job.objects.filter(owner_node=node, state__in=states).order_by("created_at")
    if connection.features.has_select_for_update_skip_locked:
        # A frozen worker can hold a job's row in a transaction it may never finish: waiting for it
        # would stall the conviction (and the sweeper) for as long as the worker sleeps. Such a job
        # is left behind here and moved by jobs_hand_over_orphans() once its row is free.
        jobs = jobs.select_for_update(skip_locked=True)
    moved = 0
    for job in jobs:
        if job.args is None:
            logger.error("job %s of %s cannot move: its arguments were over the size cap", job.id, node)
            continue
        owner, queue = route(job.routing_key or None, ring=ring, routable=routable)
        # Only one re-dispatch wins per job, however many sweepers or retries race here.
        won = Job.objects.filter(pk=job.pk, dispatch=job.dispatch, state__in=states).update(
            state=JobState.REQUEUED,
            owner_node=owner,
            dispatch=job.dispatch + 1,
            error=reason[:2000],
            updated_at=timezone.now(),  # update() leaves auto_now alone; jobs_resend_stalled reads it
        )
        if not won:
            continue
        if job.state == JobState.RUNNING and job.idempotency_key:
            # Its holder died with the node: let the new owner take the key over now, not after the lease.
            record_break_lease(scope=task_scope(job.task_name), key=job.idempotency_key)
        job.refresh_from_db()
        _publish_on_commit(job, queue, job.args)
        announce(job)
        moved += 1
    if moved:
        logger.warning("handed %s job(s) of node %s to new owners: %s", moved, node, reason)
    return moved


def jobs_hand_over_orphans(*, ring: HashRing) -> int:
    """Move the open jobs still owned by dead nodes; returns how many moved.

    A conviction skips the jobs whose rows a frozen worker held at that moment (``jobs_hand_over``);
    the sweeper calls this every few seconds to move them once the worker woke and let go.
    """
    dead = Node.objects.filter(state=NodeState.DEAD).values_list("name", flat=True)
    owners = set(
        Job.objects.filter(owner_node__in=list(dead), state__in=OPEN_JOB_STATES).values_list("owner_node", flat=True)
    )
    moved = 0
    for node in sorted(owners):
        with transaction.atomic():
            moved += jobs_hand_over(node=node, ring=ring, include_running=True, reason=f"node {node} is dead")
    return moved


# Open states in which a job waits for its message (none of them is running on a worker).
WAITING_STATES = (JobState.QUEUED, JobState.RETRYING, JobState.REQUEUED)


def jobs_resend_stalled(*, older_than: timedelta, limit: int = 500) -> int:
    """Publish again the message of every waiting job with no progress for ``older_than``; returns how many.

    The ``Job`` row is the record of what must run; the broker's message is only its delivery,
    and deliveries get lost: a Redis broker restarted without persistence forgets its queues, the
    unacked messages and the retries scheduled in them, and a publish that fails after its
    transaction committed never sends one. The sweeper calls this every few seconds. The copy keeps
    the job's dispatch number, so if the first message was only late, not lost, whichever copy
    arrives first runs and the other finds the job done (or its idempotency key taken): the effect
    still happens once, and a queue backlog longer than ``older_than`` cannot starve a job.
    """
    now = timezone.now()
    stalled = list(
        Job.objects.filter(state__in=WAITING_STATES, updated_at__lt=now - older_than, args__isnull=False)
        .order_by("updated_at")
        .only("id", "task_name", "routing_key", "args", "dispatch", "updated_at")[:limit]
    )
    sent = 0
    for job in stalled:
        with transaction.atomic():
            # Claimed by one sweeper pass only: the row must still be the one we read.
            won = Job.objects.filter(
                pk=job.pk, dispatch=job.dispatch, state__in=WAITING_STATES, updated_at=job.updated_at
            ).update(updated_at=now)
            if not won:
                continue
            _owner, queue = route(job.routing_key or None)
            _publish_on_commit(job, queue, job.args)
        sent += 1
    if sent:
        logger.warning(
            "sent %s job(s) again after %gs without progress (lost messages?)", sent, older_than.total_seconds()
        )
    return sent


def job_retry(*, job: Job, actor: str) -> Job:
    """Run a failed job again (admin and dashboard action), as a new dispatch."""
    if job.state != JobState.FAILED:
        raise ValueError(f"only failed jobs can be retried; job {job.id} is {job.state}")
    return _redispatch(job, actor=actor, allowed=(JobState.FAILED,))


def job_requeue(*, job: Job, actor: str) -> Job:
    """Send a job stuck on a node that is not active to its key's current owner."""
    if job.state not in OPEN_JOB_STATES:
        raise ValueError(f"only open jobs can be requeued; job {job.id} is {job.state}")
    return _redispatch(job, actor=actor, allowed=tuple(OPEN_JOB_STATES))


def _redispatch(job: Job, *, actor: str, allowed: tuple[str, ...]) -> Job:
    if job.args is None:
        raise ValueError(f"job {job.id} kept no arguments (over the size cap): it cannot be sent again")
    with transaction.atomic():
        owner, queue = route(job.routing_key or None)
        won = Job.objects.filter(pk=job.pk, dispatch=job.dispatch, state__in=allowed).update(
            state=JobState.REQUEUED,
            owner_node=owner,
            dispatch=job.dispatch + 1,
            error=f"sent again by {actor}",
            updated_at=timezone.now(),
        )
        if not won:
            raise ValueError(f"job {job.id} changed meanwhile; reload and try again")
        job.refresh_from_db()
        _publish_on_commit(job, queue, job.args)
        announce(job)
    return job


def jobs_trim(*, older_than: timedelta, batch_size: int = 1000) -> int:
    """Delete finished jobs older than ``older_than``, in batches; returns how many went."""
    cutoff = timezone.now() - older_than
    finished = [s for s in JobState.values if s not in OPEN_JOB_STATES]
    deleted = 0
    while True:
        ids = list(
            Job.objects.filter(created_at__lt=cutoff, state__in=finished).values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        deleted += Job.objects.filter(pk__in=ids).delete()[0]
