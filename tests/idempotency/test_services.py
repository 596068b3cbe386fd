"""Claims, lease takeover, fencing and the reaper, through idempotency.services with an injected clock."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from idempotency import IdempotencyInProgress, StaleFencingToken, idempotent
from idempotency.models import IdempotencyRecord
from idempotency.services import (
    record_claim,
    record_complete,
    record_release,
    record_renew_lease,
    records_purge_expired,
)

pytestmark = pytest.mark.django_db

TTL = timedelta(hours=1)
LEASE = 30.0


def claim(now, *, fingerprint="fp-1", key="k1", lease=LEASE, ttl=TTL):
    return record_claim(scope="fn:test", key=key, fingerprint=fingerprint, ttl=ttl, lease_seconds=lease, now=now)


def test_claim_outcomes_in_one_statement(django_assert_num_queries):
    t0 = timezone.now()
    with django_assert_num_queries(1):
        first = claim(t0)
    assert first.outcome == "claimed" and first.token == 1
    assert first.record.locked_until == t0 + timedelta(seconds=LEASE)
    with django_assert_num_queries(1):
        assert claim(t0).outcome == "in_progress"
    assert claim(t0, fingerprint="other").outcome == "mismatch"
    record_complete(record=first.record, token=1, ttl=TTL, result={"a": 1}, now=t0)
    with django_assert_num_queries(1):
        replay = claim(t0)
    assert replay.outcome == "completed" and replay.record.result == {"a": 1}
    assert replay.record.replay_count == 1
    assert claim(t0, fingerprint="other").outcome == "mismatch"
    assert IdempotencyRecord.objects.get().replay_count == 1, "a mismatch is not a replay"


def test_no_takeover_while_the_lease_runs():
    t0 = timezone.now()
    first = claim(t0)
    almost = claim(t0 + timedelta(seconds=LEASE - 1))
    assert almost.outcome == "in_progress"
    assert almost.record.fencing_token == first.token == 1
    assert almost.retry_after == 1


def test_takeover_after_lease_expiry_gets_a_higher_token_and_fences_the_old_holder():
    t0 = timezone.now()
    stale = claim(t0)
    later = t0 + timedelta(seconds=LEASE + 1)
    successor = claim(later)
    assert successor.outcome == "claimed"
    assert successor.token == stale.token + 1
    assert successor.record.owner != stale.record.owner

    with pytest.raises(StaleFencingToken):
        record_complete(record=stale.record, token=stale.token, ttl=TTL, result="stale", now=later)
    assert not record_renew_lease(record_id=stale.record.pk, token=stale.token, lease_seconds=LEASE, now=later)
    assert not record_release(record=stale.record, token=stale.token), "the stale holder cannot release either"

    record_complete(record=successor.record, token=successor.token, ttl=TTL, result="fresh", now=later)
    with pytest.raises(StaleFencingToken):
        record_complete(record=stale.record, token=stale.token, ttl=TTL, result="stale", now=later)
    assert IdempotencyRecord.objects.get().result == "fresh"


def test_expired_lease_with_another_fingerprint_is_a_mismatch_not_a_takeover():
    t0 = timezone.now()
    claim(t0)
    assert claim(t0 + timedelta(seconds=LEASE + 1), fingerprint="fp-2").outcome == "mismatch"


def test_renewal_keeps_the_lease():
    t0 = timezone.now()
    holder = claim(t0)
    assert record_renew_lease(record_id=holder.record.pk, token=1, lease_seconds=LEASE, now=t0 + timedelta(seconds=20))
    assert claim(t0 + timedelta(seconds=LEASE + 1)).outcome == "in_progress", "the renewed lease still runs"


def test_expired_completed_key_is_claimed_afresh():
    t0 = timezone.now()
    first = claim(t0, ttl=timedelta(minutes=5))
    record_complete(record=first.record, token=1, ttl=timedelta(minutes=5), result=1, now=t0)
    assert claim(t0 + timedelta(minutes=4)).outcome == "completed"
    fresh = claim(t0 + timedelta(minutes=6), fingerprint="new-payload")
    assert fresh.outcome == "claimed", "after expiry the key is free, whatever the payload"
    assert fresh.token == 2 and fresh.record.result is None and fresh.record.replay_count == 0


def test_expired_record_with_a_live_lease_is_not_taken():
    t0 = timezone.now()
    claim(t0, ttl=timedelta(seconds=10), lease=60)
    assert claim(t0 + timedelta(seconds=20), fingerprint="other").outcome == "mismatch"


def test_release_frees_the_key():
    t0 = timezone.now()
    holder = claim(t0)
    assert record_release(record=holder.record, token=holder.token)
    assert claim(t0).outcome == "claimed"


# --- the reaper ----------------------------------------------------------------------------


def make_records(now, *, expired: int, live: int, running_expired: int = 0, dead_expired: int = 0):
    past, future = now - timedelta(minutes=1), now + timedelta(hours=1)
    rows = []
    for i in range(expired):
        rows.append(IdempotencyRecord(scope="s", key=f"e{i}", fingerprint="f", state="completed", expires_at=past))
    for i in range(live):
        rows.append(IdempotencyRecord(scope="s", key=f"l{i}", fingerprint="f", state="completed", expires_at=future))
    for i in range(running_expired):
        rows.append(IdempotencyRecord(scope="s", key=f"r{i}", fingerprint="f", expires_at=past, locked_until=future))
    for i in range(dead_expired):
        rows.append(IdempotencyRecord(scope="s", key=f"d{i}", fingerprint="f", expires_at=past, locked_until=past))
    for row in rows:
        row.created_at = now - timedelta(hours=2)
    IdempotencyRecord.objects.bulk_create(rows)


def test_reaper_deletes_only_expired_records_in_batches(django_assert_max_num_queries):
    now = timezone.now()
    make_records(now, expired=25, live=7, running_expired=2, dead_expired=3)
    with django_assert_max_num_queries(2 * 4 + 1):  # a select and a delete per batch of 10
        assert records_purge_expired(now=now, batch_size=10) == 28
    remaining = set(IdempotencyRecord.objects.values_list("key", flat=True))
    assert remaining == {f"l{i}" for i in range(7)} | {"r0", "r1"}, "live keys and running attempts stay"


def test_purge_command_and_task(capsys):
    now = timezone.now()
    make_records(now, expired=3, live=1)
    call_command("purge_idempotency", "--batch-size", "2")
    assert "Deleted 3 expired idempotency records." in capsys.readouterr().out
    make_records(now + timedelta(seconds=1), expired=0, live=0, dead_expired=1)

    from idempotency.tasks import purge_expired

    assert purge_expired.apply().get() == 1
    assert IdempotencyRecord.objects.count() == 1


def test_reaper_runs_on_the_beat_schedule(settings):
    entries = [e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "idempotency.purge_expired"]
    assert len(entries) == 1 and entries[0]["schedule"] > 0


@pytest.mark.django_db(transaction=True)
def test_lease_keeper_renews_long_work(idem_settings):
    """Real time, a short lease: a call outliving its lease is renewed, so a duplicate cannot take over."""
    idem_settings(LEASE_SECONDS=1.0)
    runs: list[int] = []
    duplicate: list = []

    @idempotent(key="long:{n}")
    def long_work(n: int) -> int:
        runs.append(n)
        time.sleep(2.0)
        return n

    def try_duplicate():
        time.sleep(1.5)  # past the first lease of 1 s
        try:
            duplicate.append(long_work(1))
        except IdempotencyInProgress as exc:
            duplicate.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=try_duplicate)
    thread.start()
    assert long_work(1) == 1
    thread.join()
    assert runs == [1], "the work ran once"
    if connection.vendor == "postgresql":
        assert isinstance(duplicate[0], IdempotencyInProgress), "the renewed lease kept the duplicate out"
    else:
        # SQLite: the work's transaction holds the write lock, so the duplicate waits and gets the result.
        assert duplicate == [1], duplicate


@pytest.mark.django_db(transaction=True)
def test_racing_takeovers_have_one_winner():
    """Threads, each with its own connection, race to take over one dead lease: one wins, token 2."""
    t0 = timezone.now()
    claim(t0)
    later = t0 + timedelta(seconds=LEASE + 1)
    barrier = threading.Barrier(6)
    outcomes: list[tuple[str, int]] = []

    def attempt():
        try:
            barrier.wait()
            result = claim(later)
            outcomes.append((result.outcome, result.token))
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [("claimed", 2)] + [("in_progress", 2)] * 5, outcomes


def test_lease_keeper_wakes_up_for_a_lease_due_before_its_next_look(monkeypatch):
    """The keeper is only woken for a lease due before the one it waits for, and then renews it in time."""
    from idempotency.leases import LeaseKeeper

    keeper = LeaseKeeper()
    renewed: list[int] = []
    monkeypatch.setattr(keeper, "_renew", lambda lease: renewed.append(lease.record_id) or True)
    long = keeper.register(record_id=1, token=1, lease_seconds=60.0, using="default", scope="s", key="long")
    time.sleep(0.1)  # the keeper now waits 20 s for the long lease
    short = keeper.register(record_id=2, token=1, lease_seconds=0.3, using="default", scope="s", key="short")
    deadline = time.monotonic() + 2.0
    while 2 not in renewed and time.monotonic() < deadline:
        time.sleep(0.01)
    keeper.unregister(short)
    keeper.unregister(long)
    assert 2 in renewed, "the short lease (due in 0.1 s) was renewed although the keeper waited for a later one"
    assert 1 not in renewed, "the long lease is not due yet"


@pytest.mark.django_db(transaction=True)
def test_a_record_read_from_a_row_in_a_thread_keeps_no_connection_alive():
    """A worker thread's connection is dropped with the thread, whatever record_from_row cached."""
    import gc
    import weakref

    from django.db import connections

    from idempotency.services import record_from_row

    stored = claim(timezone.now(), key="from-row").record
    seen = {}

    def worker():
        conn = connections["default"]
        with conn.cursor() as cursor:
            cursor.execute("SELECT * FROM idempotency_idempotencyrecord WHERE id = %s", [stored.pk])
            columns, row = [c[0] for c in cursor.description], cursor.fetchone()
        seen["record"] = record_from_row(using="default", columns=columns, row=row)
        seen["conn"] = weakref.ref(conn)
        conn.close()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    del thread
    record = seen.pop("record")
    assert (record.pk, record.key, record.fencing_token, record.state) == (stored.pk, "from-row", 1, "in_progress")
    assert record.locked_until == stored.locked_until and record.created_at.tzinfo is not None
    gc.collect()
    assert seen["conn"]() is None, "the thread's connection was freed"
