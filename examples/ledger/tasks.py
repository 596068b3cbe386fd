"""The ledger's jobs: how an app uses ``cluster_task``."""

from __future__ import annotations

import random
import uuid

from celery import shared_task
from django.db import transaction
from django.db.models import F

from cluster.tasks import JobContext, cluster_task

from .models import Account, Transfer


@cluster_task(
    key="account:{from_account}",  # jobs of one account go to the node that owns it
    lock="account:{from_account}",  # one transfer out of an account at a time, auto-renewed
    idempotency_key="transfer:{transfer_id}",  # a duplicate returns the first result
    lock_ttl=10,
    lock_timeout=5,  # wait for the account's lock a while before retrying with backoff
    max_retries=20,
)
def transfer(ctx: JobContext, *, transfer_id: str, from_account: str, to_account: str, amount: int) -> dict:
    """Move ``amount`` between two accounts. Runs in the job's transaction: all of it commits, or none."""
    source = Account.objects.get(name=from_account)
    target = Account.objects.get(name=to_account)
    Account.objects.filter(pk=source.pk).update(balance=F("balance") - amount)
    Account.objects.filter(pk=target.pk).update(balance=F("balance") + amount)
    Transfer.objects.create(
        transfer_id=transfer_id,
        from_account=source,
        to_account=target,
        amount=amount,
        applied_by=ctx.node,
        fencing_token=ctx.fencing_token,
    )
    return {"transfer_id": transfer_id, "node": ctx.node, "token": ctx.fencing_token}


DEMO_ACCOUNTS = [f"acct-{i}" for i in range(8)]
DEMO_OPENING_BALANCE = 1_000_000


def ensure_demo_accounts() -> None:
    for name in DEMO_ACCOUNTS:
        Account.objects.get_or_create(name=name, defaults={"balance": DEMO_OPENING_BALANCE})


@shared_task(name="ledger.demo_traffic")
def demo_traffic(count: int = 5, duplicate_ratio: float = 0.2) -> int:
    """Beat task of the demo: a few transfers every tick, some submitted twice on purpose."""
    ensure_demo_accounts()
    submitted = 0
    with transaction.atomic():
        for _ in range(count):
            source, target = random.sample(DEMO_ACCOUNTS, 2)  # noqa: S311 (demo traffic, not security)
            kwargs = {
                "transfer_id": uuid.uuid4().hex,
                "from_account": source,
                "to_account": target,
                "amount": random.randint(1, 100),  # noqa: S311
            }
            transfer.delay(**kwargs)
            submitted += 1
            if random.random() < duplicate_ratio:  # noqa: S311
                transfer.delay(**kwargs)
                submitted += 1
    return submitted
