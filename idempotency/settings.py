"""Documented defaults of ``RINGMASTER["IDEMPOTENCY"]``."""

from __future__ import annotations

from locks.conf import AppSettings

idempotency_settings = AppSettings(
    "IDEMPOTENCY",
    {},
)
