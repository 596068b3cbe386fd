"""The cluster admin: node list, rebalance preview before actions, events, key lookup."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from cluster.models import MembershipEvent, Node
from cluster.selectors import current_ring
from tests.cluster.factories import active_node

pytestmark = pytest.mark.django_db


@pytest.fixture
def three_nodes():
    return [active_node(n) for n in ("a", "b", "c")]


def test_admin_needs_a_staff_login(client):
    response = client.get(reverse("admin:cluster_node_changelist"))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_node_list_shows_state_share_and_heartbeat(admin_client_, three_nodes):
    response = admin_client_.get(reverse("admin:cluster_node_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "33.33%" in html, "each of three equal nodes owns a third of the key space"
    assert "never" in html and "active" in html
    assert reverse("admin:cluster_node_lookup") in html


def test_drain_shows_the_plan_then_applies_on_confirm(admin_client_, three_nodes):
    url = reverse("admin:cluster_node_changelist")
    b = Node.objects.get(name="b")
    preview = admin_client_.post(url, {"action": "drain_nodes", ACTION_CHECKBOX_NAME: [b.pk]})
    assert preview.status_code == 200
    html = preview.content.decode()
    assert "Rebalance plan" in html and "33.33%" in html
    assert Node.objects.get(name="b").state == "active", "the preview changes nothing"
    done = admin_client_.post(url, {"action": "drain_nodes", ACTION_CHECKBOX_NAME: [b.pk], "confirm": "yes"})
    assert done.status_code == 302
    assert Node.objects.get(name="b").state == "draining"
    assert current_ring().nodes == ("a", "c")
    event = MembershipEvent.objects.latest("id")
    assert event.actor == "root" and event.to_state == "draining"


def test_illegal_action_reports_an_error_and_changes_nothing(admin_client_, three_nodes):
    url = reverse("admin:cluster_node_changelist")
    a = Node.objects.get(name="a")
    response = admin_client_.post(
        url, {"action": "activate_nodes", ACTION_CHECKBOX_NAME: [a.pk], "confirm": "yes"}, follow=True
    )
    assert "cannot go from active to active" in response.content.decode()
    assert Node.objects.get(name="a").state == "active"


def test_remove_takes_an_active_node_out(admin_client_, three_nodes):
    url = reverse("admin:cluster_node_changelist")
    c = Node.objects.get(name="c")
    admin_client_.post(url, {"action": "remove_nodes", ACTION_CHECKBOX_NAME: [c.pk], "confirm": "yes"})
    assert Node.objects.get(name="c").state == "left"


def test_key_lookup(admin_client_, three_nodes):
    response = admin_client_.get(reverse("admin:cluster_node_lookup"), {"key": "user:42", "n": 3})
    assert response.status_code == 200
    ring = current_ring()
    html = response.content.decode()
    assert f'<td id="owner">{ring.get_node("user:42")}</td>' in html
    assert ", ".join(ring.get_nodes("user:42", 3)) in html


def test_events_are_read_only_and_filterable(admin_client_, three_nodes):
    url = reverse("admin:cluster_membershipevent_changelist")
    response = admin_client_.get(url, {"to_state__exact": "active"})
    assert response.status_code == 200
    event = MembershipEvent.objects.first()
    change = admin_client_.post(reverse("admin:cluster_membershipevent_change", args=[event.pk]), {"reason": "x"})
    assert change.status_code == 403
    assert admin_client_.get(url, {"epoch": "2"}).status_code == 200


def test_job_admin_lists_and_retries_failed_jobs(admin_client_):
    from cluster.models import Job
    from tests.cluster import tasks_for_tests as t

    job_id = t.explode.delay(op_id="adm").id
    t.explode.celery_task.apply(args=(job_id, 1), kwargs={"kwargs": {"op_id": "adm"}}, task_id=job_id)
    url = reverse("admin:cluster_job_changelist")
    listing = admin_client_.get(url, {"state__exact": "failed"})
    assert listing.status_code == 200 and job_id in listing.content.decode()
    response = admin_client_.post(url, {"action": "retry_jobs", ACTION_CHECKBOX_NAME: [job_id]}, follow=True)
    assert "1 job(s) sent again" in response.content.decode()
    assert Job.objects.get(pk=job_id).state == "requeued"


def test_job_actions_need_the_change_permission(client, staff_user):
    from cluster.models import Job
    from tests.cluster import tasks_for_tests as t

    job_id = t.plain.delay(name="p").id
    client.force_login(staff_user)  # staff, but no cluster permissions
    response = client.post(
        reverse("admin:cluster_job_changelist"), {"action": "requeue_jobs", ACTION_CHECKBOX_NAME: [job_id]}
    )
    assert response.status_code == 403
    assert Job.objects.get(pk=job_id).dispatch == 1
