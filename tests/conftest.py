"""Shared fixtures: users and clients, the real Redis, deployment helpers."""

from __future__ import annotations

import os

import pytest
import redis as redis_lib

from tests import services


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(username="staff", password="pw-staff-1", is_staff=True)


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser(username="root", password="pw-root-1", email="")


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def admin_client_(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis of this test run; never skipped: a missing Redis fails the test."""
    url = os.environ.get("RINGMASTER_TEST_REDIS_URL", services.DEFAULT_REDIS_URL)
    redis_lib.Redis.from_url(url, socket_connect_timeout=2).ping()
    return url


@pytest.fixture
def redis_client(redis_url):
    client = redis_lib.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def private_redis():
    """A Redis of this test's own, which the test may stop to see what breaks."""
    with services.private_redis() as url:
        yield url
