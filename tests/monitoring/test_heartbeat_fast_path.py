"""The heartbeat API's ASGI fast path: the same answers as the Django view, without Django for the common case."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.core.asgi import get_asgi_application
from django.core.cache import cache

from cluster import services
from cluster.models import Node
from monitoring import gateway
from monitoring.heartbeats import get_store

pytestmark = pytest.mark.django_db(transaction=True)  # the fast path reads tokens from its own threads


@pytest.fixture(autouse=True)
def empty_cache():
    """Rate-limit state and auth versions live in the cache, which outlives a test's database."""
    cache.clear()
    yield
    cache.clear()


class Recorder:
    """The Django application, counting the requests the fast path hands to it."""

    def __init__(self) -> None:
        self.app, self.calls = get_asgi_application(), 0

    async def __call__(self, scope, receive, send):
        self.calls += 1
        await self.app(scope, receive, send)


class Answer:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code, self.content = status, body
        self.headers = {k.decode().lower(): v.decode() for k, v in headers}

    def __getitem__(self, name: str) -> str:
        return self.headers[name.lower()]

    def json(self):
        return json.loads(self.content)


def asgi_post(app, name, token=None, body=None, raw=None, chunks=None, host="testserver") -> Answer:
    data = raw if raw is not None else json.dumps(body if body is not None else {"incarnation": 1, "seq": 1})
    data = data.encode() if isinstance(data, str) else data
    headers = [(b"host", host.encode()), (b"content-type", b"application/json")]
    if chunks is None:
        headers.append((b"content-length", str(len(data)).encode()))
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    path = f"/api/v1/nodes/{name}/heartbeat"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }

    async def call() -> Answer:
        communicator = ApplicationCommunicator(app, scope)
        parts = chunks if chunks is not None else [data]
        for i, part in enumerate(parts):
            await communicator.send_input({"type": "http.request", "body": part, "more_body": i < len(parts) - 1})
        start = await communicator.receive_output(10)
        body = b""
        while True:
            message = await communicator.receive_output(10)
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await communicator.wait(10)
        return Answer(start["status"], start["headers"], body)

    return async_to_sync(call)()


def django_post(client, name, token=None, body=None, raw=None, host="testserver"):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    data = raw if raw is not None else json.dumps(body if body is not None else {"incarnation": 1, "seq": 1})
    return client.post(
        f"/api/v1/nodes/{name}/heartbeat", data=data, content_type="application/json", HTTP_HOST=host, **headers
    )


@pytest.fixture
def node_and_token():
    node, token = services.node_join(name="fp-1", actor="t")
    services.node_activate(node=node)
    node.refresh_from_db()
    return node, token


@pytest.fixture
def fast():
    recorder = Recorder()
    return gateway.HeartbeatFastPath(recorder), recorder


def comparable(response) -> tuple:
    content_type = response["Content-Type"]
    body = response.json() if "json" in content_type else None
    return response.status_code, content_type, body


