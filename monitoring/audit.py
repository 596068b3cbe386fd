"""The operators' audit log: every admin or dashboard action of every app, written to ``AuditEntry``.

``cluster`` and ``locks`` announce an operator's action with their ``action_performed`` signal
(they never import ``monitoring``); the receiver here writes the entry in the caller's thread and
transaction. See ``monitoring.models.AuditEntry`` for the design.
"""

from __future__ import annotations

import logging
from typing import Any

from cluster.signals import action_performed as cluster_action_performed
from locks.signals import action_performed as lock_action_performed

from .models import AuditEntry

logger = logging.getLogger(__name__)


def audit_record(*, action: str, target: str, actor: Any, source: str = "", detail: str = "") -> AuditEntry:
    """Write one audit entry; ``actor`` is a user (linked) or a name."""
    get_username = getattr(actor, "get_username", None)
    username = get_username() if callable(get_username) else str(actor or "")
    if not username:
        raise ValueError("actor must name someone: an audit entry without a who is worthless")
    user = actor if getattr(actor, "pk", None) is not None and callable(get_username) else None
    entry = AuditEntry.objects.create(
        actor=username[:150],
        user=user,
        action=action[:64],
        target=str(target)[:255],
        source=source[:32],
        detail=detail[:500],
    )
    logger.info("audit: %s %s %s via %s (%s)", username, action, target, source or "?", detail)
    return entry


def _on_action_performed(
    sender: Any, *, action: str, target: str, actor: Any, source: str = "", detail: str = "", **kwargs: Any
) -> None:
    audit_record(action=action, target=target, actor=actor, source=source, detail=detail)


cluster_action_performed.connect(_on_action_performed, dispatch_uid="monitoring-audit-cluster")
lock_action_performed.connect(_on_action_performed, dispatch_uid="monitoring-audit-locks")
