"""Writes of the ``locks`` app that views and admin actions call."""

from __future__ import annotations

from typing import Any

from .handler import backends


def lock_force_release(*, backend: str, name: str, actor: Any, token: int | None = None) -> bool:
    """Break the lock ``name`` on ``backend`` (only if its token is still ``token``, when given).

    The backend writes the audit entry (who, when, which token); False when nothing was held.
    """
    return backends[backend].force_release(name, actor=actor, token=token)
