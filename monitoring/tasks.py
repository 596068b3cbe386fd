"""Celery tasks of the monitoring app."""

from __future__ import annotations

import socket

from celery import shared_task


@shared_task(name="monitoring.ping")
def ping() -> dict:
    """Round trip through the broker to a worker; answers which host ran it."""
    return {"pong": True, "host": socket.gethostname()}
