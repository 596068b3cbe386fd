"""cluster_tasks used by the tests (registered on import, like any app's tasks module)."""

from __future__ import annotations

from cluster.tasks import JobContext, cluster_task

CALLS: list[dict] = []


@cluster_task(key="acct:{account}", lock="acct:{account}", idempotency_key="op:{op_id}", lock_ttl=5)
def record_op(ctx: JobContext, *, account: str, op_id: str, amount: int = 1) -> dict:
    CALLS.append({"op_id": op_id, "token": ctx.fencing_token, "attempt": ctx.attempt, "job": ctx.job_id})
    return {"op_id": op_id, "amount": amount, "token": ctx.fencing_token}


@cluster_task(idempotency_key="boom:{op_id}")
def explode(ctx: JobContext, *, op_id: str) -> None:
    raise RuntimeError(f"boom {op_id}")


@cluster_task(key="k:{name}")
def plain(ctx: JobContext, *, name: str, suffix: str = "") -> str:
    return name + suffix


# Called by ``hooked``'s body with its JobContext, after its write: a test's stand-in for what
# happens elsewhere while a body runs (a re-dispatch, a takeover of its key).
HOOKS: list = []


@cluster_task(key="h:{name}", idempotency_key="h:{name}")
def hooked(ctx: JobContext, *, name: str, write: bool = True) -> str:
    from django.contrib.auth.models import Group

    if write:
        Group.objects.create(name=name)
    for hook in HOOKS:
        hook(ctx)
    return name
