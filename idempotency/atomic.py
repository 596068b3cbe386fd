"""The work's transaction, which the completion joins so that both commit or neither does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.db import connections, transaction

T = TypeVar("T")


class _StatementCounter:
    """A ``connection.execute_wrapper`` counting the statements sent inside the work's transaction.

    Transaction control counts too: SQLite's ``BEGIN IMMEDIATE`` takes the write lock, which blocks
    lease renewals, so there the completion must commit with it. PostgreSQL's BEGIN is sent lazily
    by psycopg with the first statement and never passes through here.
    """

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute: Callable, sql: str, params: Any, many: bool, context: dict) -> Any:
        self.count += 1
        return execute(sql, params, many, context)


def run_then_complete(
    work: Callable[[], T], complete: Callable[[T, bool], None], *, using: str, atomic: bool = True
) -> T:
    """Run ``work()`` in ``transaction.atomic(using)``; ``complete(result, True)`` writes inside it.

    When the work sent no statement to the database there is nothing for the completion to commit
    with, so ``complete(result, False)`` runs right after the empty transaction: that saves the
    BEGIN and COMMIT round trips, and a first request then costs two statements, the claim and the
    completion. Without ``atomic`` the work runs in autocommit and a crash between it and the
    completion leaves the record in progress (its lease runs out and the work runs again).
    """
    if not atomic:
        result = work()
        complete(result, False)
        return result
    counter = _StatementCounter()
    with connections[using].execute_wrapper(counter), transaction.atomic(using=using):
        result = work()
        if counter.count:
            complete(result, True)
            return result
    complete(result, False)
    return result
