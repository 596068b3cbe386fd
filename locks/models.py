"""Models of the ``locks`` app: the database backend's tables and the force-release audit log.

On PostgreSQL the lease, counter and waiter tables are UNLOGGED (see migration 0002): a grant
or release writes no WAL and waits for no fsync. A PostgreSQL crash or a failover to a replica
empties them, which releases every database lock at once, as a Redis restart without
persistence does; fencing tokens still never go backwards because each one is at least the
database clock in microseconds (see backends/db.py).
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class LockLease(models.Model):
    """One row per lock the database backend holds (a row past ``expires_at`` may be taken over)."""

    name = models.CharField(max_length=255, primary_key=True)
    owner = models.CharField(max_length=255)
    token = models.BigIntegerField()
    acquired_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        verbose_name = "held lock"
        verbose_name_plural = "held locks"
        default_permissions = ("view",)
        permissions = [("force_release_locklease", "Can force-release held locks")]

    def __str__(self) -> str:
        return f"{self.name} (token {self.token})"


class LockCounter(models.Model):
    """The last fencing token granted per lock name; survives releases and restarts."""

    name = models.CharField(max_length=255, primary_key=True)
    last_token = models.BigIntegerField()
    # Grants in a row to a caller that was not first in line while others waited (see MAX_BARGES).
    streak = models.IntegerField(default=0)

    class Meta:
        verbose_name = "fencing counter"
        default_permissions = ("view",)

    def __str__(self) -> str:
        return f"{self.name}: {self.last_token}"


class LockWaiter(models.Model):
    """A place in line for a database lock: the lowest live id is served first (FIFO fairness)."""

    name = models.CharField(max_length=255)
    owner = models.CharField(max_length=255)
    expires_at = models.DateTimeField()

    class Meta:
        verbose_name = "lock waiter"
        default_permissions = ("view",)
        indexes = [models.Index(fields=["name", "id"], name="locks_waiter_name_id")]

    def __str__(self) -> str:
        return f"{self.name} #{self.id} ({self.owner})"


class LockAudit(models.Model):
    """What an operator did to a lock: who, when, which lock and token."""

    class Action(models.TextChoices):
        FORCE_RELEASE = "force_release", "force-release"

    action = models.CharField(max_length=32, choices=Action.choices)
    name = models.CharField(max_length=255)
    backend = models.CharField(max_length=100)
    token = models.BigIntegerField(null=True, blank=True)
    owner = models.CharField(max_length=255, blank=True)
    actor = models.CharField(max_length=150)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = "lock audit entry"
        verbose_name_plural = "lock audit log"
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["name", "-at"], name="locks_audit_name_at")]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.name} token {self.token} by {self.actor}"