CASES = {
    "missing token": dict(token=None),
    "unknown token": dict(token="not-a-token"),
    "missing incarnation": dict(body={"seq": 1}),
    "incarnation not a number": dict(body={"incarnation": "x", "seq": 1}),
    "negative seq": dict(body={"incarnation": 1, "seq": -1}),
    "load not an object": dict(body={"incarnation": 1, "seq": 1, "load": "high"}),
    "NaN load": dict(raw='{"incarnation": 1, "seq": 1, "load": {"cpu": NaN}}'),
    "not JSON": dict(raw="{nope"),
    "body over the cap": dict(body={"incarnation": 1, "seq": 1, "load": {f"k{i}": "x" * 250 for i in range(20)}}),
    "a host Django refuses": dict(host="evil.example"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_whatever_is_not_a_good_beat_gets_the_django_views_answer(client, node_and_token, fast, case):
    _, token = node_and_token
    kwargs = {"token": token, **CASES[case]}
    app, recorder = fast
    via_fast_path = asgi_post(app, "fp-1", **kwargs)
    via_django = django_post(client, "fp-1", **kwargs)
    assert via_fast_path.status_code >= 400, f"{case}: {via_fast_path.content!r}"
    assert comparable(via_fast_path) == comparable(via_django), f"{case}: the fast path answered differently"
    assert recorder.calls == 1, f"{case}: the fast path must hand what it is not sure of to Django"


def test_another_nodes_token_and_an_older_incarnation_are_handed_to_django(client, node_and_token, fast):
    node, token = node_and_token
    _, other_token = services.node_join(name="fp-2")
    app, recorder = fast
    assert asgi_post(app, "fp-1", other_token).status_code == 403
    services.node_restart(node=node, incarnation=3)
    old = asgi_post(app, "fp-1", token, {"incarnation": 2, "seq": 1})
    assert (old.status_code, old["Content-Type"]) == (409, "application/problem+json")
    assert "older" in old.json()["detail"]
    assert recorder.calls == 2


def test_a_good_beat_is_answered_by_the_fast_path_alone(client, node_and_token, fast):
    _, token = node_and_token
    app, recorder = fast
    answer = asgi_post(app, "fp-1", token, {"incarnation": 1, "seq": 7, "load": {"running": 3}})
    assert answer.status_code == 200, answer.content
    assert recorder.calls == 0, "a well-formed beat with a known token never reaches Django"
    assert answer.json() == django_post(client, "fp-1", token, {"incarnation": 1, "seq": 8}).json()
    assert answer["X-Content-Type-Options"] == "nosniff" and answer["X-Frame-Options"] == "DENY"
    stored = get_store().latest(["fp-1"])["fp-1"]
    assert (stored.incarnation, stored.seq) == (1, 8)
    # The fast path's beat went through the same store: it is what the sweeper reads.
    assert asgi_post(app, "fp-1", token, {"incarnation": 1, "seq": 9}).status_code == 200
    assert get_store().latest(["fp-1"])["fp-1"].seq == 9
    assert Node.objects.get(name="fp-1").last_heartbeat_at is None, "no database write per beat"


def test_known_tokens_are_cached_until_the_nodes_row_is_saved(node_and_token, fast):
    node, token = node_and_token
    app, recorder = fast
    assert asgi_post(app, "fp-1", token).status_code == 200
    # A write that bypasses save() (and so the auth version) is not seen: the token really is cached ...
    Node.objects.filter(pk=node.pk).update(token_hash="0" * 64)
    assert asgi_post(app, "fp-1", token).status_code == 200
    assert recorder.calls == 0
    # ... until the row is saved, which bumps the node's auth version after commit.
    Node.objects.get(pk=node.pk).save()
    assert asgi_post(app, "fp-1", token).status_code == 401
    assert recorder.calls == 1


def test_a_rotated_token_is_refused_at_once_by_every_server_process(node_and_token):
    node, token = node_and_token
    one, two = gateway.HeartbeatFastPath(Recorder()), gateway.HeartbeatFastPath(Recorder())
    assert asgi_post(one, "fp-1", token).status_code == 200
    assert asgi_post(two, "fp-1", token).status_code == 200
    new = services.node_rotate_token(node=node)
    for app in (one, two):
        refused = asgi_post(app, "fp-1", token)
        assert refused.status_code == 401, "the old token must stop working on its next beat"
        assert refused.json()["type"] == "urn:ringmaster:problem:unauthenticated"
        assert asgi_post(app, "fp-1", new).status_code == 200


def test_the_reply_follows_the_nodes_state(node_and_token, fast):
    node, token = node_and_token
    app, _ = fast
    assert asgi_post(app, "fp-1", token).json()["state"] == "active"
    services.node_mark_suspect(node=node)
    assert asgi_post(app, "fp-1", token, {"incarnation": 1, "seq": 2}).json()["state"] == "suspect"


def test_rate_limit_is_applied_by_the_fast_path_with_retry_after(settings, node_and_token, fast):
    settings.RINGMASTER = {"MONITORING": {"HEARTBEAT_RATE": 0.01, "HEARTBEAT_BURST": 2}}
    _, token = node_and_token
    app, recorder = fast
    assert [asgi_post(app, "fp-1", token, {"incarnation": 1, "seq": s}).status_code for s in (1, 2)] == [200, 200]
    refused = asgi_post(app, "fp-1", token, {"incarnation": 1, "seq": 3})
    assert refused.status_code == 429
    assert refused["Content-Type"] == "application/problem+json"
    assert refused.json()["type"] == "urn:ringmaster:problem:rate-limited"
    assert int(refused["Retry-After"]) >= 1
    assert get_store().latest(["fp-1"])["fp-1"].seq == 2, "a refused beat is not recorded"
    assert recorder.calls == 0


def test_a_chunked_body_over_the_cap_is_handed_on_whole(node_and_token, fast):
    _, token = node_and_token
    app, recorder = fast
    big = json.dumps({"incarnation": 1, "seq": 1, "load": {f"k{i}": "x" * 250 for i in range(20)}}).encode()
    answer = asgi_post(app, "fp-1", token, raw=big, chunks=[big[:1000], big[1000:3000], big[3000:]])
    assert answer.status_code == 413
    assert recorder.calls == 1


def test_the_store_call_is_one_redis_script_on_redis_and_the_cache_elsewhere(settings):
    expected = gateway.RedisIngest if "django_redis" in settings.CACHES["default"]["BACKEND"] else gateway.CacheIngest
    assert type(gateway._ingest()) is expected


@pytest.mark.services
def test_a_redis_outage_is_a_503_problem_and_beats_resume_after_it(node_and_token):
    from django.test import override_settings

    from tests.services import private_redis_server

    _, token = node_and_token
    with private_redis_server() as redis_server:
        caches_at = {
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": redis_server.url,
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
            }
        }
        with override_settings(CACHES=caches_at):
            app = gateway.HeartbeatFastPath(Recorder())
            assert asgi_post(app, "fp-1", token).status_code == 200
            redis_server.stop()
            down = asgi_post(app, "fp-1", token, {"incarnation": 1, "seq": 2})
            assert down.status_code == 503, down.content
            assert down["Content-Type"] == "application/problem+json"
            assert down.json()["type"] == "urn:ringmaster:problem:heartbeat-store-unavailable"
            assert down["Retry-After"] == "1"
            # Back on the same port, empty (no persistence): auth versions and the script are gone; beats go on.
            redis_server.start()
            again = asgi_post(app, "fp-1", token, {"incarnation": 1, "seq": 3})
            assert again.status_code == 200, again.content
            assert get_store().latest(["fp-1"])["fp-1"].seq == 3


def test_an_unexpected_error_is_a_500_problem_without_internals(node_and_token, fast, monkeypatch, caplog):
    _, token = node_and_token
    app, _ = fast

    def broken():
        raise RuntimeError("secret internals")

    monkeypatch.setattr(gateway, "_ingest", broken)
    answer = asgi_post(app, "fp-1", token)
    assert (answer.status_code, answer["Content-Type"]) == (500, "application/problem+json")
    assert "secret" not in answer.content.decode()
    assert "secret internals" in caplog.text, "the operator gets the traceback in the log"
