"""The database backend's advisory mode (PostgreSQL): what the contract suite does not already show.

The contract suite (test_contract.py) runs on this mode too, as the alias ``db_advisory``:
exclusion across 8 processes, SIGKILL, expiry, stale holders, auto-renew, force-release, async.
"""

from __future__ import annotations

import base64
import importlib
import json
import threading
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, connections, transaction

from locks import LockLost, get_backend
from locks.backends.db import DatabaseLockBackend
from locks.backends.pg_advisory import advisory_key, describe
from tests import services
from tests.locks.waiters import line_up
from tests.locks.workers import ADVISORY_ALIAS

pytestmark = pytest.mark.django_db(transaction=True)

advisory_migration = importlib.import_module("locks.migrations.0003_postgresql_advisory")
claim_migration = importlib.import_module("locks.migrations.0004_postgresql_advisory_claim")

ADVISORY = {"BACKEND": "locks.backends.db.DatabaseLockBackend", "OPTIONS": {"MODE": "advisory"}}


@pytest.fixture
def advisory():
    return get_backend(ADVISORY_ALIAS)


def advisory_locks_of(pid: int) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT objid, granted FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", [pid])
        return cursor.fetchall()


def queued(key: int) -> int:
    """How many sessions wait in PostgreSQL's queue for the advisory lock ``key``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1",
            [(key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF],
        )
        return cursor.fetchone()[0]


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("lock_name", ["plain", 'it\'s "quoted" \\ and ünïcode', "tab\tnew\nline\x01", "🔒" * 60])
def test_the_lease_text_is_base64_of_the_json_of_name_and_owner(lock_name):
    """held() of every version decodes it: the text must stay exactly json.dumps([name, owner])."""
    owner = 'node "7"\\:1:2:0a1b2c3d'
    decoded = base64.b64decode(describe(lock_name, owner)).decode()
    assert decoded == json.dumps([lock_name, owner], ensure_ascii=False)
    assert json.loads(decoded) == [lock_name, owner]


def test_unknown_mode_is_refused():
    with pytest.raises(ImproperlyConfigured, match="MODE"):
        DatabaseLockBackend("bad", {"OPTIONS": {"MODE": "advisroy"}})


@pytest.mark.embedded
def test_advisory_mode_needs_postgresql():
    with pytest.raises(ImproperlyConfigured, match="needs PostgreSQL"):
        DatabaseLockBackend("sqlite-advisory", ADVISORY)


@pytest.mark.services
def test_ttl_beyond_postgresql_timeouts_is_refused(advisory, name):
    with pytest.raises(ValueError, match="ttl"):
        advisory.acquire(name, ttl=30 * 24 * 3600)


@pytest.mark.services
def test_the_modes_are_separate_stores(advisory, name):
    """A name held in one mode is free in the other: each alias must be used for a name consistently."""
    table = get_backend("db")
    assert advisory.store_key() != table.store_key()
    with advisory.acquire(name, ttl=5), table.acquire(name, ttl=5, timeout=0) as other:
        assert other is not None


# --- the lock itself --------------------------------------------------------------------------------


@pytest.mark.services
def test_the_lock_is_a_transaction_lock_of_a_dedicated_connection(advisory, name):
    lease = advisory.acquire(name, ttl=5)
    conn = advisory.advisory._held[lease.owner]
    pid = conn.info.backend_pid
    connection.ensure_connection()
    assert pid != connection.connection.info.backend_pid, "the lock must not use Django's connection"
    assert advisory_locks_of(pid) == [(advisory_key(name) & 0xFFFFFFFF, True)]
    assert lease.release()
    assert advisory_locks_of(pid) == [], "a lock outlived its transaction: a session-level lock would leak"
    assert conn.info.transaction_status.name == "IDLE"
    again = advisory.acquire(name, ttl=5, timeout=0)
    assert advisory.advisory._held[again.owner] is conn, "the idle connection is reused for the next lease"
    assert again.release()


@pytest.mark.services
def test_a_lock_taken_inside_a_transaction_is_independent_of_it(advisory, name):
    class Rollback(Exception):
        pass

    with pytest.raises(Rollback):
        with transaction.atomic():
            lease = advisory.acquire(name, ttl=30)
            seen = []
            other = threading.Thread(
                target=lambda: (seen.append(advisory.acquire(name, timeout=0)), connections.close_all())
            )
            other.start()
            other.join()
            assert seen == [None], "a lock taken inside atomic() was invisible to another caller"
            raise Rollback
    assert advisory.verify(lease), "the caller's rollback dropped the lock"
    assert lease.release()


@pytest.mark.services
def test_the_server_ends_a_lease_that_is_not_renewed(advisory, name):
    lease = advisory.acquire(name, ttl=0.3)
    pid = advisory.advisory._held[lease.owner].info.backend_pid
    time.sleep(0.6)
    assert advisory_locks_of(pid) == [], "the server kept the lock past its lease"
    successor = advisory.acquire(name, ttl=5, timeout=0)
    assert successor is not None and successor.token > lease.token
    with pytest.raises(LockLost):
        lease.extend(5)
    assert lease.release() is False
    assert successor.release()


@pytest.mark.services
def test_verify_does_not_push_the_lease_further(advisory, name):
    """ensure_held() asks the server, re-arming its timer with what is left, not a whole new ttl."""
    lease = advisory.acquire(name, ttl=0.6)
    time.sleep(0.3)
    lease.ensure_held()
    time.sleep(0.5)
    successor = advisory.acquire(name, ttl=5, timeout=0)
    assert successor is not None, "a verify stretched the lease past its ttl"
    successor.release()


# --- waiting: PostgreSQL's queue ---------------------------------------------------------------------


@pytest.mark.services
def test_waiters_are_served_in_arrival_order(advisory, name):
    holder = advisory.acquire(name, ttl=30)
    threads, order = line_up(advisory, name, count=4, queued=lambda: queued(advisory_key(name)))
    holder.release()
    for thread in threads:
        thread.join()
    assert order == [0, 1, 2, 3], f"waiters were served out of order: {order}"


@pytest.mark.services
def test_a_released_lock_goes_to_the_queued_waiter_at_once(advisory, name):
    holder = advisory.acquire(name, ttl=30)
    got = []
    waiter = threading.Thread(target=lambda: got.append((advisory.acquire(name, ttl=5, timeout=5), time.monotonic())))
    waiter.start()
    deadline = time.monotonic() + 5
    while queued(advisory_key(name)) < 1:
        assert time.monotonic() < deadline, "the waiter never queued"
        time.sleep(0.005)
    released = time.monotonic()
    holder.release()
    assert advisory.acquire(name, timeout=0) is None, "a try took the lock from the queued waiter"
    waiter.join()
    lease, at = got[0]
    assert lease is not None and lease.token > holder.token
    assert at - released < 0.1, f"hand-off took {at - released:.3f}s"
    lease.release()


@pytest.mark.services
def test_a_waiter_without_a_timeout_waits_until_the_release(advisory, name):
    holder = advisory.acquire(name, ttl=30)
    got = []
    waiter = threading.Thread(target=lambda: got.append(advisory.acquire(name, ttl=5)))  # timeout=None
    waiter.start()
    deadline = time.monotonic() + 5
    while queued(advisory_key(name)) < 1:
        assert time.monotonic() < deadline, "the waiter never queued"
        time.sleep(0.005)
    holder.release()
    waiter.join(timeout=5)
    assert got and got[0] is not None and got[0].token > holder.token, "the waiter without a timeout got nothing"
    got[0].release()


# --- fencing tokens --------------------------------------------------------------------------------


@pytest.mark.services
def test_tokens_keep_increasing_across_a_new_backend_instance(advisory, name):
    first = advisory.acquire(name, ttl=5)
    first.release()
    fresh = DatabaseLockBackend("fresh", ADVISORY)
    try:
        second = fresh.acquire(name, ttl=5)
        assert second.token > first.token
        second.release()
    finally:
        fresh.advisory.close(held_too=True)


@pytest.mark.services
def test_tokens_never_repeat_when_a_crash_lost_the_sequence_s_last_values(advisory, name):
    """A crash empties the UNLOGGED guard; the WAL of the last nextval calls may be lost with it."""
    first = advisory.acquire(name, ttl=5)
    first.release()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM locks_advisory_guard")  # what crash recovery does to an UNLOGGED table
        cursor.execute("SELECT setval('locks_advisory_token', %s)", [first.token - 20])  # lost WAL
    advisory.advisory.close()  # a crash ends every session, the pooled lock connections' too
    second = advisory.acquire(name, ttl=5)
    assert second.token > first.token, "a token was handed out again after the simulated crash"
    assert second.token >= first.token - 20 + 2**32, "the new epoch did not move 2^32 past the recovered value"
    second.release()


@pytest.mark.services
@pytest.mark.slow
def test_tokens_never_go_backwards_across_a_real_postgresql_crash(name, monkeypatch):
    """A private PostgreSQL is stopped with -m immediate (a crash: recovery runs at the next start)."""
    import psycopg

    with services.private_postgres(database="locks") as pg:
        with psycopg.connect(pg.url.replace("postgres://", "postgresql://", 1), autocommit=True) as admin:
            for statement in advisory_migration.CREATE + claim_migration.CREATE:
                admin.execute(statement)
        settings_dict = dict(connections["default"].settings_dict)
        settings_dict.update(NAME="locks", HOST="127.0.0.1", PORT=str(pg.port), USER="postgres", PASSWORD="")
        private = connections["default"].__class__(settings_dict, "locks_private")
        backend = DatabaseLockBackend("private", ADVISORY)
        monkeypatch.setattr(backend, "connection", lambda: private)
        try:
            tokens = []
            for _ in range(3):
                lease = backend.acquire(name, ttl=5)
                tokens.append(lease.token)
                assert lease.release()
            holder = backend.acquire(name, ttl=5)
            tokens.append(holder.token)
            private.close()
            pg.stop("immediate")
            pg.start()
            assert not backend.verify(holder), "the lock survived the server's crash"
            assert holder.release() is False
            after = backend.acquire(name, ttl=5, timeout=5)
            assert after is not None
            assert after.token > max(tokens), f"token {after.token} after the crash, {max(tokens)} before"
            assert after.token >= max(tokens) + 2**32 - 32, "the crash did not start a new token epoch"
            after.release()
        finally:
            backend.advisory.close(held_too=True)
            private.close()


# --- operators --------------------------------------------------------------------------------------


@pytest.mark.services
def test_held_shows_the_lease_as_its_holder_has_it(advisory, name):
    odd = f'{name}:it\'s "quoted" \\ and ünïcode'
    with advisory.acquire(odd, ttl=30) as lease:
        lease.extend(60)
        (info,) = [info for info in advisory.held() if info.name == odd]
        assert (info.owner, info.token, info.backend) == (lease.owner, lease.token, ADVISORY_ALIAS)
        assert abs((info.expires_at - lease.expires_at).total_seconds()) < 0.5
        assert info.acquired_at <= info.expires_at
    assert not [info for info in advisory.held() if info.name == odd]


@pytest.mark.services
def test_force_release_ends_the_holder_s_session(advisory, name):
    lease = advisory.acquire(name, ttl=30)
    pid = advisory.advisory._held[lease.owner].info.backend_pid
    assert advisory.force_release(name, actor="test-operator")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
        assert cursor.fetchone()[0] == 0, "force_release returned before the holder's session ended"
    with pytest.raises(LockLost):
        lease.ensure_held()
    successor = advisory.acquire(name, timeout=0)
    assert successor is not None
    successor.release()
