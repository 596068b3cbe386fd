"""Documented defaults of ``RINGMASTER["CLUSTER"]``."""

from __future__ import annotations

from locks.conf import AppSettings

cluster_settings = AppSettings(
    "CLUSTER",
    {},
)
