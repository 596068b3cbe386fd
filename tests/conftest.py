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


@pytest.fixture
def child_env(transactional_db):
    """Environment for a child process that must use this test's database (and deployment)."""
    from django.conf import settings
    from django.db import connection

    db = settings.DATABASES["default"]
    env = dict(os.environ)
    if connection.vendor == "postgresql":
        host = db.get("HOST") or "127.0.0.1"
        port = db.get("PORT") or 5432
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        env["DATABASE_URL"] = f"postgres://{db['USER']}{password}@{host}:{port}/{db['NAME']}"
    else:
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    return env


@pytest.fixture(autouse=True)
def _fast_password_hashing(request):
    """Hash test users' passwords with MD5, not the production PBKDF2 (~0.25 s of CPU per user, and
    many tests create users). No test is about the hash itself. The production hashers stay
    listed, so a hash made elsewhere still checks; tests with child processes on their database keep
    the production setting, since a child (a live server a browser logs in to) checks with that."""
    if not request.config.pluginmanager.hasplugin("django") or "child_env" in request.fixturenames:
        yield
        return
    settings = request.getfixturevalue("settings")
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]
    yield


@pytest.fixture(autouse=True)
def _fresh_ring_cache(request):
    """Tests roll their transactions back, so nothing commits to drop the per-process ring cache:
    check the epoch on every call instead (test_membership covers the interval itself).
    Pure tests also run without Django (``-p no:django``): then there is nothing to reset."""
    if not request.config.pluginmanager.hasplugin("django"):
        yield
        return
    from cluster import selectors

    request.getfixturevalue("settings").RINGMASTER = {"CLUSTER": {"RING_CHECK_INTERVAL": 0}}
    selectors.forget_cached_ring()
    yield
    selectors.forget_cached_ring()
