"""The exceptions of the idempotency app, importable from ``idempotency``."""

from __future__ import annotations

from locks.fencing import StaleFencingToken

__all__ = [
    "IdempotencyError",
    "IdempotencyInProgress",
    "IdempotencyKeyMismatch",
    "InvalidIdempotencyKey",
    "StaleFencingToken",
]


class IdempotencyError(Exception):
    """Base class of the idempotency app's errors."""


class InvalidIdempotencyKey(IdempotencyError, ValueError):
    """A key (from a template, a callable or a header) is empty, too long or not printable ASCII."""


class IdempotencyKeyMismatch(IdempotencyError):
    """The key was first used with different arguments (or a different request); it is not reused."""

    def __init__(self, *, scope: str, key: str) -> None:
        self.scope = scope
        self.key = key
        super().__init__(
            f"idempotency key {key!r} in scope {scope!r} was first used with different arguments; "
            "use a new key for a different request"
        )


class IdempotencyInProgress(IdempotencyError):
    """Another attempt with the same key is running; try again after ``retry_after`` seconds."""

    def __init__(self, *, scope: str, key: str, retry_after: int) -> None:
        self.scope = scope
        self.key = key
        self.retry_after = retry_after
        super().__init__(
            f"idempotency key {key!r} in scope {scope!r} is in progress elsewhere; retry in {retry_after}s"
        )
