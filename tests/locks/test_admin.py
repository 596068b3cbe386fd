"""The "Held locks" admin page over every backend, force-release with its confirmation and audit."""

from __future__ import annotations

import pytest
from django.urls import reverse

from locks.admin import selection_value
from locks.models import LockAudit
from tests.locks.conftest import real_aliases

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "admin:locks_locklease_changelist"
FORCE = "admin:locks_locklease_force_release"


@pytest.fixture
def held(name):
    """One held lock per real backend of this pass."""
    from locks import get_backend

    leases = {alias: get_backend(alias).acquire(f"{name}:{alias}", ttl=60) for alias in real_aliases()}
    yield leases
    for lease in leases.values():
        if not lease.released:
            lease.release()


def test_held_locks_lists_every_backend(admin_client_, held):
    response = admin_client_.get(reverse(CHANGELIST))
    assert response.status_code == 200
    page = response.content.decode()
    for alias, lease in held.items():
        assert lease.name in page and str(lease.token) in page and lease.owner in page, f"{alias} lock missing"
    if "redis" in held:
        assert "redis, default" in page, "aliases of one store are shown together"


def test_filter_by_backend_and_search(admin_client_, held):
    alias, lease = next(iter(held.items()))
    page = admin_client_.get(reverse(CHANGELIST), {"backend": alias}).content.decode()
    assert lease.name in page
    for other_alias, other in held.items():
        if other_alias != alias:
            assert other.name not in page, "the backend filter let another backend's lock through"
    page = admin_client_.get(reverse(CHANGELIST), {"q": "no-such-lock-anywhere"}).content.decode()
    assert all(lease.name not in page for lease in held.values())
    page = admin_client_.get(reverse(CHANGELIST), {"q": lease.name.upper()}).content.decode()
    assert lease.name in page, "search is case-insensitive on the name"


def test_force_release_confirms_then_releases_and_audits(admin_client_, held, superuser):
    alias, lease = next(iter(held.items()))
    value = selection_value(alias, lease.token, lease.name)
    confirm = admin_client_.get(reverse(FORCE), {"lock": value})
    assert confirm.status_code == 200
    assert lease.name in confirm.content.decode() and lease.backend.verify(lease), "GET must not release"
    response = admin_client_.post(reverse(FORCE), {"lock": value, "confirm": "yes"})
    assert response.status_code == 302 and response["Location"] == reverse(CHANGELIST)
    assert not lease.backend.verify(lease), "the lock is still held after a confirmed force-release"
    entry = LockAudit.objects.get(name=lease.name)
    assert (entry.backend, entry.token, entry.owner, entry.actor) == (alias, lease.token, lease.owner, "root")


def test_bulk_selection_goes_through_the_confirmation(admin_client_, held):
    values = [selection_value(alias, lease.token, lease.name) for alias, lease in held.items()]
    page = admin_client_.post(reverse(FORCE), {"lock": values})
    assert page.status_code == 200 and all(lease.backend.verify(lease) for lease in held.values())
    admin_client_.post(reverse(FORCE), {"lock": values, "confirm": "yes"})
    assert not any(lease.backend.verify(lease) for lease in held.values())
    assert LockAudit.objects.count() == len(held)


def test_a_stale_token_is_not_released(admin_client_, held):
    alias, lease = next(iter(held.items()))
    stale = selection_value(alias, lease.token - 1, lease.name)
    response = admin_client_.post(reverse(FORCE), {"lock": stale, "confirm": "yes"}, follow=True)
    assert lease.backend.verify(lease), "a lock that changed hands was broken"
    assert "no longer held" in response.content.decode()
    assert not LockAudit.objects.exists()


def test_staff_without_permission_cannot_see_or_break_locks(staff_client, held):
    alias, lease = next(iter(held.items()))
    assert staff_client.get(reverse(CHANGELIST)).status_code == 403
    value = selection_value(alias, lease.token, lease.name)
    assert staff_client.post(reverse(FORCE), {"lock": value, "confirm": "yes"}).status_code == 403
    assert lease.backend.verify(lease)


def test_anonymous_users_are_sent_to_login(client):
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 302 and "login" in response["Location"]


def test_audit_log_and_counters_are_read_only_pages(admin_client_, held):
    from locks import get_backend

    alias, lease = next(iter(held.items()))
    get_backend(alias).force_release(lease.name, actor="ops-bot")
    for url_name in ("admin:locks_lockaudit_changelist", "admin:locks_lockcounter_changelist"):
        response = admin_client_.get(reverse(url_name))
        assert response.status_code == 200
    assert "ops-bot" in admin_client_.get(reverse("admin:locks_lockaudit_changelist")).content.decode()
    assert admin_client_.get(reverse("admin:locks_lockaudit_add")).status_code == 403
