"""cluster_task: options, argument checks, enqueue on commit, routing, and runs of the real task."""

from __future__ import annotations

import pytest
from celery.signals import before_task_publish
from django.db import transaction

from cluster import services
from cluster.models import Job
from cluster.routing import SHARED_QUEUE, node_queue
from cluster.tasks import cluster_task
from idempotency.models import IdempotencyRecord
from tests.cluster import tasks_for_tests as t

pytestmark = pytest.mark.django_db


@pytest.fixture
def published():
    """Messages really published through Celery's publish path: (task name, routing key, job id)."""
    seen = []

    def on_publish(sender=None, routing_key=None, headers=None, **kwargs):
        seen.append((sender, routing_key, headers["id"]))

    before_task_publish.connect(on_publish, dispatch_uid="test-published")
    yield seen
    before_task_publish.disconnect(dispatch_uid="test-published")


def worker_node(name: str, *, zone: str = "") -> None:
    node, _ = services.node_join(name=name, zone=zone, metadata={"queues": [node_queue(name), SHARED_QUEUE]})
    services.node_activate(node=node)


def run(job_id: str, dispatch: int = 1):
    """Run the job's task in this process through Celery's own task machinery."""
    job = Job.objects.get(pk=job_id)
    task = {"record_op": t.record_op, "explode": t.explode, "plain": t.plain}[job.task_name.rsplit(".", 1)[-1]]
    return task.celery_task.apply(args=(job_id, dispatch), kwargs={"kwargs": job.args}, task_id=job_id)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"lock_ttl": 0}, "lock_ttl"),
        ({"lock_ttl": "5"}, "lock_ttl"),
        ({"max_retries": -1}, "max_retries"),
        ({"key": ""}, "key"),
        ({"lock": 5}, "lock"),
        ({"lock_timeout": -1}, "lock_timeout"),
    ],
)
def test_bad_options_are_refused_at_decoration(options, message):
    with pytest.raises(ValueError, match=message):
        cluster_task(**options)


def test_template_naming_an_unknown_argument_is_refused_at_decoration():
    with pytest.raises(ValueError, match="unknown"):

        @cluster_task(key="acct:{acount}")
        def typo(ctx, *, account: str) -> None: ...


def test_arguments_are_checked_at_delay(published):
    with pytest.raises(TypeError, match="keyword-only"):
        t.record_op.delay("a", "op")
    with pytest.raises(TypeError, match="missing arguments \\['op_id'\\]"):
        t.record_op.delay(account="a")
    with pytest.raises(TypeError, match="unexpected"):
        t.record_op.delay(account="a", op_id="1", colour="red")
    with pytest.raises(TypeError, match="'amount' is not JSON-serialisable"):
        t.record_op.delay(account="a", op_id="1", amount=object())
    assert Job.objects.count() == 0 and published == [], "a refused call records and sends nothing"


