"""System checks of the locks app."""

from __future__ import annotations

import math
import sqlite3

from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured

from .conf import settings_errors
from .settings import lock_settings

SQLITE_MIN = (3, 35, 0)  # RETURNING, used by every statement of the database backend


@register()
def check_lock_settings(app_configs, **kwargs) -> list:
    errors = settings_errors(lock_settings, "locks.E001")
    if errors:
        return errors
    for key in ("DEFAULT_TTL", "POLL_INTERVAL_MIN", "POLL_INTERVAL_MAX", "WAITER_TTL", "RENEW_FRACTION"):
        value = getattr(lock_settings, key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            errors.append(
                Error(
                    f'RINGMASTER["LOCKS"]["{key}"] must be a positive number, got {value!r}.',
                    hint="Fix it in config/settings.py or remove it to use the default (locks/settings.py).",
                    id="locks.E006",
                )
            )
    if not errors and lock_settings.POLL_INTERVAL_MIN > lock_settings.POLL_INTERVAL_MAX:
        errors.append(
            Error(
                'RINGMASTER["LOCKS"]["POLL_INTERVAL_MIN"] is larger than POLL_INTERVAL_MAX.',
                hint="Make the minimum poll interval at most the maximum.",
                id="locks.E006",
            )
        )
    if not errors and not 0 < lock_settings.RENEW_FRACTION < 1:
        errors.append(
            Error(
                'RINGMASTER["LOCKS"]["RENEW_FRACTION"] must be between 0 and 1.',
                hint="A lease renewed every ttl x 1/3 survives two missed renewals; keep it well below 1.",
                id="locks.E006",
            )
        )
    return errors


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
            continue
        errors.extend(_backend_errors(alias))
    return errors


def _backend_errors(alias: str) -> list:
    """Build the backend (no connection is opened) to surface a bad path, OPTIONS or LOCATION."""
    from .backends.db import DatabaseLockBackend
    from .handler import backends

    try:
        backend = backends.create(alias)
    except ImproperlyConfigured as exc:
        return [
            Error(
                str(exc),
                hint="Fix this alias in settings.LOCKS (BACKEND, LOCATION, OPTIONS).",
                id="locks.E004",
            )
        ]
    if isinstance(backend, DatabaseLockBackend):
        from django.db import connections

        if connections[backend.using].vendor == "sqlite" and sqlite3.sqlite_version_info < SQLITE_MIN:
            return [
                Error(
                    f"LOCKS[{alias!r}] uses SQLite {sqlite3.sqlite_version}; the database lock backend needs "
                    f"{'.'.join(map(str, SQLITE_MIN))} or newer (RETURNING).",
                    hint="Use a Python built against a newer SQLite, or PostgreSQL.",
                    id="locks.E005",
                )
            ]
    return []
