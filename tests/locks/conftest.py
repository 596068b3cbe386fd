"""Fixtures of the lock tests: every real backend alias of this pass, unique lock names."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from locks import get_backend


def real_aliases() -> list[str]:
    """The aliases with a store of their own: db (and redis in the services pass); not ``default``."""
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