def test_on_commit_and_rollback(published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job_id = t.plain.delay(name="x").id
        assert published == [], "nothing is sent while the caller's transaction is open"
    assert [p[2] for p in published] == [job_id]
    assert Job.objects.filter(pk=job_id, state="queued").exists()
    published.clear()
    with pytest.raises(RuntimeError):
        with django_capture_on_commit_callbacks(execute=True):
            with transaction.atomic():
                t.plain.delay(name="y")
                raise RuntimeError("the caller's transaction rolls back")
    assert published == [], "a rolled-back enqueue never reaches the broker"
    assert not Job.objects.filter(args__name="y").exists()


def test_routed_to_the_owners_queue_and_past_a_suspect_owner(published, django_capture_on_commit_callbacks):
    from cluster.selectors import current_ring

    for name in ("n1", "n2", "n3"):
        worker_node(name)
    key = "k:alpha"
    preference = list(current_ring().preference(key))
    with django_capture_on_commit_callbacks(execute=True):
        job_id = t.plain.delay(name="alpha").id
    assert Job.objects.get(pk=job_id).owner_node == preference[0]
    assert published[-1][1] == node_queue(preference[0])
    services.node_mark_suspect(node=preference[0])
    from cluster import routing

    routing.routable_nodes(fresh=True)
    with django_capture_on_commit_callbacks(execute=True):
        job_id = t.plain.delay(name="alpha", suffix="!").id
    assert Job.objects.get(pk=job_id).owner_node == preference[1], "a suspect owner gets no new work"
    assert published[-1][1] == node_queue(preference[1])


def test_without_worker_nodes_jobs_go_to_the_shared_queue(published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job_id = t.plain.delay(name="x").id
    assert published[-1][1] == SHARED_QUEUE
    assert Job.objects.get(pk=job_id).owner_node == ""


def test_a_job_runs_once_and_a_duplicate_returns_the_stored_result(django_capture_on_commit_callbacks):
    t.CALLS.clear()
    first = t.record_op.delay(account="a", op_id="op-1", amount=5).id
    second = t.record_op.delay(account="a", op_id="op-1", amount=5).id
    stored = run(first).get()
    assert stored == {"op_id": "op-1", "amount": 5, "token": t.CALLS[0]["token"]}
    assert run(second).get() == stored, "the duplicate returns the stored result"
    assert len(t.CALLS) == 1, "the body ran once for two jobs with one idempotency key"
    jobs = {j.pk.hex: j for j in Job.objects.all()}
    assert {j.state for j in jobs.values()} == {"succeeded", "duplicate"}
    done = Job.objects.get(pk=first)
    assert done.attempts == 1 and done.lock_token == t.CALLS[0]["token"] and done.lock_token is not None
    assert IdempotencyRecord.objects.get(key="op:op-1").state == "completed"


def test_a_redelivered_finished_job_is_not_run_again():
    t.CALLS.clear()
    job_id = t.record_op.delay(account="a", op_id="op-2").id
    run(job_id)
    run(job_id)
    assert len(t.CALLS) == 1


def test_a_stale_dispatch_is_dropped():
    t.CALLS.clear()
    job_id = t.record_op.delay(account="a", op_id="op-3").id
    Job.objects.filter(pk=job_id).update(dispatch=2)  # the job was re-dispatched elsewhere meanwhile
    assert run(job_id, dispatch=1).get() is None
    assert t.CALLS == [] and Job.objects.get(pk=job_id).state == "queued"


def test_failure_fails_the_job_and_releases_the_key():
    job_id = t.explode.delay(op_id="x").id
    result = run(job_id)
    assert result.failed()
    job = Job.objects.get(pk=job_id)
    assert job.state == "failed" and "boom x" in job.error
    record = IdempotencyRecord.objects.filter(key="boom:x").first()
    assert record is None or record.state != "completed", "a failed attempt leaves the key free to retry"


def test_mismatched_arguments_for_one_key_fail():
    run(t.record_op.delay(account="a", op_id="op-4", amount=1).id)
    job_id = t.record_op.delay(account="a", op_id="op-4", amount=2).id
    assert run(job_id).failed()
    assert "IdempotencyKeyMismatch" in Job.objects.get(pk=job_id).error


def test_missing_template_field_at_call_time_is_a_clear_error():
    @cluster_task(key=lambda **kw: kw["shard"])
    def needs_shard(ctx, *, shard: str = "") -> None: ...

    with pytest.raises(ValueError, match="needs 'shard'"):
        needs_shard.delay()


def test_a_dead_nodes_jobs_move_once_to_the_new_owners(published, django_capture_on_commit_callbacks):
    from cluster.jobs import jobs_hand_over
    from cluster.selectors import current_ring

    for name in ("n1", "n2", "n3"):
        worker_node(name)
    with django_capture_on_commit_callbacks(execute=True):
        ids = [t.plain.delay(name=f"item-{i}").id for i in range(30)]
    on_n1 = [i for i in ids if Job.objects.get(pk=i).owner_node == "n1"]
    assert on_n1, "some keys are owned by n1"
    Job.objects.filter(pk=on_n1[0]).update(state="running")
    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.node_mark_suspect(node="n1")
        services.node_mark_dead(node="n1")
    moved = Job.objects.filter(pk__in=on_n1)
    assert all(j.state == "requeued" and j.dispatch == 2 and j.owner_node in ("n2", "n3") for j in moved)
    assert sorted(p[2] for p in published) == sorted(on_n1), "each moved job is published once"
    assert all(p[1] != node_queue("n1") for p in published)
    # A second sweeper (or a retry) handing over the same node moves nothing more.
    assert jobs_hand_over(node="n1", ring=current_ring(), include_running=True, reason="again") == 0


def test_a_draining_node_keeps_its_running_jobs(django_capture_on_commit_callbacks):
    for name in ("n1", "n2"):
        worker_node(name)
    with django_capture_on_commit_callbacks(execute=True):
        ids = [t.plain.delay(name=f"item-{i}").id for i in range(20)]
    mine = list(Job.objects.filter(pk__in=ids, owner_node="n1"))
    Job.objects.filter(pk=mine[0].pk).update(state="running")
    with django_capture_on_commit_callbacks(execute=True):
        services.node_drain(node="n1")
    assert Job.objects.get(pk=mine[0].pk).state == "running", "a draining node finishes what it runs"
    assert all(j.owner_node == "n2" for j in Job.objects.filter(pk__in=[j.pk for j in mine[1:]]))


def test_retry_and_requeue_actions(django_capture_on_commit_callbacks):
    from cluster.jobs import job_requeue, job_retry

    job_id = t.explode.delay(op_id="r").id
    run(job_id)
    job = Job.objects.get(pk=job_id)
    with django_capture_on_commit_callbacks(execute=True):
        job_retry(job=job, actor="alice")
    job.refresh_from_db()
    assert (job.state, job.dispatch) == ("requeued", 2)
    with pytest.raises(ValueError, match="only failed"):
        job_retry(job=job, actor="alice")
    with django_capture_on_commit_callbacks(execute=True):
        job_requeue(job=job, actor="alice")
    job.refresh_from_db()
    assert job.dispatch == 3


def test_trim_deletes_only_old_finished_jobs():
    from datetime import timedelta

    from django.utils import timezone

    from cluster.jobs import jobs_trim

    old_done = t.plain.delay(name="a").id
    old_open = t.plain.delay(name="b").id
    fresh_done = t.plain.delay(name="c").id
    Job.objects.filter(pk__in=[old_done, fresh_done]).update(state="succeeded")
    Job.objects.filter(pk__in=[old_done, old_open]).update(created_at=timezone.now() - timedelta(days=30))
    assert jobs_trim(older_than=timedelta(days=7)) == 1
    assert set(Job.objects.values_list("pk", flat=True)) == {
        Job.objects.get(pk=old_open).pk,
        Job.objects.get(pk=fresh_done).pk,
    }


def test_a_dead_nodes_running_job_frees_its_idempotency_claim(django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from idempotency import services as idem

    for name in ("n1", "n2"):
        worker_node(name)
    with django_capture_on_commit_callbacks(execute=True):
        ids = [t.record_op.delay(account=f"acct-{i}", op_id=f"run-{i}").id for i in range(10)]
    job = Job.objects.filter(pk__in=ids, owner_node="n1").first()
    Job.objects.filter(pk=job.pk).update(state="running")
    claim = idem.record_claim(
        scope=f"task:{job.task_name}", key=job.idempotency_key, fingerprint="f", ttl=timedelta(days=1), lease_seconds=30
    )
    assert claim.outcome == idem.CLAIMED
    with django_capture_on_commit_callbacks(execute=True):
        services.node_mark_suspect(node="n1")
        services.node_mark_dead(node="n1")
    record = IdempotencyRecord.objects.get(pk=claim.record.pk)
    assert record.state == "in_progress" and record.locked_until <= timezone.now(), (
        "the dead holder's claim can be taken over at once"
    )


@pytest.mark.services  # SKIP LOCKED: PostgreSQL (SQLite has one writer at a time anyway)
@pytest.mark.django_db(transaction=True)
def test_a_job_row_held_by_a_frozen_worker_does_not_stall_the_conviction():
    import threading
    import time

    from django.db import connections

    from cluster.jobs import jobs_hand_over_orphans
    from cluster.selectors import current_ring

    for name in ("n1", "n2", "n3"):
        worker_node(name)
    ids = [t.plain.delay(name=f"item-{i}").id for i in range(30)]
    on_n1 = [i for i in ids if Job.objects.get(pk=i).owner_node == "n1"]
    assert len(on_n1) >= 2, "some keys are owned by n1"
    held, rest = on_n1[0], on_n1[1:]
    Job.objects.filter(pk=held).update(state="running")
    locked, wake = threading.Event(), threading.Event()

    def frozen_worker() -> None:
        # A worker frozen in the middle of its commit: the job's row locked by a transaction that does not end.
        try:
            with transaction.atomic():
                Job.objects.select_for_update().get(pk=held)
                locked.set()
                wake.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=frozen_worker)
    thread.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        services.node_mark_suspect(node="n1")
        services.node_mark_dead(node="n1")
        assert time.monotonic() - started < 5, "the conviction waited for the frozen worker's row"
        assert all(Job.objects.get(pk=i).state == "requeued" for i in rest), "the other jobs moved at once"
        assert Job.objects.get(pk=held).owner_node == "n1", "the held job is left behind for now"
        assert jobs_hand_over_orphans(ring=current_ring()) == 0, "still held: skipped again, without waiting"
    finally:
        wake.set()
        thread.join()
    assert jobs_hand_over_orphans(ring=current_ring()) == 1
    job = Job.objects.get(pk=held)
    assert (job.state, job.dispatch) == ("requeued", 2) and job.owner_node in ("n2", "n3")
