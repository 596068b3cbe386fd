"""Documented defaults of ``RINGMASTER["MONITORING"]``."""

from __future__ import annotations

from locks.conf import AppSettings

monitoring_settings = AppSettings(
    "MONITORING",
    {
        # Seconds between two heartbeats of a node (workers send them from a background thread).
        "HEARTBEAT_INTERVAL": 1.0,
        # Where the latest beat of each node lives (not the database): a BACKEND class and its OPTIONS.
        "HEARTBEAT_STORE": {
            "BACKEND": "monitoring.heartbeats.CacheHeartbeatStore",
            "OPTIONS": {"cache": "default", "ttl": 3600},
        },
        # Largest heartbeat request body accepted, in bytes.
        "HEARTBEAT_MAX_BODY": 4096,
        # Seconds between two copies of last_heartbeat_at from the store to the database.
        "HEARTBEAT_DB_REFRESH": 5.0,
        # Seconds between two sweeps of the failure detector.
        "SWEEP_INTERVAL": 1.0,
        # Keyword overrides of monitoring.liveness.LivenessPolicy (thresholds, periods, "detector":
        # "phi" or "fixed", "fixed_timeout", ...). Its docstring documents each default.
        "LIVENESS": {},
        # Seconds after the heartbeat store comes back during which the sweeper convicts nobody.
        "STORE_GRACE_PERIOD": 10.0,
        # Lock (from the locks app) that elects the one sweeper acting at a time, and its lease.
        "SWEEPER_LOCK": "ringmaster:sweeper",
        "SWEEPER_LOCK_TTL": 10.0,
        # Bearer token for GET /metrics; when None only loopback clients and staff may scrape.
        "METRICS_TOKEN": None,
    },
)
