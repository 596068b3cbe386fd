"""Statements sent together, and a job's start and idempotency claim sharing one round trip.

These run with real transactions (``transaction=True``): a worker runs a job in autocommit, which
is when the start and the claim go to PostgreSQL together (inside a test's transaction they go
one by one, as on SQLite). The last tests move a job, or take its key over, from another
connection while its body runs, as the sweeper or another worker would: the body rolls back.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection, connections, transaction
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from cluster.models import Job
from cluster.statements import can_batch, execute_together
from idempotency.models import IdempotencyRecord
from tests.cluster import tasks_for_tests as t

pytestmark = pytest.mark.django_db(transaction=True)


def job_ids(n: int) -> list[str]:
    return [str(Job.objects.create(id=uuid.uuid4(), task_name="t", owner_node="n").pk) for _ in range(n)]


def update_error(job_id: str, error: str) -> tuple[str, list]:
    return 'UPDATE "cluster_job" SET "error" = %s WHERE "id" = %s', [error, uuid.UUID(job_id).hex]


def test_statements_run_in_order_and_report_each_row_count_and_rows():
    first, second = job_ids(2)
    results = execute_together(
        "default",
        [
            update_error(first, "one"),
            update_error("00000000-0000-0000-0000-000000000000", "nobody"),
            ('SELECT "error" FROM "cluster_job" WHERE "error" <> %s ORDER BY "error"', [""]),
            update_error(second, "two"),
        ],
    )
    assert [r.rowcount for r in results][:2] == [1, 0]
    assert results[2].rows == [("one",)], "the third statement sees the first one's write, not the fourth's"
    assert results[2].columns == ["error"]
    assert results[3].rowcount == 1
    assert dict(Job.objects.values_list("pk", "error")) == {uuid.UUID(first): "one", uuid.UUID(second): "two"}


def test_a_failing_statement_raises_and_inside_a_transaction_nothing_is_written():
    first, _ = job_ids(2)
    with pytest.raises(DatabaseError), transaction.atomic():
        execute_together("default", [update_error(first, "written?"), ('SELECT * FROM "no_such_table"', [])])
    assert Job.objects.get(pk=first).error == "", "the transaction rolled the first statement back"


def test_a_broken_transaction_is_refused_as_django_refuses_any_query():
    (first,) = job_ids(1)
    with pytest.raises(TransactionManagementError), transaction.atomic():
        try:
            with transaction.atomic(savepoint=False):
                execute_together("default", [('SELECT * FROM "no_such_table"', [])])
        except DatabaseError:
            pass  # swallowed inside the outer block: the transaction is now unusable
        execute_together("default", [update_error(first, "after the error")])
    assert Job.objects.get(pk=first).error == ""


def test_without_the_query_log_statements_run_the_same_and_are_not_logged():
    (first,) = job_ids(1)
    assert not connection.queries_logged
    logged_before = len(connection.queries_log)
    results = execute_together("default", [update_error(first, "fast"), ('SELECT "error" FROM "cluster_job"', [])])
    assert results[0].rowcount == 1 and ("fast",) in results[1].rows
    assert len(connection.queries_log) == logged_before, "the fast path logs nothing"
    with CaptureQueriesContext(connection) as captured:
        execute_together("default", [update_error(first, "logged")])
    assert len(captured.captured_queries) == 1 and "logged" in captured.captured_queries[0]["sql"]


@pytest.mark.services
def test_on_postgresql_they_are_one_query_and_set_local_stays_inside_it():
    assert can_batch("default")
    (first,) = job_ids(1)
    with CaptureQueriesContext(connection) as captured:
        results = execute_together(
            "default",
            [("SET LOCAL synchronous_commit TO off", []), ("SHOW synchronous_commit", []), update_error(first, "x")],
        )
    assert len(captured.captured_queries) == 1, "three statements, one round trip"
    assert results[1].rows == [("off",)]
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("on",), "SET LOCAL ended with the statements' own transaction"
    assert Job.objects.get(pk=first).error == "x", "committed"


def run(job_id: str, dispatch: int = 1):
    job = Job.objects.get(pk=job_id)
    return t.record_op.celery_task.apply(args=(job_id, dispatch), kwargs={"kwargs": job.args}, task_id=job_id)


def test_a_job_starts_and_claims_its_key_then_a_duplicate_replays():
    t.CALLS.clear()
    first = t.record_op.delay(account="a", op_id="st-1", amount=5).id
    second = t.record_op.delay(account="a", op_id="st-1", amount=5).id
    with CaptureQueriesContext(connection) as captured:
        stored = run(first).get()
    assert stored == {"op_id": "st-1", "amount": 5, "token": t.CALLS[0]["token"]}
    assert run(second).get() == stored and len(t.CALLS) == 1
    states = dict(Job.objects.values_list("pk", "state"))
    assert states == {uuid.UUID(first): "succeeded", uuid.UUID(second): "duplicate"}
    record = IdempotencyRecord.objects.get(key="op:st-1")
    assert record.state == "completed" and record.result == stored
    if connection.vendor == "postgresql":
        start = [q["sql"] for q in captured.captured_queries if "cluster_job" in q["sql"] and "running" in q["sql"]]
        assert len(start) == 1 and "idempotency_idempotencyrecord" in start[0], "start and claim: one round trip"


def test_a_stale_copy_leaves_no_claim_behind_and_runs_nothing():
    t.CALLS.clear()
    job_id = t.record_op.delay(account="a", op_id="st-2").id
    Job.objects.filter(pk=job_id).update(dispatch=2)  # the job was re-dispatched elsewhere meanwhile
    assert run(job_id, dispatch=1).get() is None
    assert t.CALLS == [] and Job.objects.get(pk=job_id).state == "queued"
    assert not IdempotencyRecord.objects.filter(key="op:st-2").exists(), "the stale copy's claim was given back"
    assert run(job_id, dispatch=2).get()["op_id"] == "st-2", "the current dispatch runs, claiming the key afresh"
    assert len(t.CALLS) == 1


def test_a_stale_copy_never_touches_a_claim_held_by_the_running_attempt():
    t.CALLS.clear()
    job_id = t.record_op.delay(account="a", op_id="st-3").id
    assert run(job_id).get()["op_id"] == "st-3"
    before = IdempotencyRecord.objects.get(key="op:st-3")
    assert run(job_id).get() is None, "a redelivered copy of a finished job does not run"
    after = IdempotencyRecord.objects.get(key="op:st-3")
    assert (after.state, after.fencing_token, after.result) == (before.state, before.fencing_token, before.result)
    assert len(t.CALLS) == 1


@pytest.fixture
def hooks():
    """``hooked``'s hooks for one test, emptied afterwards even when the test fails."""
    yield t.HOOKS
    t.HOOKS.clear()


