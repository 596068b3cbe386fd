"""The Redis backend itself: hash tags, the token floor, FIFO hand-off, a Redis that goes away."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

import pytest
import redis as redis_lib
from redis.crc import key_slot

from locks import LockBackendUnavailable, get_backend, lock
from locks.backends.redis import Keys, RedisLockBackend
from tests.locks.waiters import line_up
from tests.services import free_port

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def rb():
    return get_backend("redis")


@pytest.mark.parametrize("lock_name", ["plain", "with:colons", "with{braces}", "a}b{c", "ünï", "x" * 255])
def test_every_key_of_a_lock_is_in_one_cluster_slot(lock_name):
    keys = Keys(lock_name)
    names = [keys.lease, keys.token, keys.queue, keys.alive, keys.seq, keys.wake("node:1:2:abcd")]
    assert len({key_slot(k.encode()) for k in names}) == 1, f"keys of {lock_name!r} span several slots"


def test_tokens_never_go_backwards_after_redis_loses_its_data(rb, name):
    """A restart without persistence (or from an old snapshot) loses the counter: the TIME floor saves it."""
    first = rb.acquire(name, ttl=30)
    assert first.release()
    rb.client.delete(Keys(name).token)  # what a restart without persistence does
    second = rb.acquire(name, ttl=30)
    assert second.token > first.token
    assert second.release()
    rb.client.set(Keys(name).token, 5)  # an old snapshot
    third = rb.acquire(name, ttl=30)
    assert third.token > second.token
    third.release()


def test_release_hands_the_lock_to_the_first_waiter_in_order(rb, name):
    holder = rb.acquire(name, ttl=30)
    threads, order = line_up(rb, name, count=4, queued=lambda: rb.client.zcard(Keys(name).queue))
    assert rb.acquire(name, timeout=0) is None, "a newcomer jumped the queue"
    holder.release()
    for thread in threads:
        thread.join()
    assert order == [0, 1, 2, 3], f"waiters were served out of order: {order}"
    assert not rb.client.exists(Keys(name).queue), "the queue is left behind"


def test_hand_off_is_fast(rb, name):
    """Release to the waiter's grant: one script call and one wake-up, no polling."""
    latencies = []
    for _ in range(20):
        holder = rb.acquire(name, ttl=30)
        result = {}

        def wait(result=result):
            lease = rb.acquire(name, ttl=30, timeout=5)
            result["at"] = time.monotonic()
            lease.release()

        thread = threading.Thread(target=wait)
        thread.start()
        deadline = time.monotonic() + 5
        while not rb.client.zcard(Keys(name).queue):
            assert time.monotonic() < deadline
            time.sleep(0.001)
        released = time.monotonic()
        holder.release()
        thread.join()
        latencies.append(result["at"] - released)
    assert statistics.median(latencies) < 0.02, f"median hand-off {statistics.median(latencies) * 1000:.1f} ms"


def test_a_waiter_that_gives_up_passes_a_grant_on(rb, name):
    holder = rb.acquire(name, ttl=30)
    assert rb.acquire(name, ttl=5, timeout=0.05) is None
    assert not rb.client.exists(Keys(name).queue), "a waiter that gave up stayed in line"
    holder.release()
    assert rb.acquire(name, timeout=0) is not None, "the lock stayed held after its release"


def test_a_dead_waiter_does_not_block_the_line(rb, name, settings):
    settings.RINGMASTER = {"LOCKS": {"WAITER_TTL": 0.3}}
    holder = rb.acquire(name, ttl=30)
    keys = Keys(name)
    # A waiter that died in line: queued, never refreshed.
    rb.client.zadd(keys.queue, {"ghost:1:1:dead": 0})
    rb.client.hset(keys.alive, "ghost:1:1:dead", f"{int(time.time() * 1000) + 300}:30000")
    time.sleep(0.35)
    holder.release()
    lease = rb.acquire(name, ttl=5, timeout=1)
    assert lease is not None and "ghost" not in lease.owner


def test_lock_keys_disappear_when_nobody_holds_or_waits(rb, name):
    with lock(name, ttl=30, backend="redis"):
        pass
    keys = Keys(name)
    assert not rb.client.exists(keys.lease, keys.queue, keys.alive)
    assert rb.client.exists(keys.token), "the fencing counter must stay"


@pytest.fixture
def private_backend(private_redis):
    backend = RedisLockBackend("private", {"LOCATION": private_redis, "OPTIONS": {"socket_timeout": 1}})
    yield backend, private_redis
    backend.close()


