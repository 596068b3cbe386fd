"""A real Celery worker process joins as a node, heartbeats, and is declared dead after SIGKILL."""

from __future__ import annotations

import os
import signal
import time

import pytest

from cluster.models import MembershipEvent, Node
from monitoring.liveness import LivenessPolicy
from monitoring.sweeper import Sweeper
from tests.processes import start_worker, stop


def sweep_until(sweeper: Sweeper, predicate, timeout: float) -> float:
    """Sweep on the real clock (this is an end-to-end test) until predicate() holds; returns seconds taken."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        sweeper.sweep()
        if predicate():
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"condition not reached in {timeout}s")


def node_state(name: str) -> str | None:
    return Node.objects.filter(name=name).values_list("state", flat=True).first()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_heartbeats_and_is_marked_dead_after_sigkill(child_env):
    worker = start_worker("w1", child_env)
    try:
        sweeper = Sweeper()
        sweep_until(sweeper, lambda: node_state("w1") == "active", timeout=60)
        assert Node.objects.get(name="w1").address.startswith("w1@")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        took = sweep_until(sweeper, lambda: node_state("w1") == "dead", timeout=30)
        # phi crosses 8 after ~4-5 s of silence, then holds for the 3 s stable period.
        assert took < 15, f"declared dead {took:.1f}s after SIGKILL"
        states = list(MembershipEvent.objects.filter(node__name="w1").order_by("id").values_list("to_state", flat=True))
        assert states == ["joining", "active", "suspect", "dead"]
    finally:
        stop(worker)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_graceful_shutdown_drains_and_leaves(child_env):
    worker = start_worker("w2", child_env)
    try:
        # Active on its third on-time heartbeat, without the 3 s of stable health production asks
        # for: the shutdown is what this test is about (the test above joins with the defaults).
        sweeper = Sweeper(policy=LivenessPolicy(rejoin_stable_period=0.0))
        sweep_until(sweeper, lambda: node_state("w2") == "active", timeout=60)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        assert node_state("w2") == "left"
    finally:
        stop(worker)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_sweepers_at_once_produce_one_transition(child_env):
    """Both sweepers run for real; only the holder of the sweeper lock acts, so each verdict lands once."""
    import subprocess
    import sys

    from tests.processes import ROOT

    # Production settings, except that the node becomes active without 3 s to spare (tests/child_settings.py).
    child_env = {**child_env, "DJANGO_SETTINGS_MODULE": "tests.child_settings"}
    sweepers = [subprocess.Popen([sys.executable, "manage.py", "sweeper"], cwd=ROOT, env=child_env) for _ in range(2)]
    worker = start_worker("w3", child_env)
    try:
        deadline = time.monotonic() + 60
        while node_state("w3") != "active":
            assert time.monotonic() < deadline, "the worker node never became active"
            time.sleep(0.25)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        deadline = time.monotonic() + 30
        while node_state("w3") != "dead":
            assert time.monotonic() < deadline, "the killed node was never declared dead"
            time.sleep(0.25)
        time.sleep(3)  # room for a second sweeper's duplicate verdict, were there one
        states = list(MembershipEvent.objects.filter(node__name="w3").order_by("id").values_list("to_state", flat=True))
        assert states == ["joining", "active", "suspect", "dead"], f"each transition exactly once: {states}"
        assert all(p.poll() is None for p in sweepers), "both sweepers kept running (one acting, one waiting)"
    finally:
        stop(worker, *sweepers)
