"""Jobs whose message was lost are sent again; late copies never reopen or re-run a finished job."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery.signals import before_task_publish
from django.utils import timezone

from cluster.jobs import jobs_resend_stalled
from cluster.models import Job
from cluster.tasks import _finish
from tests.cluster import tasks_for_tests as t

pytestmark = pytest.mark.django_db


@pytest.fixture
def published():
    seen = []

    def on_publish(sender=None, routing_key=None, headers=None, **kwargs):
        seen.append(headers["id"])

    before_task_publish.connect(on_publish, dispatch_uid="test-resend-published")
    yield seen
    before_task_publish.disconnect(dispatch_uid="test-resend-published")


def age(job_id: str, seconds: float) -> None:
    Job.objects.filter(pk=job_id).update(updated_at=timezone.now() - timedelta(seconds=seconds))


def test_a_waiting_job_without_progress_is_sent_again_with_its_dispatch(published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        stalled = t.plain.delay(name="lost").id
        fresh = t.plain.delay(name="fresh").id
    age(stalled, 600)
    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs_resend_stalled(older_than=timedelta(seconds=300)) == 1
    assert published == [stalled], "only the job without progress is sent, once"
    job = Job.objects.get(pk=stalled)
    assert (job.state, job.dispatch) == ("queued", 1), "a copy, not a new dispatch: the first message may be late"
    assert jobs_resend_stalled(older_than=timedelta(seconds=300)) == 0, "sent again only after another wait"
    assert Job.objects.get(pk=fresh).dispatch == 1


def test_running_and_finished_jobs_are_not_sent_again(published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        running = t.plain.delay(name="running").id
        done = t.plain.delay(name="done").id
    Job.objects.filter(pk=running).update(state="running")
    Job.objects.filter(pk=done).update(state="succeeded")
    age(running, 600)
    age(done, 600)
    published.clear()
    assert jobs_resend_stalled(older_than=timedelta(seconds=300)) == 0
    assert published == []


def test_a_late_copy_of_a_message_never_reopens_a_finished_job():
    job_id = t.record_op.delay(account="a", op_id="late-copy").id
    job = Job.objects.get(pk=job_id)
    t.record_op.celery_task.apply(args=(job_id, 1), kwargs={"kwargs": job.args}, task_id=job_id)
    job.refresh_from_db()
    assert job.state == "succeeded"
    _finish(job, 1, "retrying", error="IdempotencyInProgress from a second copy", finished=False)
    assert Job.objects.get(pk=job_id).state == "succeeded"


def test_a_lock_lost_before_the_commit_rolls_the_body_back_and_retries(monkeypatch):
    from locks import LockLost
    from locks.lease import Lease

    real = Lease.ensure_held
    calls = []

    def lose_the_first(lease):
        calls.append(lease.token)
        if len(calls) == 1:
            raise LockLost(lease.name, lease.token, "the lock store forgot it")
        return real(lease)

    monkeypatch.setattr(Lease, "ensure_held", lose_the_first)
    t.CALLS.clear()
    job_id = t.record_op.delay(account="a", op_id="lost-lock").id
    job = Job.objects.get(pk=job_id)
    t.record_op.celery_task.apply(args=(job_id, 1), kwargs={"kwargs": job.args}, task_id=job_id)
    job.refresh_from_db()
    assert len(t.CALLS) == 2, "the body ran again after the first run rolled back"
    assert job.state == "succeeded" and job.attempts == 2
    assert job.lock_token == calls[1] and calls[1] > calls[0], "the retry committed under a newer lock grant"
