"""The sweeper loop outlives its services' outages: a database error skips a sweep, a lock store
outage makes it wait with backoff, and the leader that comes back starts with a grace period."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import OperationalError

from locks import LockBackendUnavailable, get_backend
from monitoring import sweeper as sweeper_module

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fast_sweeps(settings):
    settings.RINGMASTER = {"CLUSTER": {"RING_CHECK_INTERVAL": 0}, "MONITORING": {"SWEEP_INTERVAL": 0.01}}


class FlakySweeper:
    def __init__(self, failures: int, stop: threading.Event) -> None:
        self.failures, self.stop, self.sweeps = failures, stop, 0

    def sweep(self) -> list:
        self.sweeps += 1
        if self.sweeps <= self.failures:
            raise OperationalError("connection refused")
        self.stop.set()
        return []


def test_a_database_error_skips_the_sweep_and_the_loop_goes_on():
    backend = get_backend("db")
    lease = backend.acquire("test:sweeper", ttl=10)
    stop = threading.Event()
    flaky = FlakySweeper(failures=3, stop=stop)
    try:
        assert sweeper_module._sweep_while_held(flaky, backend, lease, stop) is False
    finally:
        backend.release(lease)
    assert flaky.sweeps == 4


def test_an_unavailable_lock_store_is_waited_out_and_the_next_term_starts_with_a_grace(monkeypatch):
    real = get_backend("db")
    stop = threading.Event()

    class DownThenUp:
        alias = "db"
        calls = 0

        def acquire(self, *args, **kwargs):
            DownThenUp.calls += 1
            if DownThenUp.calls <= 2:
                raise LockBackendUnavailable("db", "connection refused")
            return real.acquire("test:sweeper", ttl=10)

        def release(self, lease):
            return real.release(lease)

    holds = []

    def one_term(sweeper, backend, lease, stop_event):
        holds.append(sweeper.tracker.held_until - time.time())
        stop_event.set()
        return False

    monkeypatch.setattr("locks.get_backend", lambda alias: DownThenUp())
    monkeypatch.setattr(sweeper_module, "_sweep_while_held", one_term)
    sweeper_module.run_sweeper(stop=stop, lock_backend="db")
    assert DownThenUp.calls == 3
    assert len(holds) == 1 and holds[0] > 5, "after the outage the new term convicts nobody for a grace period"
