"""App configuration for the example ledger."""

from __future__ import annotations

from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "examples.ledger"
    label = "ledger"
    verbose_name = "Example ledger"
    default_auto_field = "django.db.models.BigAutoField"
