"""Celery results of cluster_task jobs come from their Job rows (cluster/results.py), never stored twice."""

from __future__ import annotations

import pytest
from celery import states
from celery.app.trace import build_tracer

from cluster import JobFailed
from cluster.models import Job
from tests.cluster import tasks_for_tests as t

pytestmark = pytest.mark.django_db


def run_as_worker(task, job_id: str) -> None:
    """Run the job through the tracer a worker uses (eager=False: results are published)."""
    job = Job.objects.get(pk=job_id)
    celery_task = task.celery_task
    tracer = build_tracer(celery_task.name, celery_task, app=celery_task.app, eager=False, propagate=False)
    request = {"id": job_id, "hostname": "w1@host", "delivery_info": {"routing_key": "node.w1"}, "retries": 0}
    tracer(job_id, (job_id, 1), {"kwargs": job.args}, request)


def test_a_jobs_result_is_read_from_its_record_and_celerys_store_is_left_alone():
    t.CALLS.clear()
    result = t.record_op.delay(account="r", op_id="res-1", amount=3)
    assert result.state == states.PENDING and not result.ready(), "a queued job is pending"
    run_as_worker(t.record_op, result.id)
    stored = {"op_id": "res-1", "amount": 3, "token": t.CALLS[0]["token"]}
    assert result.get(timeout=5) == stored, "AsyncResult.get() answers from the job's row"
    assert t.record_op.celery_task.AsyncResult(result.id).state == states.SUCCESS
    app_backend = t.record_op.celery_task.app.backend
    assert app_backend.get_task_meta(result.id, cache=False)["status"] == states.PENDING, (
        "the worker wrote nothing to the app's result backend for a cluster_task job"
    )


def test_a_duplicate_job_returns_the_stored_result():
    t.CALLS.clear()
    first = t.record_op.delay(account="r", op_id="res-2", amount=4)
    second = t.record_op.delay(account="r", op_id="res-2", amount=4)
    run_as_worker(t.record_op, first.id)
    run_as_worker(t.record_op, second.id)
    assert Job.objects.get(pk=second.id).state == "duplicate"
    assert second.get(timeout=5) == first.get(timeout=5) and len(t.CALLS) == 1


def test_a_failed_job_raises_job_failed_with_its_error():
    result = t.explode.delay(op_id="res-3")
    run_as_worker(t.explode, result.id)
    assert result.state == states.FAILURE
    with pytest.raises(JobFailed, match="boom res-3"):
        result.get(timeout=5)


def test_an_unknown_or_malformed_id_is_pending():
    backend = t.record_op.celery_task.backend
    assert backend.get_task_meta("00000000-0000-0000-0000-000000000000")["status"] == states.PENDING
    assert backend.get_task_meta("not-a-uuid")["status"] == states.PENDING
