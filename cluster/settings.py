"""Documented defaults of ``RINGMASTER["CLUSTER"]``."""

from __future__ import annotations

from locks.conf import AppSettings

cluster_settings = AppSettings(
    "CLUSTER",
    {
        # Partitions of a ring built from nothing (a power of two). 2**16 keeps a 1,000-node ring within
        # one partition of perfect balance; see benchmarks/bench_ring.py.
        "PARTITIONS": 2**16,
        # How often (seconds) a process checks whether the ring epoch moved on. current_ring() is called
        # on every dispatch, so it costs at most one small query per interval per process.
        "RING_CHECK_INTERVAL": 1.0,
        # Ring snapshots kept (the event log keeps every change forever).
        "RING_HISTORY": 50,
        # Finished job records older than this many days are deleted by the cluster.trim_jobs beat task.
        "JOB_RETENTION_DAYS": 7,
        # Seconds a queued, requeued or retrying job may go without progress before the sweeper
        # publishes its message again (it may have been lost with a broker restart); see
        # cluster.jobs.jobs_resend_stalled. Keep it above the usual queue wait and retry backoff.
        "JOB_RESEND_AFTER": 300.0,
    },
)
