"""App configuration for ``monitoring``."""

from __future__ import annotations

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    label = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # System checks, the signal relay to dashboards, the audit log's receivers, and the Celery
        # worker's signal receivers.
        from . import audit, checks, events, worker  # noqa: F401
