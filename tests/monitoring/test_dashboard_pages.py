"""The dashboard's pages: staff only, linked with the admin both ways, and the data its stream is built from."""

from __future__ import annotations

import pytest
from django.urls import reverse

from cluster import services as cluster_services
from cluster.ring import HashRing
from monitoring import dashboard

PAGES = ["dashboard:overview", "dashboard:ring", "dashboard:jobs", "dashboard:locks", "dashboard:idempotency"]

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("name", PAGES)
def test_pages_are_staff_only(client, django_user_model, name):
    url = reverse(name)
    response = client.get(url)
    assert response.status_code == 302 and reverse("admin:login") in response["Location"], "anonymous: to the login"
    user = django_user_model.objects.create_user(username="plain", password="pw-plain-123")
    client.force_login(user)
    assert client.get(url).status_code == 302, "a non-staff user is sent to the login too"


@pytest.mark.parametrize("name", PAGES)
def test_pages_render_a_shell_with_a_module_script_and_no_inline_script(staff_client, name):
    response = staff_client.get(reverse(name))
    assert response.status_code == 200
    html = response.content.decode()
    assert '<script type="module" src="/static/ringmaster/' in html
    assert html.count("<script") == 1, "no inline scripts (a CSP will forbid them)"
    assert 'id="live"' in html and 'role="status"' in html, "the live indicator is there and announced"
    for other in PAGES:
        assert f'href="{reverse(other)}"' in html, f"the navigation links {other}"
    nav = html[html.index('<nav class="rm-nav"') : html.index("</nav>")]
    ring, jobs, locks = (nav.index(f'href="{reverse(page)}"') for page in PAGES[1:4])
    assert ring < jobs < locks, "Jobs sits between Ring and Locks in the navigation"


def test_each_page_links_to_its_admin_change_lists(staff_client):
    overview = staff_client.get(reverse("dashboard:overview")).content.decode()
    assert reverse("admin:cluster_node_changelist") in overview
    assert reverse("admin:cluster_membershipevent_changelist") in overview
    ring = staff_client.get(reverse("dashboard:ring")).content.decode()
    assert reverse("admin:cluster_node_lookup") in ring
    idempotency = staff_client.get(reverse("dashboard:idempotency")).content.decode()
    assert reverse("admin:idempotency_idempotencyrecord_changelist") in idempotency
    jobs = staff_client.get(reverse("dashboard:jobs")).content.decode()
    assert reverse("admin:cluster_job_changelist") in jobs


def test_the_admin_links_back_to_the_dashboard(admin_client_):
    index = admin_client_.get(reverse("admin:index")).content.decode()
    assert f'href="{reverse("dashboard:overview")}" id="rm-dashboard-link"' in index
    idempotency = admin_client_.get(reverse("admin:idempotency_idempotencyrecord_changelist")).content.decode()
    assert f'href="{reverse("dashboard:idempotency")}" id="rm-dashboard-link"' in idempotency
    jobs = admin_client_.get(reverse("admin:cluster_job_changelist")).content.decode()
    assert f'href="{reverse("dashboard:jobs")}" id="rm-dashboard-link"' in jobs
    nodes = admin_client_.get(reverse("admin:cluster_node_changelist")).content.decode()
    assert f'href="{reverse("dashboard:overview")}" id="rm-dashboard-link"' in nodes, "other pages: the overview"


def test_locks_page_offers_force_release_only_with_the_permission(staff_client, superuser):
    from django.test import Client

    assert 'data-can-force-release="false"' in staff_client.get(reverse("dashboard:locks")).content.decode()
    root = Client()
    root.force_login(superuser)
    assert 'data-can-force-release="true"' in root.get(reverse("dashboard:locks")).content.decode()


def test_ring_cells_are_proportional_to_the_shares():
    ring = HashRing({"a": 1.0, "b": 2.0, "c": 1.0}, partitions=2**12, zones={"a": "z1", "b": "z2", "c": "z1"})
    payload = dashboard.ring_payload(ring)
    names = [n["name"] for n in payload["nodes"]]
    counts = {name: payload["cells"].count(i) for i, name in enumerate(names)}
    assert len(payload["cells"]) == dashboard.RING_CELLS
    for name in names:
        assert abs(counts[name] - ring.share(name) * dashboard.RING_CELLS) <= 1, f"{name}: {counts[name]} cells"


def test_ring_moves_name_who_gives_what_to_whom():
    before = HashRing(["a", "b"], partitions=2**10)
    after = before.add_node("c")
    moves = dashboard.ring_moves(before, after)
    assert moves["from_epoch"] == before.epoch and moves["to_epoch"] == after.epoch
    assert {m["target"] for m in moves["moves"]} == {"c"}
    assert moves["fraction"] == pytest.approx(1 / 3, abs=0.01)


def test_key_lookup_places_the_key_in_its_owners_partition():
    for name in ("n1", "n2", "n3"):
        cluster_services.node_join(name=name, zone=f"z{name[-1]}")
        cluster_services.node_activate(node=name)
    result = dashboard.key_lookup(key="order:17", n=3)
    ring = dashboard.cluster_selectors.current_ring()
    assert result["owner"] == ring.get_node("order:17")
    assert result["preference"] == ring.get_nodes("order:17", 3)
    assert result["partition"] == int(result["position"] * ring.partitions)


def test_key_lookup_on_an_empty_ring_raises_lookup_error():
    with pytest.raises(LookupError):
        dashboard.key_lookup(key="k")


def test_jobs_page_offers_retry_and_requeue_only_with_the_permissions(staff_client, superuser):
    from django.test import Client

    html = staff_client.get(reverse("dashboard:jobs")).content.decode()
    assert 'data-can-retry="false"' in html and 'data-can-requeue="false"' in html
    assert 'src="/static/ringmaster/jobs.js"' in html
    assert '<option value="failed">' in html, "the state filter lists the job states"
    root = Client()
    root.force_login(superuser)
    html = root.get(reverse("dashboard:jobs")).content.decode()
    assert 'data-can-retry="true"' in html and 'data-can-requeue="true"' in html


def test_recent_jobs_are_newest_first_with_a_duration():
    import uuid
    from datetime import timedelta

    from django.utils import timezone

    from cluster.models import Job, JobState
    from cluster.selectors import recent_jobs

    now = timezone.now()
    done = Job.objects.create(
        id=uuid.uuid4(),
        task_name="t.done",
        args_digest="x",
        state=JobState.SUCCEEDED,
        attempts=1,
        started_at=now,
        finished_at=now + timedelta(seconds=2),
        ran_on="n1",
    )
    running = Job.objects.create(id=uuid.uuid4(), task_name="t.run", args_digest="x", state=JobState.RUNNING)
    rows = recent_jobs(limit=10)
    assert [row["id"] for row in rows] == [str(running.pk), str(done.pk)]
    assert rows[1]["duration"] == pytest.approx(2.0) and rows[1]["ran_on"] == "n1"
    assert rows[0]["duration"] is None and isinstance(rows[0]["created_at"], float)
    assert [row["id"] for row in recent_jobs(limit=1)] == [str(running.pk)]
