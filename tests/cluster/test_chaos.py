"""Chaos, end to end: 3 real worker processes on PostgreSQL + Redis, one SIGKILLed mid-run and restarted.

500 transfer jobs of which 100 are submitted twice. Afterwards every transfer is applied exactly
once (the ledger balances), no job is lost, every job is succeeded or duplicate, no lock is left
held, and the killed node was marked dead and later came back active.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest
from django.db import transaction

from cluster.models import Job, MembershipEvent, Node
from examples.ledger.models import Account, Transfer
from examples.ledger.tasks import transfer
from tests.processes import ROOT, start_worker, stop

NODES = ("chaos-a", "chaos-b", "chaos-c")
ACCOUNTS = [f"acct-{i}" for i in range(8)]
OPENING = 100_000
UNIQUE, DUPLICATES = 400, 100
CHILD_SETTINGS = "tests.child_settings"  # production settings; nodes become active without 3 s to spare


def wait_for(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def states() -> dict[str, str]:
    return dict(Node.objects.filter(name__in=NODES).values_list("name", "state"))


def open_jobs() -> int:
    return Job.objects.exclude(state__in=["succeeded", "duplicate", "failed"]).count()


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_chaos_every_transfer_applied_exactly_once(child_env, redis_url):
    import redis

    from locks import get_backend

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()  # the broker's queues of earlier runs
    for name in ACCOUNTS:
        Account.objects.create(name=name, balance=OPENING)
    procs: dict[str, subprocess.Popen] = {}
    child_env = {**child_env, "DJANGO_SETTINGS_MODULE": CHILD_SETTINGS}
    sweeper = subprocess.Popen([sys.executable, "manage.py", "sweeper"], cwd=ROOT, env=child_env)
    try:
        for name in NODES:
            procs[name] = start_worker(name, child_env, pool="threads", concurrency=4)
        wait_for(lambda: set(states().values()) == {"active"} and len(states()) == 3, 90, "3 active nodes")

        rng = random.Random(7)
        submitted: dict[str, tuple[str, str, int]] = {}
        calls = []
        for _ in range(UNIQUE):
            source, target = rng.sample(ACCOUNTS, 2)
            tid = uuid.uuid4().hex
            submitted[tid] = (source, target, rng.randint(1, 50))
            calls.append(tid)
        calls += rng.sample(list(submitted), DUPLICATES)
        rng.shuffle(calls)
        for start in range(0, len(calls), 50):
            with transaction.atomic():
                for tid in calls[start : start + 50]:
                    source, target, amount = submitted[tid]
                    transfer.delay(transfer_id=tid, from_account=source, to_account=target, amount=amount)

        # Kill one node mid-run, the whole process group, without warning.
        wait_for(lambda: Transfer.objects.count() >= UNIQUE // 4, 90, "a quarter of the transfers")
        os.killpg(procs["chaos-b"].pid, signal.SIGKILL)
        procs["chaos-b"].wait(timeout=10)
        wait_for(lambda: states()["chaos-b"] == "dead", 30, "the killed node to be marked dead")
        procs["chaos-b"] = start_worker("chaos-b", child_env, pool="threads", concurrency=4)
        wait_for(lambda: states()["chaos-b"] == "active", 60, "the restarted node to be active again")

        wait_for(lambda: open_jobs() == 0, 120, "every job to finish")
    finally:
        stop(*procs.values(), sweeper)

    # Exactly once: each transfer applied once, the ledger balances to the expected totals.
    applied = dict(Transfer.objects.values_list("transfer_id", "amount"))
    assert set(applied) == set(submitted), "every transfer was applied, none twice (transfer_id is unique)"
    expected = dict.fromkeys(ACCOUNTS, OPENING)
    for source, target, amount in submitted.values():
        expected[source] -= amount
        expected[target] += amount
    assert dict(Account.objects.values_list("name", "balance")) == expected
    # No job lost: every submitted call has a job, and each ended succeeded (once per key) or duplicate.
    jobs = list(Job.objects.values_list("state", flat=True))
    assert len(jobs) == UNIQUE + DUPLICATES
    assert jobs.count("succeeded") == UNIQUE and jobs.count("duplicate") == DUPLICATES, sorted(set(jobs))
    # No lock left behind (the killed holder's lease expired; everybody else released).
    assert [info.name for info in get_backend("default").held() if info.name.startswith("account:")] == []
    killed = list(
        MembershipEvent.objects.filter(node__name="chaos-b").order_by("id").values_list("to_state", flat=True)
    )
    assert "dead" in killed, killed
    assert "active" in killed[killed.index("dead") :], f"the killed node came back active: {killed}"
