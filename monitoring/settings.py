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
        # Per-node rate limit of POST /api/v1/nodes/{name}/heartbeat (monitoring/ratelimit.py): beats
        # per second a node may send on average (None: no limit), and how many may come back to back.
        # Over it the API answers 429 with Retry-After. A node beats once per HEARTBEAT_INTERVAL, so
        # the defaults leave it ten times its need while a runaway client costs one cache call a beat.
        "HEARTBEAT_RATE": 10.0,
        "HEARTBEAT_BURST": 20,
        # Cache alias holding the limiter's state (one small key per node).
        "HEARTBEAT_RATE_CACHE": "default",
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
