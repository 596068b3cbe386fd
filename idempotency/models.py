"""Models of the ``idempotency`` app: one record per (scope, key), claimed atomically."""

from __future__ import annotations

from django.db import models

from locks.fencing import FenceTokenField


class IdempotencyRecord(models.Model):
    """A claimed idempotency key: who holds it, what the request looked like, and its outcome.

    Written only by ``idempotency.services``: the claim is one ``INSERT ... ON CONFLICT`` and
    every later write is conditional on ``fencing_token``, so a holder whose lease was taken
    over can no longer change the row.
    """

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress", "in progress"
        COMPLETED = "completed", "completed"

    scope = models.CharField(
        max_length=255,
        help_text="Who and where: 'user:42 POST /api/transfers' for requests, 'fn:app.module.func' for calls.",
    )
    key = models.CharField(max_length=255, help_text="The client's idempotency key (1-255 printable ASCII).")
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the request or of the call's arguments.")
    state = models.CharField(max_length=16, choices=State.choices, default=State.IN_PROGRESS)

    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=list, blank=True, help_text="[name, value] pairs, in order.")
    response_body = models.BinaryField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True, help_text="A function's JSON result.")

    locked_until = models.DateTimeField(null=True, blank=True, help_text="End of the holder's lease.")
    owner = models.CharField(max_length=255, blank=True, help_text="host:pid:attempt of the holder.")
    fencing_token = FenceTokenField(help_text="Grows by one with every claim of the key; stale holders are refused.")

    created_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(help_text="After this the key may be claimed afresh and the reaper deletes it.")
    replay_count = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "idempotency record"
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="idempotency_scope_key_uniq")]
        indexes = [
            models.Index(fields=["expires_at"], name="idempotency_expires_idx"),
            models.Index(fields=["created_at"], name="idempotency_created_idx"),
            # The admin searches by key prefix; the pattern operator class lets PostgreSQL use the
            # index for LIKE 'abc%' whatever the collation (other databases ignore it).
            models.Index(fields=["key"], name="idempotency_key_idx", opclasses=["varchar_pattern_ops"]),
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.key} ({self.state})"

    @property
    def is_http(self) -> bool:
        return self.response_status is not None
