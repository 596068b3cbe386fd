"""Signals of the ``locks`` app: monitoring listens, locks never imports it.

Each is sent with ``sender`` = the backend class and keyword arguments ``name``, ``token``,
``owner`` and ``backend`` (the alias); ``lock_acquired`` adds ``contended`` (the first try
found the lock held) and ``lock_lost`` adds ``reason``. Receivers run in the caller's thread,
inside every grant and release: keep them cheap (a slow receiver slows every lock).
"""

from __future__ import annotations

from django.dispatch import Signal

lock_acquired = Signal(use_caching=True)  # sent per grant and per release: receivers cached per sender
lock_released = Signal(use_caching=True)
lock_lost = Signal(use_caching=True)

# An operator acted on a lock (``lock.force_release``), with the keyword arguments of
# ``cluster.signals.action_performed``: action, target ("<backend>:<name>"), actor, source, detail.
# Sent after the release; the lock's own ``LockAudit`` entry is written by the backend.
action_performed = Signal()