def test_scripts_the_server_has_forgotten_are_loaded_again(private_backend, name):
    """A restarted (or failed-over) Redis knows no script: the next call loads it and goes on."""
    backend, url = private_backend
    held = backend.acquire(name, ttl=30)
    waiter = backend.acquire(name + "-other", ttl=30)
    redis_lib.Redis.from_url(url).script_flush()
    assert backend.extend(held, 30), "extend after SCRIPT FLUSH"
    assert backend.release(held), "release after SCRIPT FLUSH"
    redis_lib.Redis.from_url(url).script_flush()
    again = backend.acquire(name, ttl=30, timeout=0)
    assert again is not None and again.token > held.token, "claim after SCRIPT FLUSH"
    assert backend.release(again) and backend.release(waiter)
    assert backend.held() == []


def test_redis_stopped_mid_use_raises_backend_unavailable(private_backend, name):
    backend, url = private_backend
    lease = backend.acquire(name, ttl=30)
    assert lease is not None
    try:
        redis_lib.Redis.from_url(url).shutdown(nosave=True)
    except redis_lib.exceptions.ConnectionError:
        pass  # the server closes the connection as it exits
    started = time.monotonic()
    with pytest.raises(LockBackendUnavailable, match="private"):
        backend.acquire(name + "2", ttl=5, timeout=1)
    with pytest.raises(LockBackendUnavailable):
        lease.release()
    lease.ensure_held()  # cannot verify: the lease counts as held until its deadline
    assert time.monotonic() - started < 5, "a stopped Redis must fail fast"


def test_closed_port_raises_backend_unavailable(name):
    backend = RedisLockBackend("closed", {"LOCATION": f"redis://127.0.0.1:{free_port()}/0", "OPTIONS": {}})
    with pytest.raises(LockBackendUnavailable, match="closed"):
        backend.acquire(name, ttl=5, timeout=0)
    with pytest.raises(LockBackendUnavailable):
        backend.held()


# --- an acquire that expects to wait: claim and BLPOP in one round trip (claim_and_block) -------


def hand_over_once(backend, name: str):
    """Release ``name`` once while a thread waits for it, as a process in a contended loop does.

    Afterwards ``backend`` expects to wait for ``name`` (its last release found someone in line),
    so its next acquire of it sends the claim and the BLPOP together. Returns the thread's lease.
    """
    holder = backend.acquire(name, ttl=30)
    got = []
    thread = threading.Thread(target=lambda: got.append(backend.acquire(name, ttl=30, timeout=5)))
    thread.start()
    deadline = time.monotonic() + 5
    while not backend.client.zcard(Keys(name).queue):
        assert time.monotonic() < deadline, "the waiter never took its place in line"
        time.sleep(0.001)
    assert holder.release()
    thread.join()
    assert got and got[0] is not None, "the waiter did not get the lock"
    return got[0]


def release_elsewhere(lease, url: str) -> None:
    """Release through a second backend on the same Redis, so ``lease``'s own backend still expects to wait."""
    other = RedisLockBackend("other", {"LOCATION": url})
    try:
        assert other.release(lease), "the lease to release elsewhere was not held"
    finally:
        other.close()


def reply_skips(url: str) -> int:
    stats = redis_lib.Redis.from_url(url).info("commandstats")
    return stats.get("cmdstat_client|reply", {}).get("calls", 0)


def test_an_acquire_that_expects_to_wait_takes_its_turn_and_is_granted_once(private_backend, name):
    backend, url = private_backend
    held = hand_over_once(backend, name)
    skips = reply_skips(url)
    threading.Timer(0.05, held.release).start()
    lease = backend.acquire(name, ttl=30, timeout=5)
    assert reply_skips(url) == skips + 1, "the acquire did not send its claim and BLPOP together"
    assert lease is not None and lease.token > held.token, "no lease, or a token that did not increase"
    assert backend.verify(lease), "the lease handed over is not the one Redis holds"
    assert backend.client.ping(), "the connection's replies are out of step after the skipped reply"
    assert backend.release(lease)
    assert backend.acquire(name, timeout=0).release(), "the lock stayed held after its release"


def test_an_acquire_that_expects_to_wait_finds_the_lock_free(private_backend, name):
    backend, url = private_backend
    release_elsewhere(hand_over_once(backend, name), url)
    skips = reply_skips(url)
    started = time.monotonic()
    lease = backend.acquire(name, ttl=30, timeout=5)
    assert reply_skips(url) == skips + 1, "the acquire did not send its claim and BLPOP together"
    assert lease is not None and backend.verify(lease)
    assert time.monotonic() - started < 0.1, "a free lock was not granted at once"
    assert backend.release(lease)


def test_an_async_acquire_that_expects_to_wait(private_backend, name):
    backend, url = private_backend
    held = hand_over_once(backend, name)
    skips = reply_skips(url)

    async def scenario():
        task = asyncio.create_task(backend.aacquire(name, ttl=30, timeout=5))
        await asyncio.sleep(0.05)
        assert not task.done(), "a second holder got the lock"
        assert await backend.arelease(held)
        lease = await asyncio.wait_for(task, 5)
        assert lease is not None and lease.token > held.token and await backend.averify(lease)
        assert await backend.arelease(lease)

    asyncio.run(scenario())
    assert reply_skips(url) == skips + 1, "the async acquire did not send its claim and BLPOP together"


