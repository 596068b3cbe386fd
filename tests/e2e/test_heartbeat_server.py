"""Heartbeats against the real ASGI server (uvicorn on ``config.asgi:application``), fast path included."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from cluster import services
from monitoring.heartbeats import get_store

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def post(url: str, name: str, token: str, body: dict | str) -> tuple[int, dict, dict]:
    data = body if isinstance(body, str) else json.dumps(body)
    request = urllib.request.Request(  # noqa: S310 (our own server on loopback)
        f"{url}/api/v1/nodes/{name}/heartbeat",
        data=data.encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, json.loads(error.read())


def test_heartbeats_through_the_served_application(live_server_url):
    node, token = services.node_join(name="live-1", actor="t")
    status, headers, body = post(live_server_url, "live-1", token, {"incarnation": 1, "seq": 1})
    assert status == 200, body
    assert body["node"] == "live-1" and body["state"] == "joining"
    assert get_store().latest(["live-1"])["live-1"].seq == 1
    status, headers, body = post(live_server_url, "live-1", token, "{nope")
    assert (status, headers["content-type"]) == (400, "application/problem+json"), body
    new = services.node_rotate_token(node=node)
    status, _, body = post(live_server_url, "live-1", token, {"incarnation": 1, "seq": 2})
    assert status == 401, f"the server still took a rotated token: {body}"
    assert post(live_server_url, "live-1", new, {"incarnation": 1, "seq": 3})[0] == 200
