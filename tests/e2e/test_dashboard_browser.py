"""The dashboard in a real browser: a node comes alive, falls silent and dies before the user's eyes.

Real time, real processes: uvicorn serves the pages and the WebSocket from a child process on the
test database, while this process beats heartbeats and runs the sweeper (with a fast fixed-timeout
policy, so suspicion and death take seconds, not the production defaults' ~8 s).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth.models import Permission
from django.db import connections

from cluster import services as cluster_services
from monitoring.liveness import LivenessPolicy
from monitoring.services import heartbeat_record
from monitoring.sweeper import Sweeper

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Suspect after 1.5 s of silence, dead 2 s later; active after two on-time beats and 1 s of health.
FAST_POLICY = LivenessPolicy(
    detector="fixed", fixed_timeout=1.5, dead_stable_period=2.0, rejoin_heartbeats=2, rejoin_stable_period=1.0
)
PASSWORD = "pw-e2e-ops-12345"


class Cluster:
    """Heartbeats for some nodes and a sweeper, each on a thread of its own, on the real clock."""

    def __init__(self, nodes: list[str]) -> None:
        self.beating = {name: True for name in nodes}
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._guard(self._beat), daemon=True),
            threading.Thread(target=self._guard(self._sweep), daemon=True),
        ]

    def _guard(self, loop):
        def run() -> None:
            try:
                loop()
            except BaseException as exc:  # reported by the test, not lost in a thread
                self.errors.append(exc)
            finally:
                connections.close_all()

        return run

    def _beat(self) -> None:
        seq = 0
        while not self.stop.wait(0.25):
            seq += 1
            for name, on in list(self.beating.items()):
                if on:
                    heartbeat_record(node=name, incarnation=1, seq=seq, load={"loadavg_1m": 0.42, "running": 1})

    def _sweep(self) -> None:
        sweeper = Sweeper(policy=FAST_POLICY)
        while not self.stop.wait(0.2):
            sweeper.sweep()

    def __enter__(self) -> Cluster:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


@pytest.fixture
def db_thread():
    """Runs database calls off this thread: Playwright's sync API keeps an event loop running here,
    and Django refuses synchronous queries where a loop runs."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="e2e-db")

    def call(fn, *args, **kwargs):
        return executor.submit(fn, *args, **kwargs).result(timeout=60)

    yield call
    executor.submit(connections.close_all).result(timeout=60)
    executor.shutdown()


def setup_cluster(user_model):
    from locks import get_backend

    user = user_model.objects.create_user(username="ops", password=PASSWORD, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["force_release_locklease", "drain_node"]))
    cluster_services.node_join(name="e2e-steady", zone="zone-a", actor="e2e")
    cluster_services.node_join(name="e2e-node", zone="zone-b", actor="e2e")
    return get_backend("default").acquire("e2e:report", ttl=300)


def lock_outcome():
    from locks import get_backend
    from locks.models import LockAudit

    held = [info.name for info in get_backend("default").held()]
    return held, list(LockAudit.objects.values_list("name", "token", "actor"))


def test_dashboard_end_to_end(live_server_url, browser, artifacts, django_user_model, db_thread):
    lease = db_thread(setup_cluster, django_user_model)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    login = context.new_page()
    login.goto(f"{live_server_url}/admin/login/?next=/dashboard/")
    login.fill("#id_username", "ops")
    login.fill("#id_password", PASSWORD)
    login.click("input[type=submit]")
    login.wait_for_url("**/dashboard/")
    login.close()

    # A fresh page for the dashboard, watched for console errors from its first request on.
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    page.goto(f"{live_server_url}/dashboard/")
    page.wait_for_selector("#live[data-state=live]", timeout=10_000)
    page.evaluate("window.__noReload = true")

    with Cluster(["e2e-steady", "e2e-node"]) as cluster:
        row = 'tr[data-node="e2e-node"]'
        page.wait_for_selector(f'{row}[data-state="active"]', timeout=20_000)
        assert page.inner_text(f"{row} td:nth-of-type(4)") != "never", "the heartbeat age is shown"
        page.screenshot(path=artifacts / "01-overview-active.png", full_page=True)

        cluster.beating["e2e-node"] = False
        page.wait_for_selector(f'{row}[data-state="suspect"]', timeout=15_000)
        page.screenshot(path=artifacts / "02-overview-suspect.png", full_page=True)
        page.wait_for_selector(f'{row}[data-state="dead"]', timeout=15_000)
        page.screenshot(path=artifacts / "03-overview-dead.png", full_page=True)
        assert page.evaluate("window.__noReload === true"), "the page turned the node dead without reloading"
        timeline = page.inner_text("#timeline")
        assert "e2e-node" in timeline and "dead" in timeline, "the transition is on the event timeline"
        assert page.inner_text("#total-dead") == "1"

        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=artifacts / "04-overview-phone.png", full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})

        page.click("nav >> text=Ring")
        page.wait_for_selector("#live[data-state=live]", timeout=10_000)
        page.wait_for_selector("#ring path.rm-cell")
        page.fill("#lookup-key", "account:42")
        page.click("#lookup button[type=submit]")
        page.wait_for_selector("#lookup-result:not([hidden])", timeout=10_000)
        assert page.inner_text("#lookup-owner") == "e2e-steady", "the only node in the ring owns every key"
        assert page.locator("#ring .rm-marker-dot").count() == 1, "the key is marked on the ring"
        assert page.locator('#ring-nodes tr.rm-selected[data-node="e2e-steady"]').count() == 1
        page.screenshot(path=artifacts / "05-ring-lookup.png", full_page=True)

        page.click("nav >> text=Locks")
        page.wait_for_selector("#live[data-state=live]", timeout=10_000)
        lock_row = page.locator("tr[data-lock$=':e2e:report']")
        lock_row.wait_for(timeout=10_000)
        assert lock_row.locator("td").nth(2).inner_text() == str(lease.token)
        lock_row.get_by_role("button", name="Force-release e2e:report").click()
        page.wait_for_selector("#confirm[open]")
        page.screenshot(path=artifacts / "06-locks-confirm.png")
        page.click("#confirm-ok")
        lock_row.wait_for(state="detached", timeout=10_000)
        assert "Released e2e:report" in page.inner_text("#flash")
        page.screenshot(path=artifacts / "07-locks-released.png", full_page=True)
    context.close()

    assert not cluster.errors, f"the heartbeat or sweeper thread failed: {cluster.errors!r}"
    assert not problems, f"the dashboard logged errors: {problems}"
    held, audit = db_thread(lock_outcome)
    assert held == [], "the lock is gone from its backend"
    assert audit == [("e2e:report", lease.token, "ops")], "the force-release is audited under the user's name"
