"""Celery tasks of the idempotency app: the reaper, run by beat (CELERY_BEAT_SCHEDULE)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="idempotency.purge_expired", ignore_result=True)
def purge_expired() -> int:
    """Delete expired idempotency records; returns how many."""
    from .services import records_purge_expired

    return records_purge_expired()
