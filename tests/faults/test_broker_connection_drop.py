"""The broker connection dropped while tasks are in flight: every client of the private Redis killed.

``CLIENT KILL`` cuts every connection (the workers' consumers, their acks, the locks, the
heartbeats, the sweeper's) while Redis keeps its data, three times in a row while three workers
run transfers. Messages whose ack was lost with the connection (``acks_late``) come back after the
broker's visibility timeout; the job records and idempotency keys absorb every such copy, so each
transfer is applied exactly once, and nobody is convicted for the cut.
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

NODES = ("bk-a", "bk-b", "bk-c")
ACCOUNTS = [f"acct-{i}" for i in range(12)]
OPENING = 100_000
CUTS = 3
FINISHED = ("succeeded", "duplicate", "failed")
# What the workers log when a copy of a message arrives for a job that ran already or moved on.
ABSORBED = re.compile(r"redelivery ignored|dropped a stale copy|IdempotencyInProgress")


def states() -> dict[str, str]:
    return dict(Node.objects.filter(name__in=NODES).values_list("name", "state"))


def job_states() -> dict[str, int]:
    return dict(Counter(Job.objects.values_list("state", flat=True)))


def cut_every_connection(url: str) -> int:
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        return client.client_kill_filter(_type="normal", skipme=True) + client.client_kill_filter(_type="pubsub")
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_broker_connection_drop_is_absorbed(child_env, tmp_path):
    transfers = make_transfers(ACCOUNTS, 500, seed=41)
    with services.private_redis_server() as server:
        env = deployment_env(child_env, REDIS_URL=server.url)
        procs = Processes(env, tmp_path)
        try:
            procs.sweeper()
            for name in NODES:
                procs.worker(name, loglevel="INFO")
            wait_for(lambda: states() == dict.fromkeys(NODES, "active"), 60, "3 active nodes")
            active_since = MembershipEvent.objects.order_by("-id").values_list("id", flat=True).first()

            accounts = dict.fromkeys(ACCOUNTS, OPENING)
            assert driver(env, "submit", {"accounts": accounts, "transfers": transfers})["errors"] == []
            wait_for(lambda: Transfer.objects.count() >= 50, 30, "transfers under way")
            in_flight = Job.objects.exclude(state__in=FINISHED).count()
            cut = []
            for _ in range(CUTS):
                cut.append(cut_every_connection(server.url))
                time.sleep(1.5)
            cut_at = time.monotonic()

            wait_for(
                lambda: Job.objects.exclude(state__in=FINISHED).count() == 0,
                60,
                "every job to finish after the cuts",
                details=job_states,
            )
            # Copies whose ack was lost come back after the visibility timeout (15 s here).
            wait_for(
                lambda: sum(len(ABSORBED.findall(procs.log(name))) for name in NODES) > 0,
                max(5.0, 40 - (time.monotonic() - cut_at)),
                "a redelivered copy to reach a worker and be absorbed",
            )
            assert procs.crashed() == {}, f"processes exited: {procs.crashed()}"
            assert states() == dict.fromkeys(NODES, "active")
        finally:
            procs.stop_all()
            logs = "".join(procs.log(name) for name in NODES)

    assert min(cut) > 0, f"CLIENT KILL found no connections to cut: {cut}"
    assert in_flight > 0, "the cuts must hit jobs in flight to test anything"
    convictions = list(
        MembershipEvent.objects.filter(id__gt=active_since, to_state__in=["suspect", "dead"]).values_list(
            "node__name", "to_state", "reason"
        )
    )
    assert convictions == [], f"nodes were suspected or convicted for a dropped connection: {convictions}"
    submitted = {t[0] for t in transfers}
    assert set(Transfer.objects.values_list("transfer_id", flat=True)) == submitted, "each transfer applied once"
    expected = expected_balances(ACCOUNTS, OPENING, transfers)
    assert dict(Account.objects.values_list("name", "balance")) == expected, "the ledger does not balance"
    assert job_states() == {"succeeded": len(submitted)}
    order = Transfer.objects.order_by("id").values_list("from_account__name", "fencing_token")
    assert tokens_going_backwards(order) == {}, "a lock was granted twice: fencing tokens went backwards"
    absorbed = Counter(match for match in ABSORBED.findall(logs))
    print(f"cut {cut} connections with {in_flight} jobs open; redelivered copies absorbed: {dict(absorbed)}")
