"""The Redis backend itself: hash tags, the token floor, FIFO hand-off, a Redis that goes away."""

from __future__ import annotations

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
