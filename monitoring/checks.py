"""System checks of the monitoring app."""

from __future__ import annotations

from django.core.checks import register

from locks.conf import settings_errors

from .settings import monitoring_settings


@register()
def check_monitoring_settings(app_configs, **kwargs) -> list:
    return settings_errors(monitoring_settings, "monitoring.E001")
