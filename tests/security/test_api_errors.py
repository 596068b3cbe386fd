"""Every error of the JSON API is application/problem+json, including the ones ninja and Django produce."""

from __future__ import annotations

import json

import pytest

from cluster import services

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


@pytest.fixture
def token():
    node, token = services.node_join(name="err-1", actor="t")
    services.node_activate(node=node)
    return token


def beat(client, token, body: str, name: str = "err-1"):
    return client.post(
        f"/api/v1/nodes/{name}/heartbeat",
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def assert_problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == status and problem["type"] == f"urn:ringmaster:problem:{slug}", problem
    return problem


@pytest.mark.parametrize("path", ["/api/v1/", "/api/v1/nope", "/api/v1/nodes/a/b/c"])
def test_an_unknown_path_is_a_404_problem(staff_client, path):
    assert_problem(staff_client.get(path), 404, "not-found")


def test_a_wrong_method_is_a_405_problem_with_allow(staff_client):
    response = staff_client.delete("/api/v1/nodes")
    assert_problem(response, 405, "method-not-allowed")
    assert response["Allow"] == "GET"


@pytest.mark.parametrize("url", ["/api/v1/nodes/a%00b", "/api/v1/events?node=a%00b", "/api/v1/nodes/-x"])
def test_a_malformed_node_name_is_a_400_naming_the_field(staff_client, url):
    problem = assert_problem(staff_client.get(url), 400, "invalid-request")
    assert "name" in problem["detail"] or "node" in problem["detail"]


@pytest.mark.parametrize("limit", ["0", "1001", "x", "99999999999999999999"])
def test_an_out_of_range_limit_is_a_400(staff_client, limit):
    problem = assert_problem(staff_client.get(f"/api/v1/events?limit={limit}"), 400, "invalid-request")
    assert "limit" in problem["detail"]


@pytest.mark.parametrize(
    "body, field",
    [
        ('{"incarnation": 2147483648, "seq": 1}', "incarnation"),  # past Node.incarnation's column
        ('{"incarnation": 1, "seq": 1, "load": {"x": NaN}}', "load"),  # Python's parser takes NaN; JSON has none
        ('{"incarnation": 1, "seq": 1, "load": {"x": Infinity}}', "load"),
        ('{"incarnation": 1, "seq": 1, "load": {"x": "' + "y" * 300 + '"}}', "load"),
        ("[1, 2]", "incarnation"),  # not an object: its required fields are missing
    ],
)
def test_heartbeat_values_the_system_cannot_hold_are_400(client, token, body, field):
    problem = assert_problem(beat(client, token, body), 400, "invalid-request")
    assert field in problem["detail"]


def test_an_unexpected_error_is_a_500_problem_without_internals(staff_client, monkeypatch):
    from monitoring import selectors

    def broken(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(selectors, "node_overview", broken)
    problem = assert_problem(staff_client.get("/api/v1/nodes"), 500, "internal-error")
    assert "secret" not in json.dumps(problem)


def test_error_responses_are_documented_as_problem_json(client):
    schema = client.get("/api/v1/openapi.json").json()
    responses = schema["paths"]["/api/v1/nodes/{name}/heartbeat"]["post"]["responses"]
    assert set(responses) >= {"200", "400", "401", "403", "409", "413", "429", "503"}
    assert list(responses["429"]["content"]) == [PROBLEM] and list(responses["200"]["content"]) == ["application/json"]


def test_a_content_length_that_is_not_a_number_is_a_400(client, token):
    response = client.post(
        "/api/v1/nodes/err-1/heartbeat",
        data='{"incarnation": 1, "seq": 1}',
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        CONTENT_LENGTH="12abc",
    )
    assert_problem(response, 400, "invalid-request")
