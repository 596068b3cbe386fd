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
