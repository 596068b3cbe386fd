"""The heartbeat API's per-node rate limit: GCRA core, 429 problem+json with Retry-After, one cache call a beat."""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from django.core.management import call_command
from hypothesis import given
from hypothesis import strategies as st

from cluster import services
from monitoring import ratelimit
from monitoring.ratelimit import RateLimit, gcra


@pytest.fixture(autouse=True)
def empty_cache():
    """The limiter's state lives in the cache, which outlives a test's database: start each test empty."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def frozen_clock(monkeypatch):
    """The API reads the time once per beat: freeze it, so a slow machine refills no bucket mid-test."""
    from types import SimpleNamespace

    from monitoring import api

    clock = SimpleNamespace(now=1_000_000.0)
    monkeypatch.setattr(api, "time", SimpleNamespace(time=lambda: clock.now))
    return clock


def limited(settings, *, rate, burst):
    settings.RINGMASTER = {
        "CLUSTER": {"RING_CHECK_INTERVAL": 0},
        "MONITORING": {"HEARTBEAT_RATE": rate, "HEARTBEAT_BURST": burst},
    }


def beat(client, name, token, seq=1):
    return client.post(
        f"/api/v1/nodes/{name}/heartbeat",
        data=json.dumps({"incarnation": 1, "seq": seq}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


@pytest.fixture
def node_token(db):
    node, token = services.node_join(name="rl-1", actor="t")
    services.node_activate(node=node)
    return token


# --- the pure core ----------------------------------------------------------------------------


def test_a_burst_passes_then_the_next_beat_waits_one_period():
    limit = RateLimit(rate=2.0, burst=3)
    tat, now = None, 100.0
    for i in range(3):
        decision = gcra(tat=tat, now=now, limit=limit)
        assert decision.allowed, f"beat {i + 1} of a burst of 3 is allowed"
        tat = decision.tat
    refused = gcra(tat=tat, now=now, limit=limit)
    assert not refused.allowed and refused.retry_after == pytest.approx(0.5), "the 4th waits one period (1/rate)"
    assert refused.tat == tat, "a refused beat spends nothing"
    assert gcra(tat=tat, now=now + 0.5, limit=limit).allowed, "one period later one beat passes again"


def test_an_idle_node_gets_its_whole_burst_back():
    limit = RateLimit(rate=10.0, burst=5)
    tat = None
    for _ in range(5):
        tat = gcra(tat=tat, now=0.0, limit=limit).tat
    assert not gcra(tat=tat, now=0.0, limit=limit).allowed
    tat_later = tat
    for i in range(5):
        decision = gcra(tat=tat_later, now=10.0, limit=limit)
        assert decision.allowed, f"beat {i + 1} after a long pause is allowed"
        tat_later = decision.tat


@given(
    rate=st.floats(min_value=0.5, max_value=50),
    burst=st.integers(min_value=1, max_value=30),
    gaps=st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=200),
)
def test_accepted_beats_never_exceed_burst_plus_rate_times_time(rate, burst, gaps):
    limit = RateLimit(rate=rate, burst=burst)
    tat, now, accepted = None, 0.0, []
    for gap in gaps:
        now += gap
        decision = gcra(tat=tat, now=now, limit=limit)
        if decision.allowed:
            tat = decision.tat
            accepted.append(now)
    for i, start in enumerate(accepted):
        within = [t for t in accepted[i:] if t - start <= 1.0]
        # (The period is whole microseconds: its rounding may speed the rate up by a millionth.)
        assert len(within) <= burst + rate * 1.000001, "no one-second window holds more than burst + rate beats"


@pytest.mark.parametrize("rate, burst", [(0, 1), (-1, 1), (1, 0), (1, 1.5), (True, 1)])
def test_nonsense_limits_are_refused(rate, burst):
    with pytest.raises(ValueError):
        RateLimit(rate=rate, burst=burst)


# --- through the API ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_over_the_limit_is_429_problem_with_retry_after(client, node_token, settings, frozen_clock):
    limited(settings, rate=0.5, burst=3)
    for seq in range(3):
        assert beat(client, "rl-1", node_token, seq).status_code == 200, f"beat {seq + 1} is within the burst"
    response = beat(client, "rl-1", node_token, 4)
    assert response.status_code == 429, response.content
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:ringmaster:problem:rate-limited" and problem["status"] == 429
    assert response["Retry-After"] == "2", "one period of a 0.5/s limit, rounded up to whole seconds"
    frozen_clock.now += 2
    assert beat(client, "rl-1", node_token, 5).status_code == 200, "after Retry-After the node is welcome again"


@pytest.mark.django_db
def test_the_default_takes_a_burst_of_twenty_beats(client, node_token, frozen_clock):
    codes = [beat(client, "rl-1", node_token, seq).status_code for seq in range(20)]
    assert codes == [200] * 20, "the default (10/s, bursts of 20) leaves a 1 Hz node ample room"
    assert beat(client, "rl-1", node_token, 21).status_code == 429, "the 21st back-to-back beat is refused"


@pytest.mark.django_db
def test_the_limit_is_per_node(client, node_token, settings, frozen_clock):
    limited(settings, rate=0.1, burst=1)
    other, other_token = services.node_join(name="rl-2", actor="t")
    assert beat(client, "rl-1", node_token).status_code == 200
    assert beat(client, "rl-1", node_token).status_code == 429
    assert beat(client, "rl-2", other_token).status_code == 200, "another node has its own budget"


@pytest.mark.django_db
def test_requests_without_the_token_do_not_spend_the_nodes_budget(client, node_token, settings, frozen_clock):
    limited(settings, rate=0.1, burst=2)
    for _ in range(10):
        assert beat(client, "rl-1", "forged").status_code == 401
    assert beat(client, "rl-1", node_token).status_code == 200, "forged beats cannot starve a real node"


@pytest.mark.django_db
def test_no_limit_when_the_rate_is_none(client, node_token, settings):
    limited(settings, rate=None, burst=1)
    assert [beat(client, "rl-1", node_token, s).status_code for s in range(5)] == [200] * 5


@pytest.mark.django_db
def test_a_rotated_token_is_refused_at_once_through_the_command(client, node_token, capsys):
    assert beat(client, "rl-1", node_token).status_code == 200
    call_command("cluster_nodes", "rotate-token", "rl-1")
    new_token = capsys.readouterr().out.strip().rsplit(" ", 1)[-1]
    response = beat(client, "rl-1", node_token)
    assert response.status_code == 401, "the old token stops working with the rotation"
    assert response.json()["detail"] == "unknown or revoked token"
    assert beat(client, "rl-1", new_token).status_code == 200, "the new token works at once"


@pytest.mark.services
@pytest.mark.django_db
def test_one_redis_round_trip_per_beat(node_token, monkeypatch):
    import redis

    limiter = ratelimit.get_limiter()
    assert isinstance(limiter, ratelimit.RedisCacheRateLimiter), "on Redis the limiter runs one atomic script"
    limiter.hit("rl-1", now=1000.0)  # loads the script once
    calls = []
    original = redis.Redis.execute_command

    def counting(self, *args, **kwargs):
        calls.append(args[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "execute_command", counting)
    for i in range(5):
        assert limiter.hit("rl-1", now=1000.0 + i).allowed
    assert calls == ["EVALSHA"] * 5, f"one command per beat, got {calls}"


@pytest.mark.parametrize(
    "overrides, check_id",
    [
        ({"HEARTBEAT_RATE": 0}, "monitoring.E002"),
        ({"HEARTBEAT_BURST": 0}, "monitoring.E002"),
        ({"HEARTBEAT_RATE_CACHE": "nope"}, "monitoring.E003"),
    ],
)
def test_a_bad_limit_setting_fails_the_system_checks(settings, overrides, check_id):
    from monitoring.checks import check_heartbeat_rate_limit

    settings.RINGMASTER = {"MONITORING": overrides}
    assert [error.id for error in check_heartbeat_rate_limit(None)] == [check_id]
    settings.RINGMASTER = {"MONITORING": {"HEARTBEAT_RATE": None, "HEARTBEAT_RATE_CACHE": "nope"}}
    assert check_heartbeat_rate_limit(None) == [], "no limit, nothing to check"
