"""Documented defaults of ``RINGMASTER["LOCKS"]``."""

from __future__ import annotations

from .conf import AppSettings

lock_settings = AppSettings(
    "LOCKS",
    {
        # Default lease length, in seconds, when a caller passes no ttl.
        "DEFAULT_TTL": 30.0,
    },
)
