"""Cluster membership: nodes, their state machine, the ring of each epoch, and the event log."""

from __future__ import annotations

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

NODE_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class NodeState(models.TextChoices):
    JOINING = "joining", "joining"
    ACTIVE = "active", "active"
    SUSPECT = "suspect", "suspect"
    DRAINING = "draining", "draining"
    DEAD = "dead", "dead"
    LEFT = "left", "left"


# The legal transitions. `dead -> left` and `left -> joining` let an operator retire a dead node
# and let a node that left gracefully come back; everything else is the lifecycle of the issue.
TRANSITIONS: dict[str, frozenset[str]] = {
    NodeState.JOINING: frozenset({NodeState.ACTIVE, NodeState.LEFT}),
    NodeState.ACTIVE: frozenset({NodeState.DRAINING, NodeState.SUSPECT}),
    NodeState.SUSPECT: frozenset({NodeState.ACTIVE, NodeState.DEAD}),
    NodeState.DRAINING: frozenset({NodeState.LEFT}),
    NodeState.DEAD: frozenset({NodeState.JOINING, NodeState.LEFT}),
    NodeState.LEFT: frozenset({NodeState.JOINING}),
}

# Nodes in these states own ranges of the ring. A suspect keeps its ranges (so a flapping node
# does not move keys back and forth) but routing skips it; draining and dead nodes hand theirs over.
RING_STATES = frozenset({NodeState.ACTIVE, NodeState.SUSPECT})


class Node(models.Model):
    name = models.CharField(
        max_length=100,
        unique=True,
        validators=[RegexValidator(NODE_NAME_RE, "letters, digits, '.', '_' and '-' (it names a queue)")],
    )
    address = models.CharField(max_length=255, blank=True, default="")
    zone = models.CharField(max_length=64, blank=True, default="")
    weight = models.FloatField(default=1.0, validators=[MinValueValidator(0.0001)])
    state = models.CharField(max_length=16, choices=NodeState.choices, default=NodeState.JOINING, db_index=True)
    incarnation = models.PositiveIntegerField(default=1)
    metadata = models.JSONField(default=dict, blank=True)
    joined_at = models.DateTimeField(auto_now_add=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    state_changed_at = models.DateTimeField(auto_now_add=True)
    # sha256 of the node's API token: tokens are 256-bit random, so a fast hash is enough.
    token_hash = models.CharField(max_length=64, blank=True, default="", editable=False, db_index=True)

    class Meta:
        ordering = ["name"]
        # Operator actions, each its own permission (not "change"): the admin, the dashboard and the
        # audit log name exactly what a user may do to the cluster.
        permissions = [
            ("drain_node", "Can drain nodes"),
            ("activate_node", "Can activate nodes"),
            ("remove_node", "Can remove nodes from the cluster"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def in_ring(self) -> bool:
        return self.state in RING_STATES


class RingEpoch(models.Model):
    """The ring's assignment at one epoch: every process reads the same partition table."""

    epoch = models.PositiveBigIntegerField(primary_key=True)
    ring = models.JSONField()
    reason = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-epoch"]

    def __str__(self) -> str:
        return f"epoch {self.epoch}"


class MembershipEvent(models.Model):
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="events")
    from_state = models.CharField(max_length=16, choices=NodeState.choices, blank=True, default="")
    to_state = models.CharField(max_length=16, choices=NodeState.choices)
    epoch = models.PositiveBigIntegerField(db_index=True)
    incarnation = models.PositiveIntegerField()
    reason = models.CharField(max_length=255, blank=True, default="")
    actor = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.node_id}: {self.from_state or '-'} -> {self.to_state} (epoch {self.epoch})"


class ClusterState(models.Model):
    """One row: the current ring epoch. Locking it serialises membership changes across processes."""

    epoch = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"cluster at epoch {self.epoch}"


class JobState(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    RETRYING = "retrying", "retrying"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    REQUEUED = "requeued", "requeued"
    DUPLICATE = "duplicate", "duplicate"


# A job in one of these states may still run (or run again); the others are final.
OPEN_JOB_STATES = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.RETRYING, JobState.REQUEUED})


class Job(models.Model):
    """One call of a ``cluster_task``: where it was routed, how it ran, how it ended."""

    id = models.UUIDField(primary_key=True, editable=False)  # the Celery task id
    task_name = models.CharField(max_length=200)
    args = models.JSONField(null=True, blank=True)  # None when over the size cap; the digest stays
    args_digest = models.CharField(max_length=64)
    routing_key = models.CharField(max_length=255, blank=True, default="")
    lock_name = models.CharField(max_length=255, blank=True, default="")
    idempotency_key = models.CharField(max_length=255, blank=True, default="")
    owner_node = models.CharField(max_length=100, blank=True, default="")
    # Bumped on every re-dispatch; a message carrying an older number is stale and is dropped.
    dispatch = models.PositiveIntegerField(default=1)
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    lock_token = models.BigIntegerField(null=True, blank=True)
    ran_on = models.CharField(max_length=100, blank=True, default="")
    ran_on_incarnation = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        # Every run rewrites its row twice (running, then its end) and neither write can be a HOT
        # update (the state is indexed), so each index costs an insertion per write: the table
        # keeps only the indexes its queries use. The state ones are partial: a finished job
        # leaves them, so the final write touches the primary key and created_at only.
        indexes = [
            models.Index(
                fields=["owner_node", "state"], condition=Q(state__in=sorted(OPEN_JOB_STATES)), name="job_open_owner"
            ),
            models.Index(
                fields=["state", "updated_at"], condition=Q(state__in=sorted(OPEN_JOB_STATES)), name="job_open_state"
            ),
        ]
        permissions = [("retry_job", "Can retry failed jobs"), ("requeue_job", "Can requeue open jobs")]

    def __str__(self) -> str:
        return f"{self.task_name} {self.id} ({self.state})"
