"""Fencing tokens on the storage side: a write carries its lock's token, and stale holders are refused.

A lock alone cannot stop a holder that paused (GC, SIGSTOP, a slow network) past its lease and
then writes as if it still held the lock. Kleppmann's answer is the fencing token: every grant of
a lock gets a strictly larger number, the holder sends it with each write, and the storage keeps
the largest token it has seen and refuses anything smaller. ``fenced_update`` is that check as
one conditional ``UPDATE`` (no read-then-write race); a model opts in with a ``FenceTokenField``.
"""

from __future__ import annotations

from typing import Any

from django.db import models


class StaleFencingToken(Exception):
    """A write carried a fencing token older than one the storage has already seen."""

    def __init__(self, token: int, *, target: str = "") -> None:
        self.token = token
        self.target = target
        where = f" on {target}" if target else ""
        super().__init__(f"fencing token {token} is stale{where}: a newer lock holder has written")


class FenceTokenField(models.BigIntegerField):
    """The largest fencing token that has written this row (0: never fenced)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("default", 0)
        super().__init__(*args, **kwargs)


def fenced_update(
    queryset: models.QuerySet,
    *,
    token: int,
    token_field: str = "fence_token",  # noqa: S107 (a column name, not a password)
    **updates: Any,
) -> int:
    """Apply ``updates`` to the rows of ``queryset`` whose stored token is not newer than ``token``.

    The stored token becomes ``token``. Equal tokens pass, so one holder can write many times.
    Raises ``StaleFencingToken`` when rows matched the queryset but every one of them was
    fenced off; returns the number of rows written.
    """
    if isinstance(token, bool) or not isinstance(token, int) or token < 0:
        raise ValueError(f"token must be a non-negative int, got {token!r}")
    written = queryset.filter(**{f"{token_field}__lte": token}).update(**{token_field: token}, **updates)
    if written == 0 and queryset.exists():
        raise StaleFencingToken(token, target=queryset.model._meta.label)
    return written
