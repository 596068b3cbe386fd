"""The contract every lock backend keeps, run against each real backend of the pass.

Services pass: the database backend on PostgreSQL and the Redis backend; embedded pass: the
database backend on SQLite. Real processes for exclusion and crashes, real time where leases
must really expire.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings

from locks import LockLost, LockNotAcquired, alock, get_backend, lock
from locks.models import LockAudit
from locks.signals import lock_lost
from tests.locks import workers
from tests.locks.workers import ADVISORY_ALIAS

pytestmark = pytest.mark.django_db(transaction=True)

SPAWN = multiprocessing.get_context("spawn")


def db_name() -> str:
    return str(settings.DATABASES["default"]["NAME"])


def wait_for_file(path: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} did not appear within {timeout}s"
        time.sleep(0.01)
    return json.loads(path.read_text())


# --- exclusion and crashes (real processes) --------------------------------------------------------


@pytest.mark.slow
def test_eight_processes_never_overlap_and_lose_no_update(alias, name, tmp_path):
    procs, rounds = 8, 300
    counter = tmp_path / "counter"
    counter.write_text("0")
    barrier = SPAWN.Barrier(procs)
    outs = [tmp_path / f"out{i}.json" for i in range(procs)]
    children = [
        SPAWN.Process(target=workers.contend, args=(alias, name, rounds, str(counter), str(out), db_name(), barrier))
        for out in outs
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert all(child.exitcode == 0 for child in children), f"a worker failed: {[c.exitcode for c in children]}"
    assert int(counter.read_text()) == procs * rounds, "a read-modify-write was lost: two holders overlapped"
    results = [json.loads(out.read_text()) for out in outs]
    sections = sorted(tuple(s) for r in results for s in r["sections"])
    overlaps = [(a, b) for a, b in zip(sections, sections[1:], strict=False) if b[0] < a[1]]
    assert not overlaps, f"{len(overlaps)} critical sections overlapped, first: {overlaps[0]}"


@pytest.mark.slow
def test_holder_killed_with_sigkill_is_replaced_after_its_lease(alias, name, tmp_path):
    ttl = 2.0
    ready = tmp_path / "holder.json"
    holder = SPAWN.Process(target=workers.hold, args=(alias, name, ttl, str(ready), db_name()))
    holder.start()
    try:
        info = wait_for_file(ready, timeout=30)
        os.kill(holder.pid, signal.SIGKILL)
        lease = get_backend(alias).acquire(name, ttl=5, timeout=5)
        elapsed = time.monotonic() - info["acquired"]
    finally:
        holder.kill()
        holder.join()
    assert lease is not None, "nobody could take the lock of a killed holder within 5 s"
    assert elapsed <= ttl + 0.5, f"took {elapsed:.2f}s after the holder's grant (lease {ttl}s)"
    if alias != ADVISORY_ALIAS:
        assert elapsed >= ttl - 0.1, f"granted after {elapsed:.2f}s: before the killed holder's lease ran out"
    # The advisory mode's lock ends with the killed holder's connection, at once (pg_advisory.py).
    assert lease.token > info["token"], "the new holder's token is not larger than the killed holder's"
    lease.release()


# --- expiry, stale holders, tokens -------------------------------------------------------------------


def test_expired_holder_cannot_release_or_extend_the_successors_lock(backend, name):
    old = backend.acquire(name, ttl=0.3)
    time.sleep(0.45)
    new = backend.acquire(name, ttl=10, timeout=2)
    assert new is not None, "the lock was not free after the first lease expired"
    assert new.token > old.token, "tokens must strictly increase across holders"
    assert backend.release(old) is False, "the expired holder's release reported success"
    assert backend.extend(old, 10) is False, "the expired holder's extend reported success"
    with pytest.raises(LockLost):
        old.extend(10)
    with pytest.raises(LockLost):
        old.ensure_held()
    assert backend.verify(new), "the successor's lock was touched by the old holder"
    assert [info.token for info in backend.held() if info.name == name] == [new.token]
    assert backend.release(new) is True


def test_tokens_strictly_increase_across_holders(backend, name):
    tokens = []
    for _ in range(20):
        lease = backend.acquire(name, ttl=5)
        tokens.append(lease.token)
        assert lease.release()
    assert all(isinstance(t, int) for t in tokens)
    assert tokens == sorted(set(tokens)), f"tokens did not strictly increase: {tokens}"


def test_extend_keeps_the_lease_past_its_first_ttl(backend, name):
    lease = backend.acquire(name, ttl=0.5)
    time.sleep(0.3)
    lease.extend(1.0)
    time.sleep(0.4)
    lease.ensure_held()
    assert backend.acquire(name, timeout=0) is None, "someone else got an extended lock"
    assert lease.release()


# --- auto-renew and lost locks ----------------------------------------------------------------------


@pytest.mark.slow
def test_auto_renew_keeps_a_one_second_lease_through_five_seconds_of_work(backend, alias, name):
    with lock(name, ttl=1, backend=alias, auto_renew=True) as lease:
        for _ in range(10):
            time.sleep(0.5)
            lease.ensure_held()
            assert backend.acquire(name, timeout=0) is None, "the lock was free while its holder worked"
        assert not lease.lost
    assert lease.released and not lease.lost
    again = backend.acquire(name, timeout=0)
    assert again is not None, "the lock stayed held after the block"
    backend.release(again)


@pytest.mark.slow
def test_one_thread_renews_many_leases_and_a_lost_one_does_not_stop_the_others(backend, alias, name):
    def renewal_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "lock-renewals"]

    leases = [backend.acquire(f"{name}:{i}", ttl=0.6, auto_renew=True) for i in range(12)]
    try:
        assert all(lease is not None for lease in leases)
        assert len(renewal_threads()) == 1, "each process renews its leases from one thread"
        assert backend.force_release(f"{name}:0", actor="test-operator")
        time.sleep(2.0)  # more than three lease lifetimes: only renewals keep the others
        assert leases[0].lost, "the renewal did not notice the broken lock"
        for lease in leases[1:]:
            lease.ensure_held()
            assert backend.acquire(lease.name, timeout=0) is None, f"{lease.name} was free while held"
    finally:
        for lease in leases:
            lease.release()
    assert [lease.released for lease in leases[1:]] == [True] * 11
    for lease in leases[1:]:
        again = backend.acquire(lease.name, timeout=0)
        assert again is not None, f"{lease.name} stayed held after its release"
        backend.release(again)


def test_force_release_makes_the_renewing_holder_lose_loudly(backend, alias, name, caplog):
    lost = []

    def receiver(sender, **kwargs):
        lost.append(kwargs)

    lock_lost.connect(receiver)
    try:
        with lock(name, ttl=1, backend=alias, auto_renew=True) as lease:
            assert backend.force_release(name, actor="test-operator")
            time.sleep(0.6)  # more than one renewal interval (ttl / 3)
            assert lease.lost, "the renewal did not notice the broken lock"
            with pytest.raises(LockLost):
                lease.ensure_held()
            with pytest.raises(LockLost):
                lease.extend(1)
    finally:
        lock_lost.disconnect(receiver)
    assert [(e["name"], e["token"], e["backend"]) for e in lost] == [(name, lease.token, alias)]
    assert lease.release() is False
    assert any(name in r.getMessage() and str(lease.token) in r.getMessage() for r in caplog.records), (
        "the lost lock was not logged with its name and token"
    )


def test_ensure_held_right_after_a_force_release_raises(backend, alias, name):
    with lock(name, ttl=30, backend=alias, auto_renew=True) as lease:
        backend.force_release(name, actor="test-operator")
        with pytest.raises(LockLost):
            lease.ensure_held()


def test_a_lost_lease_never_releases_the_successor(backend, name):
    first = backend.acquire(name, ttl=30)
    backend.force_release(name, actor="test-operator")
    second = backend.acquire(name, ttl=30, timeout=1)
    assert second is not None
    assert first.release() is False
    assert backend.verify(second), "the first holder's release removed the second holder's lock"
    assert second.release()


# --- blocking, try-once, async ---------------------------------------------------------------------


def test_blocking_acquire_gives_up_after_its_timeout(backend, alias, name):
    holder = backend.acquire(name, ttl=30)
    started = time.monotonic()
    assert backend.acquire(name, ttl=5, timeout=0.3) is None
    waited = time.monotonic() - started
    assert 0.3 <= waited < 0.6, f"timeout=0.3 waited {waited:.3f}s"
    with pytest.raises(LockNotAcquired):
        with lock(name, ttl=5, timeout=0.1, backend=alias):
            pass
    holder.release()


def test_blocking_acquire_gets_the_lock_when_it_is_released(backend, name):
    holder = backend.acquire(name, ttl=30)
    released_at = []

    def release_later():
        time.sleep(0.2)
        released_at.append(time.monotonic())
        holder.release()

    thread = threading.Thread(target=release_later)
    thread.start()
    lease = backend.acquire(name, ttl=5, timeout=5)
    got_it = time.monotonic()
    thread.join()
    assert lease is not None
    assert got_it - released_at[0] < 0.2, f"hand-off took {got_it - released_at[0]:.3f}s"
    assert lease.token > holder.token
    lease.release()


def test_try_once(backend, alias, name):
    holder = backend.acquire(name, ttl=30, timeout=0)
    assert holder is not None, "timeout=0 failed on a free lock"
    started = time.monotonic()
    assert backend.acquire(name, timeout=0) is None
    assert backend.acquire(name, blocking=False) is None
    assert time.monotonic() - started < 0.2, "try-once waited"
    with pytest.raises(LockNotAcquired):
        with lock(name, timeout=0, backend=alias):
            pass
    holder.release()
    with lock(name, timeout=0, backend=alias) as lease:
        assert lease.token > holder.token


def test_async_api(alias, name):
    async def scenario():
        async with alock(name, ttl=1, backend=alias, auto_renew=True) as lease:
            with pytest.raises(LockNotAcquired):
                async with alock(name, timeout=0, backend=alias):
                    pass
            await asyncio.sleep(1.2)  # past the first ttl: the renewal task keeps it
            await lease.aensure_held()
            lease.ensure_held()  # inside the loop: local check only, never blocks it
        assert lease.released and not lease.lost

        async def waiter():
            async with alock(name, ttl=5, timeout=5, backend=alias) as later:
                return later.token

        holder = await get_backend(alias).aacquire(name, ttl=5)
        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.1)
        assert not task.done(), "a second holder got the lock"
        assert await holder.arelease()
        token = await asyncio.wait_for(task, 5)
        assert token > holder.token > lease.token

    asyncio.run(scenario())


def test_async_api_renewal_notices_a_force_release(alias, backend, name):
    async def scenario():
        async with alock(name, ttl=0.6, backend=alias, auto_renew=True) as lease:
            await asyncio.to_thread(backend.force_release, name, actor="test-operator")
            await asyncio.sleep(0.5)
            assert lease.lost, "the renewal task did not notice the broken lock"
            with pytest.raises(LockLost):
                await lease.aensure_held()
        assert not await lease.arelease()

    asyncio.run(scenario())


# --- operators ---------------------------------------------------------------------------------------


def test_held_lists_name_owner_token_and_times(backend, alias, name):
    with lock(name, ttl=30, backend=alias) as lease:
        infos = [info for info in backend.held() if info.name == name]
        assert len(infos) == 1
        info = infos[0]
        assert (info.owner, info.token, info.backend) == (lease.owner, lease.token, alias)
        assert info.acquired_at < info.expires_at
        node, pid, thread, rand = lease.owner.split(":")
        assert pid == str(os.getpid()) and thread == str(threading.get_native_id()) and len(rand) == 8
    assert not [info for info in backend.held() if info.name == name]


def test_force_release_is_audited(backend, alias, name, staff_user):
    lease = backend.acquire(name, ttl=30)
    assert backend.force_release(name, actor=staff_user, token=lease.token + 1) is False, "token mismatch released"
    assert backend.force_release(name, actor=staff_user) is True
    assert backend.force_release(name, actor=staff_user) is False, "released a lock that is not held"
    entries = list(LockAudit.objects.filter(name=name))
    assert len(entries) == 1, "one audit entry per lock actually released"
    entry = entries[0]
    assert (entry.action, entry.backend, entry.token, entry.owner, entry.actor) == (
        "force_release",
        alias,
        lease.token,
        lease.owner,
        "staff",
    )
    assert entry.at is not None
    again = backend.acquire(name, timeout=0)
    assert again is not None, "the lock stayed held after a force-release"
    backend.release(again)  # a lease left held outlives the test (an advisory lock's session, a Redis key)
