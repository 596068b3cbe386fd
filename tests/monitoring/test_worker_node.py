"""A real Celery worker process joins as a node, heartbeats, and is declared dead after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from cluster.models import MembershipEvent, Node
from monitoring.sweeper import Sweeper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    env = {**child_env, "RINGMASTER_NODE_NAME": "w1"}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool",
            "solo",
            "--hostname",
            "w1@%h",
            "--loglevel",
            "WARNING",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        sweeper = Sweeper()
        sweep_until(sweeper, lambda: node_state("w1") == "active", timeout=60)
        assert Node.objects.get(name="w1").address.startswith("w1@")
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        took = sweep_until(sweeper, lambda: node_state("w1") == "dead", timeout=30)
        # phi crosses 8 after ~4-5 s of silence, then holds for the 3 s stable period.
        assert took < 15, f"declared dead {took:.1f}s after SIGKILL"
        states = list(MembershipEvent.objects.filter(node__name="w1").order_by("id").values_list("to_state", flat=True))
        assert states == ["joining", "active", "suspect", "dead"]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_graceful_shutdown_drains_and_leaves(child_env):
    env = {**child_env, "RINGMASTER_NODE_NAME": "w2"}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool",
            "solo",
            "--hostname",
            "w2@%h",
            "--loglevel",
            "WARNING",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        sweeper = Sweeper()
        sweep_until(sweeper, lambda: node_state("w2") == "active", timeout=60)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        assert node_state("w2") == "left"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
