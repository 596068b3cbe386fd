"""Writes of the ``locks`` app that views and admin actions call."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from .handler import backends
from .signals import action_performed


def lock_force_release(*, backend: str, name: str, actor: Any, token: int | None = None, source: str = "") -> bool:
    """Break the lock ``name`` on ``backend`` (only if its token is still ``token``, when given).

    The backend writes the audit entry (who, when, which token); False when nothing was held.
    ``action_performed`` is sent in the same transaction (the database backend's release joins it),
    so the operators' audit log records the release with it; ``source`` says where it came from.
    """
    lock_backend = backends[backend]
    with transaction.atomic():
        released = lock_backend.force_release(name, actor=actor, token=token)
        if released:
            action_performed.send(
                sender=type(lock_backend),
                action="lock.force_release",
                target=f"{backend}:{name}",
                actor=actor,
                source=source,
                detail="" if token is None else f"token {token}",
            )
    return released
