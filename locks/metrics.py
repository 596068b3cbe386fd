"""Prometheus metrics of the lock backends, on the default registry that monitoring exposes.

Labels are the backend alias (and an outcome): never the lock name, whose cardinality is
unbounded. ``collectors()`` is the interface monitoring may read; locks never imports monitoring.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Histogram

WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
HOLD_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)

ACQUIRES = Counter(
    "ringmaster_lock_acquire_attempts",
    "Lock acquire calls by outcome (acquired, not_acquired, error).",
    ["backend", "outcome"],
)
CONTENTION = Counter(
    "ringmaster_lock_contention",
    "Acquire calls that found the lock held on their first try.",
    ["backend"],
)
WAIT = Histogram(
    "ringmaster_lock_wait_seconds",
    "Time from an acquire call to its grant or its giving up.",
    ["backend"],
    buckets=WAIT_BUCKETS,
)
HOLD = Histogram(
    "ringmaster_lock_hold_seconds",
    "Time from grant to release.",
    ["backend"],
    buckets=HOLD_BUCKETS,
)
RENEW_FAILURES = Counter(
    "ringmaster_lock_renew_failures",
    "Automatic renewals that failed (backend error or lease gone).",
    ["backend"],
)
LOST = Counter("ringmaster_lock_lost", "Leases found lost by their holder.", ["backend"])
FORCE_RELEASES = Counter("ringmaster_lock_force_releases", "Locks broken by an operator.", ["backend"])


def collectors() -> list:
    """Every collector of this module, for a registry other than the default one."""
    return [ACQUIRES, CONTENTION, WAIT, HOLD, RENEW_FAILURES, LOST, FORCE_RELEASES]


@dataclass(frozen=True)
class BackendMetrics:
    """The children of each metric for one alias, bound once (``labels()`` takes a lock per call)."""

    acquired: object
    not_acquired: object
    error: object
    contention: object
    wait: object
    hold: object
    renew_failures: object
    lost: object
    force_releases: object

    @classmethod
    def for_alias(cls, alias: str) -> BackendMetrics:
        return cls(
            acquired=ACQUIRES.labels(alias, "acquired"),
            not_acquired=ACQUIRES.labels(alias, "not_acquired"),
            error=ACQUIRES.labels(alias, "error"),
            contention=CONTENTION.labels(alias),
            wait=WAIT.labels(alias),
            hold=HOLD.labels(alias),
            renew_failures=RENEW_FAILURES.labels(alias),
            lost=LOST.labels(alias),
            force_releases=FORCE_RELEASES.labels(alias),
        )
