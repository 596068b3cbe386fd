"""The public API's boundaries: bad input, aliases, settings, signals, metrics (no real waiting)."""

from __future__ import annotations

import math
import threading

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from prometheus_client import REGISTRY

import locks
from locks import InvalidLockBackend, LockNotAcquired, get_backend, lock
from locks.backends.db import DatabaseLockBackend
from locks.handler import backends
from locks.signals import lock_acquired, lock_released


def test_public_names_are_importable_from_the_app():
    for name in (
        "lock",
        "alock",
        "get_backend",
        "Lease",
        "LeaseInfo",
        "LockNotAcquired",
        "LockLost",
        "LockBackendUnavailable",
        "StaleFencingToken",
    ):
        assert hasattr(locks, name), f"locks.{name} is missing"


@pytest.mark.parametrize("name", ["", 42, None, b"bytes", "x" * 256, "nul\x00byte"])
def test_bad_names_are_rejected_naming_the_argument(name):
    with pytest.raises(ValueError, match="name"):
        with lock(name, ttl=1, timeout=0, backend="db"):
            pass
    with pytest.raises(ValueError, match="name"):
        get_backend("db").acquire(name, ttl=1)


def test_a_255_character_name_is_fine_for_validation():
    from locks.lease import validate_name

    assert validate_name("x" * 255) == "x" * 255


@pytest.mark.parametrize("ttl", [0, -1, -0.5, math.nan, math.inf, "5", True])
def test_bad_ttl_is_rejected_naming_the_argument(ttl):
    with pytest.raises(ValueError, match="ttl"):
        get_backend("db").acquire("x", ttl=ttl)


@pytest.mark.parametrize("timeout", [-1, -0.001, math.nan, "1", False])
def test_bad_timeout_is_rejected_naming_the_argument(timeout):
    with pytest.raises(ValueError, match="timeout"):
        get_backend("db").acquire("x", ttl=1, timeout=timeout)


def test_bad_blocking_is_rejected():
    with pytest.raises(ValueError, match="blocking"):
        get_backend("db").acquire("x", ttl=1, blocking="yes")


@pytest.mark.parametrize("unknown", ["nope", "", None, 3])
def test_unknown_backend_alias_names_the_argument(unknown):
    with pytest.raises(ImproperlyConfigured, match="backend"):
        get_backend(unknown)
    with pytest.raises(ValueError, match="backend"):
        with lock("x", ttl=1, backend=unknown):
            pass
    assert issubclass(InvalidLockBackend, ImproperlyConfigured) and issubclass(InvalidLockBackend, ValueError)


def test_aliases_resolve_once_and_default_follows_the_deployment(settings):
    assert get_backend("db") is get_backend("db"), "the handler must cache backends"
    assert isinstance(get_backend("db"), DatabaseLockBackend)
    expected = "RedisLockBackend" if "redis" in settings.LOCKS else "DatabaseLockBackend"
    assert type(get_backend()).__name__ == expected
    assert get_backend().store_key() == get_backend("redis" if "redis" in settings.LOCKS else "db").store_key()


def test_settings_change_resets_the_handler(settings):
    before = get_backend("db")
    with override_settings(LOCKS={**settings.LOCKS, "extra": {"BACKEND": "locks.backends.db.DatabaseLockBackend"}}):
        assert get_backend("extra").alias == "extra"
        assert get_backend("db") is not before
    with pytest.raises(ImproperlyConfigured, match="extra"):
        get_backend("extra")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"BACKEND": "locks.backends.nope.Missing"}, "could not be imported"),
        ({"BACKEND": "locks.backends.db.DatabaseLockBackend", "OPTIONS": {"BOGUS": 1}}, "unknown keys"),
        ({"BACKEND": "locks.backends.db.DatabaseLockBackend", "OPTIONS": {"DATABASE": "nope"}}, "DATABASES"),
        ({"BACKEND": "locks.backends.redis.RedisLockBackend"}, "LOCATION"),
        (
            {"BACKEND": "locks.backends.redis.RedisLockBackend", "LOCATION": "redis://x", "OPTIONS": {"bogus": 1}},
            "OPTIONS",
        ),
    ],
)
def test_bad_backend_configuration_names_the_alias(settings, config, message):
    with override_settings(LOCKS={**settings.LOCKS, "broken": config}):
        with pytest.raises(ImproperlyConfigured, match=message) as excinfo:
            backends.create("broken")
        assert "broken" in str(excinfo.value)


