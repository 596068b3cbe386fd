"""Redis restarted (no persistence) while three workers run transfers and heartbeat, and the sweeper sweeps.

Everything Redis held is gone at once: the broker's queues and unacked messages, every lock, the
heartbeat store, the sweeper's own lock. Afterwards every client is back (workers consume and
beat again, the sweeper sweeps), no node was suspected or convicted for the store's silence, no
lock was granted twice (fencing tokens per account only go up, in the order transfers applied)
and every transfer was applied exactly once.
"""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest
import redis

from cluster.models import Job, MembershipEvent, Node
from examples.ledger.models import Account, Transfer
from tests import services

from .harness import (
    Processes,
    deployment_env,
    driver,
    expected_balances,
    make_transfers,
    tokens_going_backwards,
    wait_for,
)

NODES = ("rr-a", "rr-b", "rr-c")
ACCOUNTS = [f"acct-{i}" for i in range(12)]
OPENING = 100_000
OUTAGE = 10.0  # longer than it takes to convict a silent node (~8 s): only the grace saves them
FINISHED = ("succeeded", "duplicate", "failed")


def states() -> dict[str, str]:
    return dict(Node.objects.filter(name__in=NODES).values_list("name", "state"))


def job_states() -> dict[str, int]:
    return dict(Counter(Job.objects.values_list("state", flat=True)))


def beating(url: str) -> set[str]:
    client = redis.Redis.from_url(url, socket_timeout=1)
    return {key.decode().rsplit(":", 1)[1] for key in client.scan_iter(match="*rm:hb:*")}


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_redis_restart_loses_nothing_and_convicts_nobody(child_env, tmp_path):
    before, after = make_transfers(ACCOUNTS, 400, seed=11), make_transfers(ACCOUNTS, 100, seed=12)
    with services.private_redis_server() as server:
        env = deployment_env(child_env, REDIS_URL=server.url)
        procs = Processes(env, tmp_path)
        try:
            procs.sweeper()
            for name in NODES:
                procs.worker(name)
            wait_for(lambda: states() == dict.fromkeys(NODES, "active"), 60, "3 active nodes")
            active_since = MembershipEvent.objects.order_by("-id").values_list("id", flat=True).first()

            accounts = dict.fromkeys(ACCOUNTS, OPENING)
            assert driver(env, "submit", {"accounts": accounts, "transfers": before})["errors"] == []
            wait_for(lambda: Transfer.objects.count() >= 50, 30, "transfers under way")

            in_flight = Job.objects.exclude(state__in=FINISHED).count()
            server.stop()
            down_at = time.monotonic()
            time.sleep(OUTAGE)
            assert procs.crashed() == {}, "a process died while Redis was down"
            server.start()
            up_at = time.monotonic()

            wait_for(lambda: beating(server.url) == set(NODES), 30, "every node's heartbeat back in the store")
            refill = time.monotonic() - up_at
            assert driver(env, "submit", {"transfers": after})["errors"] == []
            wait_for(
                lambda: Job.objects.exclude(state__in=FINISHED).count() == 0,
                60,
                "every job to finish after the restart",
                details=job_states,
            )
            # The sweeper's grace outlasts the outage by STORE_GRACE_PERIOD: stay until it is over.
            time.sleep(max(0.0, 12 - (time.monotonic() - up_at)))
            assert procs.crashed() == {}, f"processes exited: {procs.crashed()}"
            assert states() == dict.fromkeys(NODES, "active")
        finally:
            procs.stop_all()
            logs = {name: procs.log(name) for name in procs.procs}

    convictions = list(
        MembershipEvent.objects.filter(id__gt=active_since, to_state__in=["suspect", "dead"]).values_list(
            "node__name", "to_state", "reason"
        )
    )
    assert convictions == [], f"nodes were suspected or convicted because Redis went away: {convictions}"

    submitted = {t[0]: t for t in before + after}
    applied = dict(Transfer.objects.values_list("transfer_id", "amount"))
    assert set(applied) == set(submitted), f"{len(set(submitted) - set(applied))} transfers never applied"
    assert dict(Account.objects.values_list("name", "balance")) == expected_balances(
        ACCOUNTS, OPENING, before + after
    ), "the ledger does not balance: some transfer applied twice or half"
    jobs = list(Job.objects.values_list("state", flat=True))
    assert sorted(set(jobs)) == ["succeeded"], f"job states: {sorted(set(jobs))}"

    order = Transfer.objects.order_by("id").values_list("from_account__name", "fencing_token")
    assert tokens_going_backwards(order) == {}, "a lock was granted twice: fencing tokens went backwards"
    assert in_flight > 0, "the restart must hit jobs in flight (queued or running) to test anything"
    resent = sum(int(n) for n in re.findall(r"sent (\d+) job\(s\) again", logs["sweeper"]))
    print(
        f"outage {up_at - down_at:.1f}s with {in_flight} jobs open; {resent} lost messages sent again; "
        f"heartbeat store refilled {refill:.1f}s after Redis came back"
    )
