"""Reads of cluster membership: the current ring and who owns a key.

``current_ring()`` is called on every task dispatch, so each process keeps the ring it last loaded
and asks the database for the epoch at most once per ``RING_CHECK_INTERVAL`` seconds; a change
made in this process is seen at once (the cache drops on ``membership_changed``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.db.models import QuerySet

from .models import ClusterState, Job, JobState, MembershipEvent, Node, RingEpoch
from .ring import HashRing
from .settings import cluster_settings
from .signals import membership_changed

_cache_lock = threading.Lock()
_cached: tuple[HashRing, float] | None = None  # (ring, monotonic time of the last epoch check)


def ring_at(epoch: int) -> HashRing:
    """The ring persisted with ``epoch`` (epoch 0, before any change, is the empty ring)."""
    if epoch == 0:
        return HashRing({}, partitions=cluster_settings.PARTITIONS)
    return HashRing.from_dict(RingEpoch.objects.get(epoch=epoch).ring)


def current_epoch() -> int:
    return ClusterState.objects.filter(pk=1).values_list("epoch", flat=True).first() or 0


def current_ring() -> HashRing:
    """The ring of the current epoch (its ``epoch`` attribute says which)."""
    global _cached
    cached = _cached
    now = time.monotonic()
    if cached is not None and now - cached[1] < cluster_settings.RING_CHECK_INTERVAL:
        return cached[0]
    epoch = current_epoch()
    if cached is not None and cached[0].epoch == epoch:
        ring = cached[0]
    else:
        ring = ring_at(epoch)
    with _cache_lock:
        _cached = (ring, now)
    return ring


def forget_cached_ring(**kwargs: object) -> None:
    global _cached
    with _cache_lock:
        _cached = None


membership_changed.connect(forget_cached_ring, dispatch_uid="cluster-forget-cached-ring")


def owner_of(key: str | bytes) -> str:
    """The node that owns ``key`` in the current ring (raises LookupError on an empty ring)."""
    return current_ring().get_node(key)


def owners_of(key: str | bytes, n: int) -> list[str]:
    """The key's preference list: ``n`` distinct nodes, the owner first, spread across zones."""
    return current_ring().get_nodes(key, n)


def recent_events(*, limit: int = 50) -> QuerySet[MembershipEvent]:
    return MembershipEvent.objects.select_related("node").order_by("-id")[:limit]


_JOB_FIELDS = (
    "id",
    "task_name",
    "state",
    "owner_node",
    "ran_on",
    "attempts",
    "created_at",
    "started_at",
    "finished_at",
)


def recent_jobs(*, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` jobs plus any still running (up to ``limit`` more), newest first, as plain dicts.

    Times are Unix timestamps; ``duration`` is seconds from start to finish (None until both are known).
    """
    recent = list(Job.objects.order_by("-created_at", "-id").values(*_JOB_FIELDS)[:limit])
    seen = {row["id"] for row in recent}
    running = Job.objects.filter(state=JobState.RUNNING).order_by("-created_at", "-id").values(*_JOB_FIELDS)[:limit]
    rows = recent + [row for row in running if row["id"] not in seen]
    rows.sort(key=lambda row: row["created_at"], reverse=True)
    result = []
    for row in rows:
        started, finished = row["started_at"], row["finished_at"]
        result.append(
            {
                **row,
                "id": str(row["id"]),
                "created_at": row["created_at"].timestamp(),
                "started_at": started.timestamp() if started else None,
                "finished_at": finished.timestamp() if finished else None,
                "duration": (finished - started).total_seconds() if started and finished else None,
            }
        )
    return result


def node_for_token(token: str) -> Node | None:
    """The node whose API token this is, or None (unknown or rotated away).

    Looked up by the token's sha256: the secret itself is never compared, and an index lookup on a
    digest of a 256-bit random token tells a timing attacker nothing about the token.
    """
    from .services import hash_token

    if not isinstance(token, str) or not token:
        return None
    return Node.objects.filter(token_hash=hash_token(token)).only("name", "state", "incarnation").first()
