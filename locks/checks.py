"""System checks of the locks app."""

from __future__ import annotations

from django.core.checks import Error, register

from .conf import settings_errors
from .settings import lock_settings


@register()
def check_lock_settings(app_configs, **kwargs) -> list:
    return settings_errors(lock_settings, "locks.E001")


@register()
def check_lock_backends(app_configs, **kwargs) -> list:
    from django.conf import settings

    locks = getattr(settings, "LOCKS", None)
    if not isinstance(locks, dict) or "default" not in locks:
        return [
            Error(
                "settings.LOCKS must be a dict of aliases with a 'default' alias.",
                hint='Define LOCKS = {"default": {"BACKEND": "locks.backends.db.DatabaseLockBackend"}}.',
                id="locks.E002",
            )
        ]
    errors = []
    for alias, config in locks.items():
        if not isinstance(config, dict) or not config.get("BACKEND"):
            errors.append(
                Error(
                    f"LOCKS[{alias!r}] has no BACKEND.",
                    hint="Give it a dotted path to a backend class.",
                    id="locks.E003",
                )
            )
    return errors
