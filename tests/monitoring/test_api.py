"""The node heartbeat API and the read API: auth, bad input, stored beats, OpenAPI schema."""

from __future__ import annotations

import json

import pytest

from cluster import services
from monitoring.heartbeats import get_store
from tests.cluster.factories import active_node

pytestmark = pytest.mark.django_db


@pytest.fixture
def node_and_token():
    node, token = services.node_join(name="ext-1", actor="t")
    services.node_activate(node=node)
    node.refresh_from_db()
    return node, token


def beat(client, name, token=None, body=None, raw=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    data = raw if raw is not None else json.dumps(body if body is not None else {"incarnation": 1, "seq": 1})
    return client.post(f"/api/v1/nodes/{name}/heartbeat", data=data, content_type="application/json", **headers)


def test_heartbeat_lands_in_the_store_without_a_database_write(client, node_and_token, django_assert_max_num_queries):
    node, token = node_and_token
    with django_assert_max_num_queries(1):  # the token lookup; no write
        response = beat(client, "ext-1", token, {"incarnation": 1, "seq": 7, "load": {"running": 3}})
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "active"
    stored = get_store().latest(["ext-1"])["ext-1"]
    assert (stored.incarnation, stored.seq, stored.load) == (1, 7, {"running": 3})
    node.refresh_from_db()
    assert node.last_heartbeat_at is None, "the database row is refreshed by the sweeper, not per beat"


def test_missing_or_wrong_token_is_401(client, node_and_token):
    for token in (None, "not-a-token"):
        response = beat(client, "ext-1", token)
        assert response.status_code == 401
        assert response["Content-Type"] == "application/problem+json"
        assert response.json()["type"] == "urn:ringmaster:problem:unauthenticated"


def test_another_nodes_token_is_403(client, node_and_token):
    _, other_token = services.node_join(name="ext-2")
    response = beat(client, "ext-1", other_token)
    assert response.status_code == 403
    assert response.json()["type"] == "urn:ringmaster:problem:forbidden"


def test_rotated_token_is_rejected_at_once(client, node_and_token):
    node, token = node_and_token
    assert beat(client, "ext-1", token).status_code == 200
    new = services.node_rotate_token(node=node)
    assert beat(client, "ext-1", token).status_code == 401
    assert beat(client, "ext-1", new).status_code == 200


@pytest.mark.parametrize(
    "body, field",
    [
        ({"seq": 1}, "incarnation"),
        ({"incarnation": "x", "seq": 1}, "incarnation"),
        ({"incarnation": 1, "seq": -1}, "seq"),
        ({"incarnation": 0, "seq": 1}, "incarnation"),
        ({"incarnation": 1, "seq": 1, "load": "high"}, "load"),
    ],
)
def test_malformed_body_is_400_naming_the_field(client, node_and_token, body, field):
    _, token = node_and_token
    response = beat(client, "ext-1", token, body)
    assert response.status_code == 400, response.content
    problem = response.json()
    assert response["Content-Type"] == "application/problem+json"
    assert field in problem["detail"]


def test_not_json_is_400(client, node_and_token):
    _, token = node_and_token
    response = beat(client, "ext-1", token, raw="{nope")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"


def test_old_incarnation_is_409(client, node_and_token):
    node, token = node_and_token
    services.node_restart(node=node, incarnation=3)
    response = beat(client, "ext-1", token, {"incarnation": 2, "seq": 1})
    assert response.status_code == 409
    assert "older" in response.json()["detail"]
    assert beat(client, "ext-1", token, {"incarnation": 3, "seq": 1}).status_code == 200


def test_huge_body_is_413(client, node_and_token, settings):
    _, token = node_and_token
    body = {"incarnation": 1, "seq": 1, "load": {f"k{i}": "x" * 300 for i in range(20)}}
    response = beat(client, "ext-1", token, body)
    assert response.status_code == 413


def test_read_api_needs_staff_or_a_node_token(staff_user, node_and_token, django_user_model):
    from django.test import Client

    client, staff_client = Client(), Client()
    staff_client.force_login(staff_user)
    assert client.get("/api/v1/nodes").status_code == 401
    user = django_user_model.objects.create_user(username="plain", password="pw-plain-1")
    client.force_login(user)
    assert client.get("/api/v1/nodes").status_code == 401, "a non-staff session is not enough"
    _, token = node_and_token
    assert client.get("/api/v1/nodes", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    assert staff_client.get("/api/v1/nodes").status_code == 200


def test_read_api_contents(staff_client, node_and_token):
    active_node("ext-3", zone="z2")
    nodes = staff_client.get("/api/v1/nodes").json()
    assert [n["name"] for n in nodes] == ["ext-1", "ext-3"]
    assert nodes[0]["share"] == pytest.approx(0.5, abs=0.001)
    one = staff_client.get("/api/v1/nodes/ext-3").json()
    assert one["zone"] == "z2" and one["state"] == "active"
    missing = staff_client.get("/api/v1/nodes/nope")
    assert missing.status_code == 404 and missing["Content-Type"] == "application/problem+json"
    ring = staff_client.get("/api/v1/ring").json()
    assert ring["epoch"] == 2 and {n["name"] for n in ring["nodes"]} == {"ext-1", "ext-3"}
    events = staff_client.get("/api/v1/events?limit=2").json()
    assert len(events) == 2 and events[0]["to_state"] == "active"
    assert staff_client.get("/api/v1/events?limit=0").status_code == 400


def test_openapi_schema_is_served(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert "/api/v1/nodes/{name}/heartbeat" in schema["paths"]
    assert "/api/v1/ring" in schema["paths"]
