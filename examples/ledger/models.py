"""Accounts and the transfers applied to them."""

from __future__ import annotations

from django.db import models


class Account(models.Model):
    name = models.CharField(max_length=50, unique=True)
    balance = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}: {self.balance}"


class Transfer(models.Model):
    """One applied transfer. ``transfer_id`` is unique: a second application could not even commit."""

    transfer_id = models.CharField(max_length=100, unique=True)
    from_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="outgoing")
    to_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="incoming")
    amount = models.PositiveBigIntegerField()
    applied_by = models.CharField(max_length=100, blank=True, default="")
    fencing_token = models.BigIntegerField(null=True, blank=True)
    applied_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.transfer_id}: {self.amount} {self.from_account_id} -> {self.to_account_id}"
