"""Brute-force protection of the admin (and dashboard) login with django-axes."""

from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

LOGIN = reverse("admin:login")
PASSWORD = "pw-staff-1"  # the staff_user fixture's


def attempt(client, password, *, username="staff", ip="10.0.0.1"):
    return client.post(LOGIN, {"username": username, "password": password, "next": "/dashboard/"}, REMOTE_ADDR=ip)


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_a_good_login_works_before_the_limit(client, staff_user):
    for _ in range(4):
        response = attempt(client, "wrong")
        assert response.status_code == 200 and not logged_in(client), "a bad password shows the form again"
    response = attempt(client, PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/dashboard/", "the 5th try, right, logs in"
    assert logged_in(client)


def test_the_sixth_attempt_is_refused_even_with_the_right_password(client, staff_user):
    for _ in range(5):
        attempt(client, "wrong")
    response = attempt(client, PASSWORD)
    assert response.status_code == 429, "locked out after 5 failures"
    assert not logged_in(client), "the right password does not get in during the cool-off"
    assert client.get("/dashboard/").status_code == 302, "and the dashboard still sends to the login page"


def test_a_lockout_is_for_that_username_from_that_address(client, staff_user, django_user_model):
    django_user_model.objects.create_user(username="other", password="pw-other-1", is_staff=True)
    for _ in range(5):
        attempt(client, "wrong")
    assert attempt(client, "pw-other-1", username="other").status_code == 302, "another user from there logs in"
    client.logout()
    assert attempt(client, PASSWORD, ip="10.0.0.2").status_code == 302, "the user from elsewhere logs in"


def test_a_success_resets_the_count(client, staff_user):
    for _ in range(4):
        attempt(client, "wrong")
    assert attempt(client, PASSWORD).status_code == 302
    client.logout()
    for _ in range(4):
        attempt(client, "wrong")
    assert attempt(client, PASSWORD).status_code == 302, "the four earlier failures were forgotten"


def test_the_cool_off_ends(client, staff_user, settings):
    from datetime import timedelta

    from axes.models import AccessAttempt

    for _ in range(5):
        attempt(client, "wrong")
    assert attempt(client, PASSWORD).status_code == 429
    # Fifteen minutes later (moved back in the database rather than waiting).
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16))
    assert attempt(client, PASSWORD).status_code == 302