def test_an_acquire_that_expects_to_wait_queues_behind_the_waiters_already_in_line(private_backend, name):
    rb, url = private_backend
    release_elsewhere(hand_over_once(rb, name), url)
    skips = reply_skips(url)
    holder = rb.acquire(name, ttl=30)
    threads, order = line_up(rb, name, count=3, queued=lambda: rb.client.zcard(Keys(name).queue))

    def busy() -> None:
        lease = rb.acquire(name, ttl=30, timeout=10)
        order.append("busy")
        lease.release()

    late = threading.Thread(target=busy)
    late.start()
    deadline = time.monotonic() + 5
    while rb.client.zcard(Keys(name).queue) < 4:
        assert time.monotonic() < deadline, "the late acquire never took its place in line"
        time.sleep(0.002)
    holder.release()
    for thread in [*threads, late]:
        thread.join()
    assert order == [0, 1, 2, "busy"], f"served out of order: {order}"
    assert reply_skips(url) == skips + 5, "not every acquire sent its claim and BLPOP together"


def test_an_acquire_that_expects_to_wait_gives_up_after_its_timeout(private_backend, name):
    backend, _url = private_backend
    held = hand_over_once(backend, name)
    started = time.monotonic()
    assert backend.acquire(name, ttl=30, timeout=0.05) is None
    assert time.monotonic() - started < 0.5, "the timeout was not kept"
    assert not backend.client.exists(Keys(name).queue), "a waiter that gave up stayed in line"
    assert backend.release(held)


def test_an_acquire_that_expects_to_wait_takes_over_from_a_holder_that_died(private_backend, name):
    """The claim's reply is skipped, so the holder's pttl is learnt by the next claim: still lease + 0.5 s."""
    backend, url = private_backend
    release_elsewhere(hand_over_once(backend, name), url)
    dead = backend.acquire(name, ttl=1)  # never released: its holder "died"
    granted = time.monotonic()
    skips = reply_skips(url)
    lease = backend.acquire(name, ttl=30, timeout=5)
    assert reply_skips(url) == skips + 1, "the acquire did not send its claim and BLPOP together"
    assert lease is not None and lease.token > dead.token
    assert time.monotonic() - granted < 1.5, f"took over {time.monotonic() - granted:.2f} s after a 1 s lease"
    assert backend.release(lease)


def test_an_acquire_that_expects_to_wait_survives_forgotten_scripts(private_backend, name):
    """SCRIPT FLUSH: the skipped claim fails unseen, the BLPOP waits briefly, the next claim loads the script."""
    backend, url = private_backend
    release_elsewhere(hand_over_once(backend, name), url)
    redis_lib.Redis.from_url(url).script_flush()
    skips = reply_skips(url)
    lease = backend.acquire(name, ttl=30, timeout=5)
    assert reply_skips(url) == skips + 1, "the acquire did not send its claim and BLPOP together"
    assert lease is not None and backend.verify(lease)
    assert backend.release(lease)


def test_client_reply_refused_falls_back_to_two_round_trips(private_backend, name, caplog):
    """An ACL (or a proxy) that refuses CLIENT REPLY: one warning, then plain claims, nothing out of step."""
    backend, url = private_backend
    held = hand_over_once(backend, name)
    redis_lib.Redis.from_url(url).acl_setuser("default", enabled=True, nopass=True, commands=["-client|reply"])
    threading.Timer(0.05, held.release).start()
    lease = backend.acquire(name, ttl=30, timeout=5)
    assert lease is not None and lease.token > held.token and backend.verify(lease)
    assert any("CLIENT REPLY SKIP was refused" in r.getMessage() for r in caplog.records), "no warning logged"
    assert backend.client.ping()
    assert backend.release(lease)
    again = hand_over_once(backend, name)
    threading.Timer(0.05, again.release).start()
    caplog.clear()
    assert backend.acquire(name, ttl=30, timeout=5).release()
    assert not caplog.records, "the refusal was tried (and logged) again"


def test_an_acquire_that_expects_to_wait_on_a_stopped_redis_raises_backend_unavailable(private_backend, name):
    backend, url = private_backend
    release_elsewhere(hand_over_once(backend, name), url)
    try:
        redis_lib.Redis.from_url(url).shutdown(nosave=True)
    except redis_lib.exceptions.ConnectionError:
        pass  # the server closes the connection as it exits
    backend.client.connection_pool.disconnect()  # no pooled socket left: the next one must connect
    with pytest.raises(LockBackendUnavailable, match="private"):
        backend.acquire(name, ttl=5, timeout=1)
