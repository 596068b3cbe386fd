"""The database backend itself: its tables, atomic claims, transactions, fairness, a database that is down."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from django.db import connection, connections, transaction

from locks import LockBackendUnavailable, get_backend
from locks.backends.db import DatabaseLockBackend
from locks.models import LockCounter, LockLease, LockWaiter
from tests.locks.waiters import line_up

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def db_backend():
    return get_backend("db")


def test_one_row_per_held_lock_and_a_counter_that_survives_release(db_backend, name):
    lease = db_backend.acquire(name, ttl=30)
    row = LockLease.objects.get(name=name)
    assert (row.owner, row.token) == (lease.owner, lease.token)
    assert lease.release()
    assert not LockLease.objects.filter(name=name).exists(), "a released lock leaves no lease row"
    assert LockCounter.objects.get(name=name).last_token == lease.token, "the counter row outlives the lease"
    again = db_backend.acquire(name, ttl=30)
    assert again.token > lease.token
    again.release()


def test_concurrent_claims_grant_exactly_one(db_backend, name):
    """Threads race try-once claims on a free name, round after round: one winner each time."""
    rounds, threads = 15, 6
    for _ in range(rounds):
        barrier = threading.Barrier(threads)
        winners = []

        def race(barrier=barrier, winners=winners):
            barrier.wait()
            lease = db_backend.acquire(name, ttl=30, timeout=0)
            if lease is not None:
                winners.append(lease)
            connections.close_all()

        workers = [threading.Thread(target=race) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert len(winners) == 1, f"{len(winners)} claims won the same free lock"
        assert winners[0].release()


def test_waiters_are_served_in_arrival_order(db_backend, name, settings):
    settings.RINGMASTER = {"LOCKS": {"MAX_BARGES": 0}}
    holder = db_backend.acquire(name, ttl=30)
    threads, order = line_up(db_backend, name, count=4, queued=LockWaiter.objects.filter(name=name).count)
    holder.release()
    for thread in threads:
        thread.join()
    assert order == [0, 1, 2, 3], f"waiters were served out of order: {order}"
    assert not LockWaiter.objects.filter(name=name).exists(), "served waiters leave no ticket behind"


def test_a_waiter_that_gives_up_leaves_the_line(db_backend, name):
    holder = db_backend.acquire(name, ttl=30)
    assert db_backend.acquire(name, ttl=5, timeout=0.1) is None
    assert not LockWaiter.objects.filter(name=name).exists()
    holder.release()


def test_a_lock_taken_inside_a_transaction(db_backend, name):
    """PostgreSQL: visible to others at once and kept after a rollback; SQLite: joins the transaction."""
    seen_by_other = []

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback):
        with transaction.atomic():
            lease = db_backend.acquire(name, ttl=30)
            assert lease is not None
            if connection.vendor == "postgresql":
                other = threading.Thread(
                    target=lambda: (seen_by_other.append(db_backend.acquire(name, timeout=0)), connections.close_all())
                )
                other.start()
                other.join()
                assert seen_by_other == [None], "a lock taken inside atomic() was invisible to another connection"
            raise Rollback
    if connection.vendor == "postgresql":
        assert db_backend.verify(lease), "the caller's rollback dropped a lock held on the lock connection"
        assert lease.release()
    else:
        # Documented: on SQLite the lock joins the caller's transaction, so its rollback drops the lease.
        assert not db_backend.verify(lease)
        assert lease.release() is False


@pytest.mark.services
def test_postgresql_lock_tables_are_unlogged():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, relpersistence FROM pg_class WHERE relname IN "
            "('locks_locklease', 'locks_lockcounter', 'locks_lockwaiter', 'locks_lockaudit')"
        )
        persistence = dict(cursor.fetchall())
    assert persistence == {
        "locks_locklease": "u",
        "locks_lockcounter": "u",
        "locks_lockwaiter": "u",
        "locks_lockaudit": "p",
    }


def test_tokens_never_go_backwards_when_the_counter_is_lost(db_backend, name):
    """An UNLOGGED table is emptied by a PostgreSQL crash: tokens restart from the clock, past the old ones."""
    first = db_backend.acquire(name, ttl=30)
    first.release()
    LockCounter.objects.filter(name=name).delete()
    second = db_backend.acquire(name, ttl=30)
    assert second.token > first.token
    assert second.release()
    LockCounter.objects.filter(name=name).update(last_token=1)  # an old backup restored
    third = db_backend.acquire(name, ttl=30)
    assert third.token > second.token
    third.release()


def test_tokens_increase_when_the_counter_is_lost_between_grants_of_one_millisecond(db_backend, name):
    """Grants come faster than a millisecond: the clock floor must still be finer than that."""
    tokens = []
    for _ in range(30):
        lease = db_backend.acquire(name, ttl=30)
        tokens.append(lease.token)
        assert lease.release()
        LockCounter.objects.filter(name=name).delete()
    assert tokens == sorted(set(tokens)), f"tokens repeated or went back: {tokens}"


@pytest.mark.embedded
def test_sqlite_is_new_enough():
    assert sqlite3.sqlite_version_info >= (3, 35, 0)


@pytest.fixture
def down_backend(monkeypatch):
    """A database lock backend whose database does not answer (a closed port, or an unopenable file)."""
    settings_dict = dict(connections["default"].settings_dict)
    if settings_dict["ENGINE"].endswith("sqlite3"):
        settings_dict["NAME"] = "/nonexistent-dir/locks.sqlite3"
    else:
        from tests.services import free_port

        settings_dict.update(PORT=str(free_port()), HOST="127.0.0.1")
        settings_dict["OPTIONS"] = {**settings_dict.get("OPTIONS", {}), "connect_timeout": 2}
    down = connections["default"].__class__(settings_dict, "locks_down")
    backend = DatabaseLockBackend("down", {"BACKEND": "x", "OPTIONS": {}})
    monkeypatch.setattr(backend, "connection", lambda: down)
    yield backend
    down.close()


def test_database_down_raises_backend_unavailable(down_backend):
    started = time.monotonic()
    with pytest.raises(LockBackendUnavailable, match="down"):
        down_backend.acquire("x", ttl=5, timeout=1)
    with pytest.raises(LockBackendUnavailable, match="down"):
        down_backend.acquire("x", ttl=5, timeout=0)
    assert time.monotonic() - started < 10, "a dead database must fail fast"


@pytest.mark.django_db(transaction=False)
def test_works_inside_a_plain_django_db_test(db_backend, name):
    """pytest-django's default wraps the test in a transaction; the lock still works (see the module docstring)."""
    with db_backend.acquire(name, ttl=5) as lease:
        assert db_backend.verify(lease)
        assert db_backend.acquire(name, timeout=0) is None
    again = db_backend.acquire(name, timeout=0)
    assert again is not None
    assert again.release()
