"""Documented defaults of ``RINGMASTER["MONITORING"]``."""

from __future__ import annotations

from locks.conf import AppSettings

monitoring_settings = AppSettings(
    "MONITORING",
    {},
)
