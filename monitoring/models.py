"""Models of the ``monitoring`` app: the operators' audit log."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class AuditEntry(models.Model):
    """One thing an operator did to the cluster, from the admin or the dashboard.

    Why here and how it is written: ``monitoring`` is the top layer, the only one that sees every
    app, so the one log of "who drained, requeued, retried, activated, removed or force-released
    what" lives here. ``cluster`` and ``locks`` cannot import it; they send an ``action_performed``
    signal (``cluster.signals``, ``locks.signals``) and ``monitoring.audit`` writes this row in the
    receiver, synchronously and inside the transaction of the change, so an action and its entry
    commit together (a failed audit write rolls the action back). Actions that start in
    ``monitoring`` itself (the dashboard's drain) call ``monitoring.audit.audit_record`` directly.
    ``locks.LockAudit`` stays: it is the lock primitive's own record, written by the backend in the
    release's transaction, and works without this app.
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    # The username as it was (a user may be renamed or deleted later); ``user`` links while it exists.
    actor = models.CharField(max_length=150, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=64, db_index=True)  # "node.drain", "job.retry", "lock.force_release", ...
    target = models.CharField(max_length=255, db_index=True)  # a node name, a job id, "<backend>:<lock name>"
    source = models.CharField(max_length=32, blank=True, default="")  # "admin", "dashboard"
    detail = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"
        ordering = ["-at", "-id"]
        default_permissions = ("view",)

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.target}"
