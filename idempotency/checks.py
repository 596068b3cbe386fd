"""System checks of the idempotency app."""

from __future__ import annotations

from django.core.checks import register

from locks.conf import settings_errors

from .settings import idempotency_settings


@register()
def check_idempotency_settings(app_configs, **kwargs) -> list:
    return settings_errors(idempotency_settings, "idempotency.E001")
