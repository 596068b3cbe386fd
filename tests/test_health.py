"""The liveness and readiness probes."""

from __future__ import annotations

import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db


def test_healthz_is_ok_without_io(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_every_service_with_latency(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body["checks"]) == {"database", "cache", "channel_layer", "broker"}
    for name, check in body["checks"].items():
        assert check["ok"] is True, name
        assert check["latency_ms"] >= 0


def redis_settings(url: str) -> dict:
    return {
        "CACHES": {
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": url,
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
            }
        },
        "CHANNEL_LAYERS": {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [{"address": url, "socket_connect_timeout": 1}]},
            }
        },
    }


@pytest.fixture
def broker_at():
    """Point the Celery app's broker somewhere for one test (readyz opens a fresh connection each time;
    the app's publishing pools are left alone: closing them would break later tests)."""
    from celery import current_app

    saved = current_app.conf.broker_url, current_app.conf.broker_transport_options

    def point(url: str) -> None:
        current_app.conf.broker_url = url
        current_app.conf.broker_transport_options = {"socket_connect_timeout": 1}

    yield point
    current_app.conf.broker_url, current_app.conf.broker_transport_options = saved


@pytest.mark.slow
def test_readyz_turns_503_when_redis_stops(client, private_redis, broker_at):
    from tests import services

    with override_settings(**redis_settings(private_redis)):
        broker_at(private_redis)
        assert client.get("/readyz").status_code == 200
        # Stop that Redis: the same probe must now report the failing checks by name.
        import redis

        redis.Redis.from_url(private_redis).shutdown(nosave=True)
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert {"cache", "channel_layer", "broker"} <= set(body["failing"])
    assert "database" not in body["failing"]
    assert body["checks"]["cache"]["ok"] is False
    assert services  # the private Redis came from tests.services


def test_readyz_503_when_redis_unreachable(client, broker_at):
    from tests.services import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with override_settings(**redis_settings(url)):
        broker_at(url)
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == 503
    assert "cache" in response.json()["failing"]
