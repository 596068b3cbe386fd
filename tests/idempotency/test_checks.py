"""System checks of the idempotency settings, and the public import surface."""

from __future__ import annotations

import idempotency
from idempotency.checks import check_idempotency_settings


def ids(settings, **section) -> list[str]:
    settings.RINGMASTER = {**settings.RINGMASTER, "IDEMPOTENCY": section}
    return [message.id for message in check_idempotency_settings(None)]


def test_defaults_pass(settings):
    assert ids(settings) == []


def test_unknown_keys_and_bad_values_are_errors(settings):
    assert ids(settings, NOT_A_SETTING=1) == ["idempotency.E001"]
    assert ids(settings, METHODS=["GET"]) == ["idempotency.E002"]
    assert ids(settings, LEASE_SECONDS=0) == ["idempotency.E002"]
    assert ids(settings, MAX_REQUEST_BYTES="1MB") == ["idempotency.E002"]
    assert ids(settings, STORED_HEADERS="Location") == ["idempotency.E002"]
    assert ids(settings, DATABASE="nope") == ["idempotency.E002"]


def test_apply_to_all_views_without_the_middleware_warns(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "idempotency" not in m]
    assert ids(settings, APPLY_TO_ALL_VIEWS=True) == ["idempotency.W001"]


def test_public_api():
    from idempotency.middleware import IdempotencyMiddleware

    assert callable(idempotency.idempotent) and callable(idempotency.idempotent_view)
    assert issubclass(idempotency.IdempotencyKeyMismatch, idempotency.IdempotencyError)
    assert issubclass(idempotency.IdempotencyInProgress, idempotency.IdempotencyError)
    assert IdempotencyMiddleware
