"""Fixtures of the idempotency tests."""

from __future__ import annotations

import pytest

from tests.idempotency import urls as test_urls


@pytest.fixture(autouse=True)
def _reset_flaky_script():
    test_urls.FLAKY_SCRIPT.clear()
    yield
    test_urls.FLAKY_SCRIPT.clear()


@pytest.fixture
def idem_settings(settings):
    """Override keys of RINGMASTER["IDEMPOTENCY"] for one test: ``idem_settings(ALLOW_ANONYMOUS=True)``."""

    def apply(**overrides):
        ringmaster = {section: dict(values) for section, values in (settings.RINGMASTER or {}).items()}
        ringmaster.setdefault("IDEMPOTENCY", {}).update(overrides)
        settings.RINGMASTER = ringmaster

    return apply
