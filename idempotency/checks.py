"""System checks of the idempotency app."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.checks import Error, Warning, register

from locks.conf import settings_errors

from .settings import idempotency_settings

MIDDLEWARE_PATH = "idempotency.middleware.IdempotencyMiddleware"
_HINT = 'Fix RINGMASTER["IDEMPOTENCY"] in config/settings.py (idempotency/settings.py documents each key).'


@register()
def check_idempotency_settings(app_configs, **kwargs) -> list:
    errors = settings_errors(idempotency_settings, "idempotency.E001")
    if errors:
        return errors
    return _value_errors() + _middleware_warnings()


def _positive_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _value_errors() -> list:
    conf = idempotency_settings
    problems = []
    if not isinstance(conf.METHODS, list | tuple) or not all(
        isinstance(m, str) and m == m.upper() and m not in ("GET", "HEAD", "OPTIONS", "TRACE") for m in conf.METHODS
    ):
        problems.append("METHODS must be a list of upper-case unsafe HTTP methods such as ['POST', 'PATCH']")
    for name in ("APPLY_TO_ALL_VIEWS", "REQUIRE_KEY", "ALLOW_ANONYMOUS"):
        if not isinstance(getattr(conf, name), bool):
            problems.append(f"{name} must be True or False")
    ttl = conf.DEFAULT_TTL
    if not (isinstance(ttl, timedelta) and ttl > timedelta(0)) and not _positive_number(ttl):
        problems.append("DEFAULT_TTL must be a positive timedelta or number of seconds")
    if not _positive_number(conf.LEASE_SECONDS):
        problems.append("LEASE_SECONDS must be a positive number of seconds")
    for name in ("MAX_REQUEST_BYTES", "MAX_RESPONSE_BYTES", "REAPER_BATCH_SIZE"):
        value = getattr(conf, name)
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            problems.append(f"{name} must be a positive int")
    if not isinstance(conf.FINGERPRINT_HEADERS, list | tuple) or not all(
        isinstance(h, str) for h in conf.FINGERPRINT_HEADERS
    ):
        problems.append("FINGERPRINT_HEADERS must be a list of header names")
    stored = conf.STORED_HEADERS
    if stored != "*" and not (isinstance(stored, list | tuple) and all(isinstance(h, str) for h in stored)):
        problems.append('STORED_HEADERS must be "*" or a list of header names')
    if conf.DATABASE not in settings.DATABASES:
        problems.append(f"DATABASE {conf.DATABASE!r} is not an alias in DATABASES")
    return [Error(f'RINGMASTER["IDEMPOTENCY"]: {p}.', hint=_HINT, id="idempotency.E002") for p in problems]


def _middleware_warnings() -> list:
    if idempotency_settings.APPLY_TO_ALL_VIEWS and MIDDLEWARE_PATH not in settings.MIDDLEWARE:
        return [
            Warning(
                "APPLY_TO_ALL_VIEWS is on but IdempotencyMiddleware is not installed, so only views decorated "
                "with @idempotent_view honour the Idempotency-Key header.",
                hint=f"Add {MIDDLEWARE_PATH!r} to MIDDLEWARE after AuthenticationMiddleware.",
                id="idempotency.W001",
            )
        ]
    return []
