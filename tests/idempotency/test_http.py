"""The Idempotency-Key header through the test client: replays, errors, scoping, release rules."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from idempotency.keys import request_fingerprint
from idempotency.models import IdempotencyRecord
from idempotency.problems import PROBLEM_CONTENT_TYPE, problem_type
from idempotency.services import record_claim
from tests.idempotency import urls as test_urls
from tests.idempotency.helpers import effects, pg_wire_queries, post

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.idempotency.urls")]


def assert_problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status, (status, response.status_code, response.content)
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE, "errors are RFC 9457 problem documents"
    body = response.json()
    assert body["type"] == problem_type(slug), body
    assert body["status"] == status
    assert "Idempotent-Replayed" not in response
    return body


# --- replays -------------------------------------------------------------------------------


def test_first_request_runs_and_a_repeat_replays_status_headers_and_body(staff_client):
    first = post(staff_client, "/transfers/", {"amount": 5}, key="k-1")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first, "only replays carry Idempotent-Replayed"

    second = post(staff_client, "/transfers/", {"amount": 5}, key="k-1")
    assert second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.content == first.content, "the body is replayed byte for byte"
    for header in ("Content-Type", "Location", "X-Effect-Id"):
        assert second[header] == first[header], header
    assert "not-replayed" not in second.cookies, "Set-Cookie is never stored"
    assert effects("transfer") == 1, "the view body ran once"
    assert IdempotencyRecord.objects.get().replay_count == 1


def test_replay_is_the_same_whatever_the_later_requests_headers(staff_client):
    first = post(staff_client, "/transfers/", {"amount": 1}, key="k-h")
    again = post(staff_client, "/transfers/", {"amount": 1}, key="k-h", HTTP_ACCEPT="text/html")
    assert again["Idempotent-Replayed"] == "true"
    assert again.content == first.content


def test_template_responses_are_rendered_then_stored(staff_client):
    first = post(staff_client, "/template/", key="tpl")
    second = post(staff_client, "/template/", key="tpl")
    assert first.status_code == second.status_code == 202
    assert second.content == first.content and b"effect" in first.content
    assert effects("template") == 1


def test_view_4xx_is_stored_and_replayed(staff_client):
    test_urls.FLAKY_SCRIPT.extend(["404"])
    first = post(staff_client, "/flaky/", key="four")
    second = post(staff_client, "/flaky/", key="four")
    assert first.status_code == second.status_code == 404
    assert second["Idempotent-Replayed"] == "true"
    assert second.content == first.content
    assert effects("flaky-404") == 1 and effects("flaky-ok") == 0


# --- errors --------------------------------------------------------------------------------


def test_same_key_with_another_body_is_422(staff_client):
    post(staff_client, "/transfers/", {"amount": 5}, key="k-2")
    body = assert_problem(post(staff_client, "/transfers/", {"amount": 6}, key="k-2"), 422, "idempotency-key-mismatch")
    assert "different" in body["detail"]
    assert effects("transfer") == 1


def test_same_key_with_another_query_string_is_422(staff_client):
    post(staff_client, "/transfers/", {"amount": 5}, key="k-q")
    response = post(staff_client, "/transfers/?dry_run=1", {"amount": 5}, key="k-q")
    assert_problem(response, 422, "idempotency-key-mismatch")


def test_missing_key_on_a_required_view_is_400(staff_client):
    body = assert_problem(post(staff_client, "/transfers/", {"amount": 5}), 400, "idempotency-key-missing")
    assert "Idempotency-Key" in body["detail"]
    assert effects("transfer") == 0
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.parametrize(
    "raw",
    [
        "",
        '""',
        '"' + "a" * 256 + '"',
        "bare-token",
        '"unterminated',
        '"a"b"',
        '"tab\there"',
        '"caf\u00e9"',
        '"a", "b"',
        '"bad\\escape"',
    ],
    ids=[
        "empty",
        "empty-string",
        "256-chars",
        "token",
        "unterminated",
        "text-after",
        "tab",
        "non-ascii",
        "list",
        "escape",
    ],
)
def test_malformed_keys_are_400(staff_client, raw):
    response = post(staff_client, "/transfers/", {"amount": 5}, raw_key=raw)
    assert_problem(response, 400, "idempotency-key-malformed")
    assert effects("transfer") == 0
    assert not IdempotencyRecord.objects.exists()


def test_longest_key_and_escapes_are_accepted(staff_client):
    assert post(staff_client, "/transfers/", raw_key='"' + "k" * 255 + '"').status_code == 201
    assert post(staff_client, "/transfers/", raw_key=' "q\\"uote\\\\" ').status_code == 201
    assert set(IdempotencyRecord.objects.values_list("key", flat=True)) == {"k" * 255, 'q"uote\\'}


def test_in_flight_key_is_409_with_retry_after(staff_client, staff_user):
    body = {"amount": 5}
    in_flight = record_claim(
        scope=f"user:{staff_user.pk} POST transfers/",
        key="busy",
        fingerprint=request_fingerprint(
            method="POST",
            path="/transfers/",
            headers=[("Content-Type", "application/json")],
            body=json.dumps(body).encode(),
        ),
        ttl=timedelta(hours=1),
        lease_seconds=20,
    )
    assert in_flight.outcome == "claimed"
    response = post(staff_client, "/transfers/", body, key="busy")
    assert_problem(response, 409, "idempotency-key-in-progress")
    assert 1 <= int(response["Retry-After"]) <= 20
    assert effects("transfer") == 0


def test_body_over_the_limit_is_413_and_nothing_is_stored(staff_client, idem_settings):
    idem_settings(MAX_REQUEST_BYTES=100)
    response = post(staff_client, "/transfers/", {"amount": 5, "memo": "x" * 200}, key="huge")
    body = assert_problem(response, 413, "idempotency-request-too-large")
    assert body["max_bytes"] == 100
    assert effects("transfer") == 0
    assert not IdempotencyRecord.objects.exists()


# --- scoping -------------------------------------------------------------------------------


def test_keys_are_scoped_per_user(client, django_user_model):
    alice = django_user_model.objects.create_user(username="alice", password="pw-alice-1")
    bob = django_user_model.objects.create_user(username="bob", password="pw-bob-1")
    client.force_login(alice)
    for_alice = post(client, "/transfers/", {"amount": 5}, key="shared-key")
    client.force_login(bob)
    for_bob = post(client, "/transfers/", {"amount": 5}, key="shared-key")
    assert for_alice.status_code == for_bob.status_code == 201
    assert "Idempotent-Replayed" not in for_bob, "bob must not see alice's response"
    assert for_bob.json()["user"] == "bob" and for_alice.json()["user"] == "alice"
    assert effects("transfer") == 2


def test_keys_are_scoped_per_route(staff_client):
    post(staff_client, "/transfers/", {"amount": 5}, key="k-r")
    other = post(staff_client, "/optional/", {"amount": 5}, key="k-r")
    assert other.status_code == 201 and "Idempotent-Replayed" not in other


def test_principal_set_by_an_auth_layer_scopes_keys(rf, idem_settings):
    from tests.idempotency.urls import optional

    def request(principal):
        req = rf.post("/optional/", data=b"{}", content_type="application/json", HTTP_IDEMPOTENCY_KEY='"t"')
        req.idempotency_principal = principal
        return optional(req)

    first, replay, other = request("token:a"), request("token:a"), request("node:n1")
    assert replay["Idempotent-Replayed"] == "true" and replay.content == first.content
    assert "Idempotent-Replayed" not in other
    assert set(IdempotencyRecord.objects.values_list("scope", flat=True)) == {
        "token:a POST /optional/",
        "node:n1 POST /optional/",
    }


def test_anonymous_requests_are_not_protected_unless_allowed(client, idem_settings):
    first = post(client, "/optional/", key="anon")
    second = post(client, "/optional/", key="anon")
    assert first.status_code == second.status_code == 201
    assert "Idempotent-Replayed" not in second, "anonymous use is off by default"
    assert not IdempotencyRecord.objects.exists()

    idem_settings(ALLOW_ANONYMOUS=True)
    third = post(client, "/optional/", key="anon")
    fourth = post(client, "/optional/", key="anon")
    assert fourth["Idempotent-Replayed"] == "true" and fourth.content == third.content


def test_view_can_allow_anonymous_use(client):
    first = post(client, "/anonymous/", key="anon-view")
    assert post(client, "/anonymous/", key="anon-view").content == first.content
    assert effects("anonymous") == 1


# --- what is not applied -------------------------------------------------------------------


def test_optional_key_missing_runs_the_view_every_time(staff_client):
    post(staff_client, "/optional/")
    post(staff_client, "/optional/")
    assert effects("optional") == 2
    assert not IdempotencyRecord.objects.exists()


def test_safe_methods_pass_through(staff_client):
    response = staff_client.get("/transfers/", HTTP_IDEMPOTENCY_KEY='"g"')
    assert response.status_code == 201, "GET is not in METHODS: the view runs as if undecorated"
    assert not IdempotencyRecord.objects.exists()


def test_methods_setting_covers_put(staff_client, idem_settings):
    idem_settings(METHODS=["POST", "PUT"])
    kwargs = {"data": "{}", "content_type": "application/json", "HTTP_IDEMPOTENCY_KEY": '"p"'}
    staff_client.put("/transfers/", **kwargs)
    assert staff_client.put("/transfers/", **kwargs)["Idempotent-Replayed"] == "true"
    staff_client.patch("/transfers/", **kwargs)
    assert "Idempotent-Replayed" not in staff_client.patch("/transfers/", **kwargs)


def test_apply_to_all_views_protects_undecorated_views(staff_client, idem_settings):
    post(staff_client, "/plain/", key="all")
    assert "Idempotent-Replayed" not in post(staff_client, "/plain/", key="all"), "off by default"
    assert effects("plain") == 2

    idem_settings(APPLY_TO_ALL_VIEWS=True)
    first = post(staff_client, "/plain/", key="all-on")
    second = post(staff_client, "/plain/", key="all-on")
    assert second["Idempotent-Replayed"] == "true" and second.content == first.content
    assert effects("plain") == 3


def test_apply_to_all_views_with_require_key(staff_client, idem_settings):
    idem_settings(APPLY_TO_ALL_VIEWS=True, REQUIRE_KEY=True)
    assert_problem(post(staff_client, "/plain/"), 400, "idempotency-key-missing")
    assert staff_client.get("/plain/").status_code == 200


def test_decorated_view_is_processed_once_with_the_middleware_on(staff_client, idem_settings):
    idem_settings(APPLY_TO_ALL_VIEWS=True)
    assert post(staff_client, "/transfers/", key="once").status_code == 201
    assert IdempotencyRecord.objects.count() == 1


# --- release rules -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["500", "503", "429"])
def test_5xx_and_429_release_the_key_and_roll_back(staff_client, mode):
    test_urls.FLAKY_SCRIPT.append(mode)
    first = post(staff_client, "/flaky/", key=f"retry-{mode}")
    assert first.status_code == int(mode)
    assert effects(f"flaky-{mode}") == 0, "the failed attempt's writes are rolled back"
    assert not IdempotencyRecord.objects.exists(), "the key is released"
    retry = post(staff_client, "/flaky/", key=f"retry-{mode}")
    assert retry.status_code == 201 and "Idempotent-Replayed" not in retry
    assert effects("flaky-ok") == 1


def test_exception_releases_the_key(client, staff_user):
    client.raise_request_exception = False
    client.force_login(staff_user)
    test_urls.FLAKY_SCRIPT.append("raise")
    assert post(client, "/flaky/", key="boom").status_code == 500
    assert not IdempotencyRecord.objects.exists()
    assert effects("flaky-raise") == 0
    assert post(client, "/flaky/", key="boom").status_code == 201
    assert post(client, "/flaky/", key="boom")["Idempotent-Replayed"] == "true"


def test_oversized_response_is_not_stored_and_the_key_released(staff_client, idem_settings, caplog):
    idem_settings(MAX_RESPONSE_BYTES=1000)
    with caplog.at_level(logging.ERROR, logger="idempotency"):
        response = post(staff_client, "/big/", {"size": 5000}, key="big")
    assert response.status_code == 200 and len(response.content) == 5000, "the client still gets its response"
    assert not IdempotencyRecord.objects.exists()
    assert any("MAX_RESPONSE_BYTES" in r.getMessage() and "key=big" in r.getMessage() for r in caplog.records)
    small = post(staff_client, "/big/", {"size": 10}, key="small")
    assert post(staff_client, "/big/", {"size": 10}, key="small").content == small.content


def test_streaming_response_is_not_stored(staff_client, caplog):
    with caplog.at_level(logging.ERROR, logger="idempotency"):
        response = post(staff_client, "/stream/", key="s")
    assert b"".join(response.streaming_content) == b"ab"
    assert not IdempotencyRecord.objects.exists()
    assert any("streaming" in r.getMessage() for r in caplog.records)


# --- round trips ---------------------------------------------------------------------------


def idempotency_statements(queries) -> list[str]:
    """Statements the layer sent: transaction control (BEGIN, SAVEPOINT, ...) is not a statement."""
    control = ("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT")
    return [q["sql"] for q in queries if not q["sql"].lstrip().upper().startswith(control)]


@pytest.mark.django_db(transaction=True)
def test_round_trips_two_on_a_first_request_one_on_a_replay(client):
    body = {"amount": 1}
    with CaptureQueriesContext(connection) as first:
        response = post(client, "/bench/", body, key="rt")
    assert response.status_code == 201
    assert len(idempotency_statements(first.captured_queries)) == 2, first.captured_queries
    with CaptureQueriesContext(connection) as replay:
        response = post(client, "/bench/", body, key="rt")
    assert response["Idempotent-Replayed"] == "true"
    assert len(idempotency_statements(replay.captured_queries)) == 1, replay.captured_queries


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_round_trips_on_the_postgresql_wire(client):
    with pg_wire_queries(connection) as first:
        assert post(client, "/bench/", {"a": 1}, key="pg").status_code == 201
    assert len(first) == 2, f"a first request costs the claim and the completion: {first}"
    with pg_wire_queries(connection) as replay:
        assert post(client, "/bench/", {"a": 1}, key="pg")["Idempotent-Replayed"] == "true"
    assert len(replay) == 1, f"a replay costs one statement: {replay}"


def test_problem_bodies_are_json(staff_client):
    response = post(staff_client, "/transfers/")
    assert json.loads(response.content)["title"]