def run_hooked(name: str, *, write: bool):
    """Run ``hooked`` as a worker does: in autocommit, so its body's transaction is its own."""
    job_id = t.hooked.delay(name=name, write=write).id
    result = t.hooked.celery_task.apply(args=(job_id, 1), kwargs={"kwargs": {"name": name, "write": write}})
    return job_id, result


def elsewhere(sql: str, params: list) -> None:
    """Run ``sql`` on a connection of its own, committed at once: another worker or the sweeper."""

    def target():
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute(sql, params)
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()


@pytest.mark.services
@pytest.mark.parametrize("write", [False, True])
def test_a_body_whose_job_moved_elsewhere_meanwhile_rolls_back(write, caplog, hooks):
    hooks[:] = [lambda ctx: elsewhere('UPDATE "cluster_job" SET "dispatch" = 2 WHERE "id" = %s', [ctx.job_id])]
    job_id, result = run_hooked(f"moved-{write}", write=write)
    assert result.get() is None
    assert not Group.objects.filter(name=f"moved-{write}").exists(), "the body's write rolled back"
    job = Job.objects.get(pk=job_id)
    assert (job.state, job.dispatch) == ("running", 2), "the success was not recorded"
    assert not IdempotencyRecord.objects.filter(key=f"h:moved-{write}").exists(), "the key was given back"
    assert "was taken over while it ran here" in caplog.text


@pytest.mark.services
@pytest.mark.parametrize("write", [False, True])
def test_a_body_whose_key_was_taken_over_meanwhile_rolls_back(write, caplog, hooks):
    key = f"h:taken-{write}"
    hooks[:] = [
        lambda ctx: elsewhere(
            'UPDATE "idempotency_idempotencyrecord" SET "fencing_token" = "fencing_token" + 1 WHERE "key" = %s', [key]
        )
    ]
    job_id, result = run_hooked(f"taken-{write}", write=write)
    assert result.get() is None
    assert not Group.objects.filter(name=f"taken-{write}").exists(), "the body's write rolled back"
    assert Job.objects.get(pk=job_id).state == "running", "the success was not recorded"
    record = IdempotencyRecord.objects.get(key=key)
    assert (record.state, record.fencing_token) == ("in_progress", 2), "the successor's claim is untouched"
    assert "stale completion rejected" in caplog.text
