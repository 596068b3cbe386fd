"""App configuration for ``locks``."""

from __future__ import annotations

from django.apps import AppConfig


class LocksConfig(AppConfig):
    name = "locks"
    label = "locks"
    verbose_name = "Locks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.signals import setting_changed

        from . import checks  # noqa: F401  (registers the system checks)
        from .handler import reset_on_setting_changed

        setting_changed.connect(reset_on_setting_changed, dispatch_uid="locks-reset-backends")
