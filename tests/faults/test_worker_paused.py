"""A worker frozen with SIGSTOP past the dead threshold, then resumed with SIGCONT.

The frozen worker is caught in the middle of a transfer: it holds the account's lock, the
transfer's idempotency claim and an open database transaction (the test makes sure of it by
holding the account's row until the worker is stopped). The sweeper declares it dead and its
jobs move; when it wakes, its late writes are refused (the job's dispatch number moved on), its
lock release finds the lock lost, and it notices that it was declared dead and rejoins as a
new incarnation. Every transfer is applied exactly once.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import psycopg
import pytest

from cluster.models import Job, MembershipEvent, Node
from cluster.selectors import owner_of
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

NODES = ("fz-a", "fz-b", "fz-c")
ACCOUNTS = [f"acct-{i}" for i in range(8)]
GATE = "gate"  # the account whose transfer the frozen worker is caught in
OPENING = 100_000
FINISHED = ("succeeded", "duplicate", "failed")


def states() -> dict[str, str]:
    return dict(Node.objects.filter(name__in=NODES).values_list("name", "state"))


def job_states() -> dict[str, int]:
    return dict(Counter(Job.objects.values_list("state", flat=True)))


def waiting_on_a_row_lock(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchone()[0] > 0


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_paused_worker_is_fenced_off_and_rejoins(child_env, tmp_path):
    transfers = make_transfers(ACCOUNTS, 120, seed=31)
    gated = [[f"gated-{i}", GATE, ACCOUNTS[i], 10 + i] for i in range(3)]
    with services.private_redis_server() as server:
        env = deployment_env(child_env, REDIS_URL=server.url)
        procs = Processes(env, tmp_path)
        gate = psycopg.connect(env["DATABASE_URL"].replace("postgres://", "postgresql://", 1), autocommit=True)
        try:
            procs.sweeper()
            for name in NODES:
                procs.worker(name)
            wait_for(lambda: states() == dict.fromkeys(NODES, "active"), 60, "3 active nodes")
            victim = owner_of(f"account:{GATE}")
            incarnation = Node.objects.get(name=victim).incarnation
            first_event = MembershipEvent.objects.order_by("-id").values_list("id", flat=True).first()

            # Hold the gate account's row so that its first transfer blocks inside its transaction.
            driver(env, "submit", {"accounts": {GATE: OPENING, **dict.fromkeys(ACCOUNTS, OPENING)}, "transfers": []})
            gate.execute("BEGIN")
            gate.execute("SELECT balance FROM ledger_account WHERE name = %s FOR UPDATE", [GATE])
            assert driver(env, "submit", {"transfers": gated + transfers, "batch": 200})["errors"] == []
            wait_for(
                lambda: (
                    Job.objects.filter(idempotency_key="transfer:gated-0", state="running", ran_on=victim).exists()
                    and waiting_on_a_row_lock(gate)
                ),
                30,
                "the victim to be inside the gated transfer, waiting for the row",
            )
            procs.signal(victim, signal.SIGSTOP)
            stopped_at = time.monotonic()
            gate.execute("COMMIT")  # the victim's UPDATE now completes in the database; the victim sleeps

            wait_for(lambda: states()[victim] == "dead", 30, "the frozen worker to be declared dead")
            dead_after = time.monotonic() - stopped_at
            moved = Job.objects.get(idempotency_key="transfer:gated-0")
            assert moved.dispatch > 1 and moved.owner_node != victim, "the frozen worker's job moved elsewhere"
            time.sleep(2)
            procs.signal(victim, signal.SIGCONT)
            frozen_for = time.monotonic() - stopped_at

            wait_for(
                lambda: Job.objects.exclude(state__in=FINISHED).count() == 0,
                45,
                "every job to finish",
                details=job_states,
            )
            wait_for(lambda: states()[victim] == "active", 30, "the woken worker to rejoin and be active again")
            assert procs.crashed() == {}, f"processes exited: {procs.crashed()}"
        finally:
            gate.close()
            procs.stop_all()
            log = procs.log(victim) if "victim" in locals() else ""

    node = Node.objects.get(name=victim)
    assert node.incarnation > incarnation, "the woken worker rejoined with a new incarnation"
    events = list(
        MembershipEvent.objects.filter(id__gt=first_event, node=node).order_by("id").values_list("to_state", flat=True)
    )
    assert events[:4] == ["suspect", "dead", "joining", "active"], events
    assert "was taken over while it ran here" in log, "the woken worker's late transfer was not refused"
    assert f"release of lost lock 'account:{GATE}'" in log, "the woken worker's lock release did not return False"
    assert "found itself dead" in log and "rejoined as incarnation" in log

    gated_applied = dict(
        Transfer.objects.filter(transfer_id__startswith="gated-").values_list("transfer_id", "applied_by")
    )
    assert set(gated_applied) == {g[0] for g in gated}
    assert gated_applied["gated-0"] != victim, "the frozen worker's write of gated-0 must not have committed"
    submitted = {t[0] for t in transfers + gated}
    assert set(Transfer.objects.values_list("transfer_id", flat=True)) == submitted
    expected = expected_balances([GATE, *ACCOUNTS], OPENING, transfers + gated)
    assert dict(Account.objects.values_list("name", "balance")) == expected, "the ledger does not balance"
    assert job_states() == {"succeeded": len(submitted)}
    order = Transfer.objects.order_by("id").values_list("from_account__name", "fencing_token")
    assert tokens_going_backwards(order) == {}, "a lock was granted twice: fencing tokens went backwards"
    print(f"declared dead {dead_after:.1f}s after SIGSTOP; resumed after {frozen_for:.1f}s")
