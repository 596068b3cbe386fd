"""Waiters in line for one lock, from threads: the FIFO tests of every backend share this."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from django.db import connections


def line_up(backend, name: str, *, count: int, queued: Callable[[], int]) -> tuple[list[threading.Thread], list[int]]:
    """Start ``count`` waiters one after the other, each only once the one before is in the backend's line.

    ``queued()`` says how many waiters the backend holds in line. Returns the threads and the list
    each waiter appends its number to when served (then it holds the lock 10 ms and releases it).
    """
    order: list[int] = []

    def wait(i: int) -> None:
        lease = backend.acquire(name, ttl=30, timeout=10)
        order.append(i)
        time.sleep(0.01)
        lease.release()
        connections.close_all()

    threads = []
    for i in range(count):
        thread = threading.Thread(target=wait, args=(i,))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 5
        while queued() < i + 1:
            assert time.monotonic() < deadline, f"waiter {i} never took its place in line"
            time.sleep(0.002)
    return threads, order
