"""Fixtures of the lock tests: every real backend alias of this pass, unique lock names."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from locks import get_backend
from tests.locks.workers import add_test_lock_aliases

add_test_lock_aliases()


def real_aliases() -> list[str]:
    """The aliases with a store of their own: db (and redis and db_advisory in the services pass); not ``default``."""
    return [alias for alias in settings.LOCKS if alias != "default"]


def pytest_generate_tests(metafunc):
    if "alias" in metafunc.fixturenames:
        metafunc.parametrize("alias", real_aliases())


@pytest.fixture
def backend(alias):
    return get_backend(alias)


@pytest.fixture
def name(request) -> str:
    """A lock name no other test uses (Redis keys outlive a test's database flush)."""
    return f"test:{request.node.name[:40]}:{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session", autouse=True)
def close_advisory_connections(django_db_setup, django_db_blocker):
    """Close the advisory mode's dedicated connections before the test database is dropped.

    Those of backends the handler still knows are closed; a lease left held by a test on a backend
    the handler has since forgotten (override_settings(LOCKS=...) resets it) is ended by its pid.
    """
    yield
    from django.db import connection

    from locks.handler import backends

    for backend in list(backends._backends.values()):
        advisory = getattr(backend, "advisory", None)
        if advisory is not None:
            advisory.close(held_too=True)
    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'ringmaster-lock %'"
            )
