"""Idempotency records: the Idempotency-Key header and exactly-once functions and tasks.

Public API: ``idempotent`` (functions and tasks), ``idempotent_view`` (views), the middleware
``idempotency.middleware.IdempotencyMiddleware``, and the exceptions below. The decorators are
imported lazily: this package is imported before the app registry is ready.
"""

from __future__ import annotations

from typing import Any

from .exceptions import (
    IdempotencyError,
    IdempotencyInProgress,
    IdempotencyKeyMismatch,
    InvalidIdempotencyKey,
    StaleFencingToken,
)

__all__ = [
    "IdempotencyError",
    "IdempotencyInProgress",
    "IdempotencyKeyMismatch",
    "InvalidIdempotencyKey",
    "StaleFencingToken",
    "idempotent",
    "idempotent_view",
]


def __getattr__(name: str) -> Any:
    if name in ("idempotent", "idempotent_view"):
        from . import decorators

        return getattr(decorators, name)
    raise AttributeError(f"module 'idempotency' has no attribute {name!r}")
