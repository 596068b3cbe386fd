"""Fencing on the storage side (locks.fencing) with tokens from real leases.

``tests`` is not an app, so the fenced rows are ``LockCounter`` rows of names no lock uses:
its ``last_token`` is a big integer column like any ``FenceTokenField``.
"""

from __future__ import annotations

import pytest

from locks import StaleFencingToken
from locks.fencing import FenceTokenField, fenced_update
from locks.models import LockCounter

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def row(name):
    LockCounter.objects.create(name=f"fenced:{name}", last_token=0)
    return LockCounter.objects.filter(name=f"fenced:{name}")


def test_newer_and_equal_tokens_write_older_ones_are_refused(row):
    assert fenced_update(row, token=5, token_field="last_token", streak=1) == 1
    assert fenced_update(row, token=5, token_field="last_token", streak=2) == 1, "the same holder may write again"
    with pytest.raises(StaleFencingToken) as excinfo:
        fenced_update(row, token=4, token_field="last_token", streak=3)
    assert excinfo.value.token == 4 and "locks.LockCounter" in str(excinfo.value)
    assert row.get().streak == 2 and row.get().last_token == 5


def test_a_paused_holder_is_fenced_off_by_its_successor(backend, name, row):
    old = backend.acquire(name, ttl=0.2)
    import time

    time.sleep(0.3)  # the old holder "pauses" past its lease
    new = backend.acquire(name, ttl=10, timeout=2)
    assert fenced_update(row, token=new.token, token_field="last_token", streak=7) == 1
    with pytest.raises(StaleFencingToken):
        fenced_update(row, token=old.token, token_field="last_token", streak=666)
    assert row.get().streak == 7
    new.release()


def test_no_matching_row_is_not_stale(row):
    assert fenced_update(row.none(), token=1, token_field="last_token") == 0


@pytest.mark.parametrize("token", [-1, 1.5, "3", True, None])
def test_bad_tokens(row, token):
    with pytest.raises(ValueError, match="token"):
        fenced_update(row, token=token, token_field="last_token")


def test_fence_token_field_defaults_to_zero():
    assert FenceTokenField().default == 0
