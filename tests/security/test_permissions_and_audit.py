"""Operator actions need their own permission (not just staff, not just "change"), and each is audited."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.urls import reverse

from cluster import services
from cluster.models import Job, Node
from cluster.signals import action_performed
from monitoring.models import AuditEntry
from tests.cluster.factories import active_node

pytestmark = pytest.mark.django_db

NODES = reverse("admin:cluster_node_changelist")
JOBS = reverse("admin:cluster_job_changelist")


@pytest.fixture
def operator(client, django_user_model):
    """A staff user logged in with exactly the permissions a test gives it."""

    def make(*codenames: str):
        user = django_user_model.objects.create_user(username="ops", password="pw-ops-12345", is_staff=True)
        user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
        client.force_login(user)
        return user

    return make


def offered_actions(client, url) -> set[str]:
    response = client.get(url)
    assert response.status_code == 200, "the change list is visible with the view permission"
    form = response.context["action_form"]
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


def audit_rows() -> list[tuple]:
    return list(AuditEntry.objects.order_by("id").values_list("actor", "action", "target", "source"))


# --- nodes ------------------------------------------------------------------------------------


def test_change_node_is_not_enough_to_drain(client, operator):
    operator("view_node", "change_node")
    node = active_node("n1")
    assert offered_actions(client, NODES) == set(), "no node action is offered without its own permission"
    client.post(NODES, {"action": "drain_nodes", ACTION_CHECKBOX_NAME: [node.pk], "confirm": "yes"})
    assert Node.objects.get(pk=node.pk).state == "active", "a forged POST of the action does nothing"
    assert audit_rows() == []


@pytest.mark.parametrize(
    "action, permission, start_active, end_state",
    [
        ("drain", "drain_node", True, "draining"),
        ("activate", "activate_node", False, "active"),
        ("remove", "remove_node", True, "left"),
    ],
)
def test_each_node_action_needs_its_permission_and_is_audited(
    client, operator, action, permission, start_active, end_state
):
    user = operator("view_node", permission)
    node = active_node("n1") if start_active else services.node_join(name="n1", actor="t")[0]
    assert offered_actions(client, NODES) == {f"{action}_nodes"}, "only the permitted action is offered"
    response = client.post(NODES, {"action": f"{action}_nodes", ACTION_CHECKBOX_NAME: [node.pk], "confirm": "yes"})
    assert response.status_code == 302
    assert Node.objects.get(pk=node.pk).state == end_state
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.target, entry.source) == ("ops", f"node.{action}", "n1", "admin")
    assert entry.user == user and end_state in entry.detail


def test_a_failed_audit_write_rolls_the_action_back(client, operator):
    operator("view_node", "drain_node")
    node = active_node("n1")

    def broken_audit(**kwargs):
        raise RuntimeError("audit store down")

    action_performed.connect(broken_audit, dispatch_uid="test-broken-audit")
    try:
        with pytest.raises(RuntimeError, match="audit store down"):
            client.post(NODES, {"action": "drain_nodes", ACTION_CHECKBOX_NAME: [node.pk], "confirm": "yes"})
    finally:
        action_performed.disconnect(dispatch_uid="test-broken-audit")
    assert Node.objects.get(pk=node.pk).state == "active", "no action without its audit entry"
    assert audit_rows() == []


# --- jobs -------------------------------------------------------------------------------------


def failed_job() -> str:
    from tests.cluster import tasks_for_tests as t

    job_id = t.explode.delay(op_id="sec").id
    t.explode.celery_task.apply(args=(job_id, 1), kwargs={"kwargs": {"op_id": "sec"}}, task_id=job_id)
    assert Job.objects.get(pk=job_id).state == "failed"
    return job_id


def queued_job() -> str:
    from tests.cluster import tasks_for_tests as t

    return t.plain.delay(name="sec").id


def test_change_job_is_not_enough_to_retry_or_requeue(client, operator):
    operator("view_job", "change_job")
    job_id = failed_job()
    assert offered_actions(client, JOBS) == set()
    client.post(JOBS, {"action": "retry_jobs", ACTION_CHECKBOX_NAME: [job_id]})
    assert Job.objects.get(pk=job_id).state == "failed"


@pytest.mark.parametrize(
    "action, permission, make_job", [("retry", "retry_job", failed_job), ("requeue", "requeue_job", queued_job)]
)
def test_job_actions_need_their_permission_and_are_audited(client, operator, action, permission, make_job):
    operator("view_job", permission)
    job_id = str(make_job())
    assert offered_actions(client, JOBS) == {f"{action}_jobs"}
    response = client.post(JOBS, {"action": f"{action}_jobs", ACTION_CHECKBOX_NAME: [job_id]}, follow=True)
    assert "1 job(s) sent again" in response.content.decode()
    job = Job.objects.get(pk=job_id)
    assert job.state == "requeued" and job.dispatch == 2
    assert audit_rows() == [("ops", f"job.{action}", job_id, "admin")]


# --- locks ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_force_release_in_the_admin_is_audited(client, operator):
    from locks import get_backend
    from locks.admin import selection_value
    from locks.models import LockAudit

    lease = get_backend("default").acquire("sec:stuck", ttl=60)
    operator("view_locklease", "force_release_locklease")
    value = selection_value("default", lease.token, lease.name)
    response = client.post(reverse("admin:locks_locklease_force_release"), {"lock": value, "confirm": "yes"})
    assert response.status_code == 302
    assert get_backend("default").held() == []
    assert audit_rows() == [("ops", "lock.force_release", "default:sec:stuck", "admin")]
    assert AuditEntry.objects.get().detail == f"token {lease.token}"
    assert LockAudit.objects.count() == 1, "the lock app keeps its own record too"


# --- the audit log in the admin ---------------------------------------------------------------


def test_the_audit_log_is_read_only_with_filters_and_search(admin_client_, superuser):
    from monitoring.audit import audit_record

    entry = audit_record(action="node.drain", target="n1", actor=superuser, source="admin", detail="x")
    audit_record(action="job.retry", target="j-1", actor="someone", source="dashboard")
    url = reverse("admin:monitoring_auditentry_changelist")
    page = admin_client_.get(url)
    assert page.status_code == 200
    assert "node.drain" in page.content.decode() and "job.retry" in page.content.decode()
    searched = admin_client_.get(url, {"q": "someone"}).content.decode()
    assert "j-1" in searched and ">n1<" not in searched
    filtered = admin_client_.get(url, {"action": "node.drain"}).content.decode()
    assert ">n1<" in filtered and "j-1" not in filtered
    assert admin_client_.get(reverse("admin:monitoring_auditentry_add")).status_code == 403
    detail = admin_client_.get(reverse("admin:monitoring_auditentry_change", args=[entry.pk]))
    assert detail.status_code == 200 and b'name="_save"' not in detail.content, "entries are view-only"
    assert admin_client_.post(reverse("admin:monitoring_auditentry_delete", args=[entry.pk])).status_code == 403
    assert AuditEntry.objects.count() == 2


def test_the_audit_log_needs_its_view_permission(client, operator):
    operator("view_node")
    assert client.get(reverse("admin:monitoring_auditentry_changelist")).status_code == 403
