"""Celery results of ``cluster_task`` jobs, read from their ``Job`` rows.

A job's run already commits its state and result to its ``Job`` row (with its idempotency
record, in one transaction), so storing them again in Celery's result backend would be a second,
weaker copy: Celery's Redis backend reads and writes Redis for every task (a check that a later
copy never overwrites a success, then the write and its notification), about a quarter of a
millisecond of the worker's CPU per job. ``JobResults`` stores nothing and answers
``AsyncResult(job_id).state`` / ``.get()`` from the row, so ``transfer.delay(...).get()`` works
as with any Celery task, on every broker and in the embedded default.
"""

from __future__ import annotations

import uuid
import weakref
from typing import Any

from celery import Celery, Task, states
from celery.backends.base import BaseBackend

from .models import Job, JobState

# Job states as Celery's: a job that ended as a duplicate succeeded (it returns the stored result).
CELERY_STATES = {
    JobState.QUEUED: states.PENDING,
    JobState.REQUEUED: states.PENDING,
    JobState.RUNNING: states.STARTED,
    JobState.RETRYING: states.RETRY,
    JobState.SUCCEEDED: states.SUCCESS,
    JobState.DUPLICATE: states.SUCCESS,
    JobState.FAILED: states.FAILURE,
}


class JobResults(BaseBackend):
    """A read-only Celery result backend over the ``Job`` table."""

    def store_result(self, task_id: str, result: Any, state: str, traceback: Any = None, request: Any = None, **kw):
        return result  # the run wrote its Job row already

    def _forget(self, task_id: str) -> None:
        pass  # a job's record is trimmed by the reaper (cluster.trim_jobs), not by its result

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        try:
            pk = uuid.UUID(str(task_id))
        except ValueError:
            pk = None
        row = None
        if pk is not None:
            row = Job.objects.filter(pk=pk).values("state", "result", "error", "finished_at").first()
        meta = {"task_id": task_id, "status": states.PENDING, "result": None, "traceback": None, "children": None}
        if row is None:
            return {**meta, "date_done": None}
        status = CELERY_STATES.get(row["state"], states.PENDING)
        result = row["result"]
        if status == states.FAILURE:
            result = {"exc_type": "JobFailed", "exc_message": [row["error"]], "exc_module": "cluster.exceptions"}
        return {**meta, "status": status, "result": result, "date_done": row["finished_at"]}

    def as_uri(self, *args: Any, **kwargs: Any) -> str:
        return "cluster-jobs://"


_backends: weakref.WeakKeyDictionary[Celery, JobResults] = weakref.WeakKeyDictionary()


def job_results(app: Celery) -> JobResults:
    """The app's ``JobResults`` (one per Celery app)."""
    backend = _backends.get(app)
    if backend is None:
        backend = _backends[app] = JobResults(app)
    return backend


class _AppJobResults:
    """``Task._backend`` of a ``JobTask``: its app's ``JobResults`` unless one was set explicitly."""

    def __get__(self, task: Task | None, owner: type) -> Any:
        return self if task is None else job_results(task.app)


class JobTask(Task):
    """The Celery task class of every ``cluster_task``: its results are its Job rows."""

    _backend = _AppJobResults()
