"""``@idempotent`` on plain functions: stored results, mismatches, in-progress, transactions."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection

from idempotency import (
    IdempotencyInProgress,
    IdempotencyKeyMismatch,
    InvalidIdempotencyKey,
    idempotent,
)
from idempotency.models import IdempotencyRecord
from idempotency.services import record_claim, record_complete

pytestmark = pytest.mark.django_db

calls: list[tuple] = []


@idempotent(key="transfer:{transfer_id}", ttl=timedelta(days=1))
def transfer(transfer_id: int, amount: int, memo: str = "") -> dict:
    calls.append(("transfer", transfer_id, amount))
    Group.objects.create(name=f"transfer:{transfer_id}:{len(calls)}")
    return {"transfer_id": transfer_id, "amount": amount, "run": len(calls)}


@idempotent(key=lambda order, **_: f"order-{order['id']}")
def ship(order: dict, *, express: bool = False) -> list:
    calls.append(("ship", order["id"]))
    return [order["id"], express]


@idempotent(key="{user.pk}:{action}")
def audit(user, action: str) -> str:
    calls.append(("audit", action))
    return action


@idempotent(key="bad:{n}")
def returns_a_set(n: int):
    calls.append(("set", n))
    Group.objects.create(name=f"set:{n}")
    return {n}


@idempotent(key="fails:{n}")
def fails_first(n: int) -> int:
    calls.append(("fails", n))
    Group.objects.create(name=f"fails:{n}:{len(calls)}")
    if sum(1 for c in calls if c[0] == "fails") == 1:
        raise RuntimeError("first attempt fails")
    return n


@idempotent(key="{key}")
def anything(key: str) -> None:
    calls.append(("anything", key))


@pytest.fixture(autouse=True)
def _clear_calls():
    calls.clear()


def test_first_call_runs_and_later_calls_return_the_stored_result():
    first = transfer(7, amount=100)
    assert first == {"transfer_id": 7, "amount": 100, "run": 1}
    assert transfer(7, amount=100) == first
    assert transfer(transfer_id=7, amount=100, memo="") == first, "defaults and keywords bind the same"
    assert calls == [("transfer", 7, 100)]
    record = IdempotencyRecord.objects.get()
    assert record.scope == "fn:tests.idempotency.test_functions.transfer"
    assert record.key == "transfer:7" and record.state == "completed" and record.replay_count == 2


def test_different_keys_run_separately():
    transfer(1, amount=1)
    transfer(2, amount=1)
    assert len(calls) == 2


def test_same_key_with_different_arguments_raises_mismatch():
    transfer(8, amount=100)
    with pytest.raises(IdempotencyKeyMismatch) as info:
        transfer(8, amount=999)
    assert info.value.key == "transfer:8"
    assert "different arguments" in str(info.value)
    assert len(calls) == 1


def test_callable_keys_and_attribute_templates(django_user_model):
    assert ship({"id": 3}, express=True) == [3, True]
    assert ship({"id": 3}, express=True) == [3, True]
    user = django_user_model.objects.create_user(username="u", password="pw-u-1")
    assert audit(user, "login") == "login"
    assert audit(user, "login") == "login"
    assert [c[0] for c in calls] == ["ship", "audit"]
    assert IdempotencyRecord.objects.filter(key=f"{user.pk}:login").exists()


def test_template_naming_an_unknown_argument_fails_at_decoration():
    with pytest.raises(ValueError, match="transfer_id"):

        @idempotent(key="x:{transfer_id}")
        def wrong(amount: int) -> int:
            return amount


def test_invalid_keys_are_refused_before_anything_runs():
    with pytest.raises(InvalidIdempotencyKey, match="255"):
        anything("k" * 256)
    with pytest.raises(InvalidIdempotencyKey, match="printable ASCII"):
        anything("caf\u00e9")
    with pytest.raises(InvalidIdempotencyKey, match="empty"):
        anything("")
    assert calls == []


def test_non_json_result_raises_type_error_naming_the_function_and_rolls_back():
    with pytest.raises(TypeError, match="returns_a_set") as info:
        returns_a_set(1)
    assert "JSON-serialisable" in str(info.value)
    assert not Group.objects.filter(name="set:1").exists(), "the call's writes are rolled back"
    assert not IdempotencyRecord.objects.exists(), "the key is released"


def test_exception_rolls_back_and_releases_the_key():
    with pytest.raises(RuntimeError):
        fails_first(5)
    assert not Group.objects.filter(name__startswith="fails:5").exists()
    assert not IdempotencyRecord.objects.exists()
    assert fails_first(5) == 5
    assert fails_first(5) == 5
    assert Group.objects.filter(name__startswith="fails:5").count() == 1


def test_oversized_result_is_refused(settings):
    settings.RINGMASTER = {**settings.RINGMASTER, "IDEMPOTENCY": {"MAX_RESPONSE_BYTES": 10}}
    with pytest.raises(ValueError, match="MAX_RESPONSE_BYTES"):
        transfer(9, amount=1)
    assert not IdempotencyRecord.objects.exists()


def _hold(key: str, fingerprint: str, lease: float = 30.0):
    return record_claim(
        scope="fn:tests.idempotency.test_functions.anything",
        key=key,
        fingerprint=fingerprint,
        ttl=timedelta(hours=1),
        lease_seconds=lease,
    )


def _fingerprint_of_anything(key: str) -> str:
    anything(key)
    record = IdempotencyRecord.objects.get(key=key)
    record.delete()
    calls.clear()
    return record.fingerprint


def test_call_while_another_runs_raises_in_progress():
    fingerprint = _fingerprint_of_anything("busy")
    _hold("busy", fingerprint, lease=20)
    with pytest.raises(IdempotencyInProgress) as info:
        anything("busy")
    assert 1 <= info.value.retry_after <= 20
    assert calls == []


@pytest.mark.django_db(transaction=True)
def test_wait_returns_the_result_once_the_other_attempt_completes():
    fingerprint = _fingerprint_of_anything("later")
    held = _hold("later", fingerprint)

    def finish_soon():
        record_complete(record=held.record, token=held.token, ttl=timedelta(hours=1), result=None)
        connection.close()

    timer = threading.Timer(0.3, finish_soon)
    timer.start()
    try:
        waiting = idempotent(key="{key}", wait=5, scope="fn:tests.idempotency.test_functions.anything")(
            anything.__wrapped__
        )
        assert waiting("later") is None
    finally:
        timer.join()
    assert calls == [], "the waiting call got the stored result without running"


def test_wait_gives_up_with_in_progress():
    fingerprint = _fingerprint_of_anything("stuck")
    _hold("stuck", fingerprint)
    waiting = idempotent(key="{key}", wait=0.2, scope="fn:tests.idempotency.test_functions.anything")(
        anything.__wrapped__
    )
    with pytest.raises(IdempotencyInProgress):
        waiting("stuck")


def test_non_atomic_functions_complete_in_autocommit():
    @idempotent(key="na:{n}", atomic=False)
    def non_atomic(n: int) -> int:
        calls.append(("na", n))
        return n * 2

    assert non_atomic(2) == 4 and non_atomic(2) == 4
    assert calls == [("na", 2)]


def test_options_are_exposed_for_the_task_decorator():
    options = transfer.idempotency
    assert options.key == "transfer:{transfer_id}"
    assert options.ttl == timedelta(days=1)
    assert options.scope == "fn:tests.idempotency.test_functions.transfer"


def test_decorator_arguments_are_validated():
    with pytest.raises(ValueError, match="wait"):
        idempotent(key="k", wait=-1)
    with pytest.raises(ValueError, match="ttl"):
        idempotent(key="k", ttl=timedelta(0))
    with pytest.raises(TypeError, match="key"):
        idempotent(key=42)