def test_system_checks_report_bad_lock_settings(settings):
    from locks.checks import check_lock_backends, check_lock_settings

    assert check_lock_settings(None) == [] and check_lock_backends(None) == []
    with override_settings(RINGMASTER={"LOCKS": {"DEFAULT_TTL": -1}}):
        assert [e.id for e in check_lock_settings(None)] == ["locks.E006"]
    with override_settings(RINGMASTER={"LOCKS": {"NOPE": 1}}):
        assert [e.id for e in check_lock_settings(None)] == ["locks.E001"]
    with override_settings(LOCKS={**settings.LOCKS, "broken": {"BACKEND": "locks.backends.nope.X"}}):
        assert [e.id for e in check_lock_backends(None)] == ["locks.E004"]
    with override_settings(LOCKS={"db": settings.LOCKS["db"]}):
        assert [e.id for e in check_lock_backends(None)] == ["locks.E002"]


def test_node_name_is_in_the_owner(settings):
    from locks.lease import new_owner

    settings.RINGMASTER = {"LOCKS": {"NODE_NAME": "node-7"}}
    owner = new_owner()
    assert owner.startswith("node-7:"), owner
    assert new_owner() != owner, "every acquire gets its own random part"


def test_a_changed_node_name_reaches_owners_after_it_was_read(settings):
    """Settings are kept once read (they are read on every acquire); a change must still show."""
    from locks.lease import new_owner

    settings.RINGMASTER = {"LOCKS": {"NODE_NAME": "node-8"}}
    assert new_owner().startswith("node-8:")
    settings.RINGMASTER = {"LOCKS": {"NODE_NAME": "node-9"}}
    assert new_owner().startswith("node-9:"), "a setting read before the change stayed in use"


def test_owners_stay_unique_across_threads():
    from locks.lease import new_owner

    owners: list[str] = []

    def make() -> None:
        owners.extend(new_owner() for _ in range(2000))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(owners)) == len(owners) == 8000, "two acquires got the same owner"
    assert len({owner.rsplit(":", 1)[1] for owner in owners}) == 8000, "the random part repeated"


@pytest.mark.django_db(transaction=True)
def test_signals_and_metrics_of_one_lock(alias):
    events = []

    def record(signal_name):
        def receiver(sender, **kwargs):
            events.append((signal_name, kwargs["name"], kwargs["token"], kwargs["owner"], kwargs["backend"]))

        return receiver

    on_acquired, on_released = record("acquired"), record("released")
    lock_acquired.connect(on_acquired)
    lock_released.connect(on_released)

    def sample(metric, **labels):
        return REGISTRY.get_sample_value(metric, {"backend": alias, **labels}) or 0.0

    acquired = sample("ringmaster_lock_acquire_attempts_total", outcome="acquired")
    missed = sample("ringmaster_lock_acquire_attempts_total", outcome="not_acquired")
    contention = sample("ringmaster_lock_contention_total")
    holds = sample("ringmaster_lock_hold_seconds_count")
    try:
        with lock("metrics-test", ttl=5, backend=alias) as lease:
            with pytest.raises(LockNotAcquired):
                with lock("metrics-test", timeout=0, backend=alias):
                    pass
    finally:
        lock_acquired.disconnect(on_acquired)
        lock_released.disconnect(on_released)
    assert events == [
        ("acquired", "metrics-test", lease.token, lease.owner, alias),
        ("released", "metrics-test", lease.token, lease.owner, alias),
    ]
    assert sample("ringmaster_lock_acquire_attempts_total", outcome="acquired") == acquired + 1
    assert sample("ringmaster_lock_acquire_attempts_total", outcome="not_acquired") == missed + 1
    assert sample("ringmaster_lock_contention_total") == contention + 1
    assert sample("ringmaster_lock_hold_seconds_count") == holds + 1


def test_metric_names_share_the_prefix():
    from locks.metrics import collectors

    assert all(c._name.startswith("ringmaster_lock_") for c in collectors())
