"""System checks of the monitoring app."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register

from locks.conf import settings_errors

from .settings import monitoring_settings


@register()
def check_monitoring_settings(app_configs, **kwargs) -> list:
    return settings_errors(monitoring_settings, "monitoring.E001")


@register()
def check_heartbeat_rate_limit(app_configs, **kwargs) -> list:
    from .ratelimit import RateLimit

    if settings_errors(monitoring_settings, "monitoring.E001"):
        return []  # reported above
    errors = []
    rate, burst = monitoring_settings.HEARTBEAT_RATE, monitoring_settings.HEARTBEAT_BURST
    if rate is not None:
        try:
            RateLimit(rate, burst)
        except ValueError as exc:
            errors.append(
                Error(
                    f"RINGMASTER['MONITORING'] heartbeat rate limit is invalid: {exc}.",
                    hint="Set HEARTBEAT_RATE to a number > 0 (None: no limit) and HEARTBEAT_BURST to an int >= 1.",
                    id="monitoring.E002",
                )
            )
        alias = monitoring_settings.HEARTBEAT_RATE_CACHE
        if alias not in settings.CACHES:
            errors.append(
                Error(
                    f"RINGMASTER['MONITORING']['HEARTBEAT_RATE_CACHE'] names the cache {alias!r}, which CACHES lacks.",
                    hint=f"Use one of {sorted(settings.CACHES)}.",
                    id="monitoring.E003",
                )
            )
    return errors
