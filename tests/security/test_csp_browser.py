"""The Content Security Policy in a real browser: the admin and the dashboard work with no violation.

Chromium reports every blocked inline script, style or connection as a console error; the pages
are visited, and their JavaScript exercised (the dashboard's WebSocket, the admin's action toggle,
calendar and sidebar filter), with a listener on the console.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from tests.e2e.conftest import browser, live_server_url  # noqa: F401 (fixtures used by name)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-csp-root-12345"


@pytest.fixture
def db_thread():
    """Database calls off the Playwright thread (its sync API keeps an event loop running here)."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="csp-db")

    def call(fn, *args, **kwargs):
        return executor.submit(fn, *args, **kwargs).result(timeout=60)

    yield call
    executor.submit(connections.close_all).result(timeout=60)
    executor.shutdown()


def setup(user_model) -> int:
    from cluster import services
    from monitoring.audit import audit_record

    user = user_model.objects.create_superuser(username="root", password=PASSWORD, email="")
    node, _ = services.node_join(name="csp-1", actor="t")
    audit_record(action="node.drain", target="csp-1", actor=user, source="admin")
    return user.pk


def test_admin_and_dashboard_run_without_csp_violations(live_server_url, browser, db_thread, django_user_model):  # noqa: F811
    user_pk = db_thread(setup, django_user_model)
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    problems: list[str] = []
    # Chromium reports what it blocks as "... violates the following Content Security Policy directive ...";
    # other console errors (the admin has no favicon) are not about the policy.
    page.on(
        "console", lambda m: problems.append(f"{page.url}: {m.text}") if "Content Security Policy" in m.text else None
    )
    page.on("pageerror", lambda exc: problems.append(f"{page.url}: uncaught {exc}"))

    page.goto(f"{live_server_url}/admin/login/?next=/admin/")
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")

    page.goto(f"{live_server_url}/admin/cluster/node/")
    page.click("#action-toggle")  # actions.js: select all rows
    assert page.is_checked("input.action-select"), "the admin's action script runs under the policy"
    page.fill("#nav-filter", "node")  # nav_sidebar.js hides rows through element.style
    page.goto(f"{live_server_url}/admin/auth/user/{user_pk}/change/")
    page.click("#calendarlink0")  # DateTimeShortcuts positions its calendar through element.style
    assert page.is_visible("#calendarbox0"), "the admin's calendar opens under the policy"
    for path in ("/admin/monitoring/auditentry/", "/admin/locks/locklease/", "/admin/cluster/job/?o=1"):
        page.goto(f"{live_server_url}{path}")

    for path in ("/dashboard/", "/dashboard/ring/", "/dashboard/jobs/", "/dashboard/locks/", "/dashboard/idempotency/"):
        page.goto(f"{live_server_url}{path}")
        page.wait_for_selector("#live[data-state=live]", timeout=10_000)  # the WebSocket is allowed

    assert problems == [], "the Content-Security-Policy blocked something:\n" + "\n".join(problems)
