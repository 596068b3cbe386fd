"""The JSON API fuzzed from its own OpenAPI schema (schemathesis), in process through the WSGI app.

Every operation gets schema-valid and schema-violating requests (bodies, path and query parameters,
headers) with a node's token: no request may end in a 5xx, every error must be
``application/problem+json``, and successful responses must match the schema they document.
Bounded (25 examples an operation, no deadline) so it stays well under a minute.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cluster import services
from idempotency.problems import PROBLEM_CONTENT_TYPE

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

NODE = "fuzz-1"


@pytest.fixture(autouse=True)
def in_process_requests(settings):
    from django.core.cache import cache

    # The limiter would answer most generated beats with 429 (tests/security covers it); fuzz the handler.
    settings.RINGMASTER = {"CLUSTER": {"RING_CHECK_INTERVAL": 0}, "MONITORING": {"HEARTBEAT_RATE": None}}
    cache.clear()
    # Django's test client does the same: closing "old" connections at each request would close the
    # test's own connection inside its transaction.
    request_started.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    cache.clear()


def load_schema():
    """Loaded at collection, as schemathesis' eager ``parametrize`` needs (its lazy loader does not
    support pytest 9): the schema view touches no database."""
    from config.wsgi import application

    loaded = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)
    loaded.config.generation.update(modes=list(GenerationMode), max_examples=25)
    return loaded


@pytest.fixture
def node_token():
    node, token = services.node_join(name=NODE, zone="z1", actor="fuzz")
    services.node_activate(node=node, actor="fuzz")
    return token


def problem_json_errors(ctx, response, case) -> None:
    """Every error, whatever produced it, is RFC 9457 problem+json with a stable type."""
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type == PROBLEM_CONTENT_TYPE, f"{response.status_code} answered as {content_type!r}"
    problem = response.json()
    assert problem["status"] == response.status_code and problem["type"].startswith("urn:ringmaster:problem:")


schema = load_schema()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_never_fails_and_always_speaks_problem_json(case, node_token):
    if case.operation.path.endswith("/heartbeat") and case.path_parameters:
        case.path_parameters["name"] = NODE  # the token's own node, so beats reach the handler
    response = case.call(headers={"Authorization": f"Bearer {node_token}"})
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            problem_json_errors,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
