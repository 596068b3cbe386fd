"""Several SQL statements in one round trip, where the database allows it.

A ``cluster_task`` job writes a few small rows at each step (the job's state, its idempotency
record); on a busy machine each round trip to PostgreSQL costs more than the statement. Django's
PostgreSQL backend binds parameters on the client (psycopg's ``ClientCursor``), which sends a
query with several statements through the simple protocol: one round trip, one result per
statement. SQLite (and a PostgreSQL connection configured with ``server_side_binding``) runs them
one after another. Either way they run in the caller's transaction; in autocommit, PostgreSQL
runs a multi-statement query as one transaction (so ``SET LOCAL`` in it applies to the rest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections

try:
    from psycopg.pq import ExecStatus

    TUPLES_OK = ExecStatus.TUPLES_OK
except ImportError:  # no psycopg: SQLite only
    TUPLES_OK = None

Statement = tuple[str, Sequence[Any]]


@dataclass(frozen=True)
class Result:
    rowcount: int
    rows: list[tuple]
    columns: list[str]


def can_batch(using: str) -> bool:
    """Whether ``execute_together`` sends its statements in one round trip on this connection."""
    connection = connections[using]
    if connection.vendor != "postgresql" or connection.settings_dict["OPTIONS"].get("server_side_binding"):
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return is_psycopg3  # psycopg2's cursors cannot step to a second result (nextset)


def execute_together(using: str, statements: Sequence[Statement]) -> list[Result]:
    """Run ``statements`` (positional ``%s`` parameters) in order; each one's row count and rows."""
    connection = connections[using]
    together = len(statements) > 1 and can_batch(using)
    if together:
        queries = [(";\n".join(sql for sql, _ in statements), [p for _, params in statements for p in params])]
    else:
        queries = list(statements)
    if connection.queries_logged or connection.execute_wrappers:
        # Through Django's cursor wrapper, so that the query log (DEBUG, CaptureQueriesContext) and
        # any execute_wrapper() see each round trip.
        with connection.cursor() as cursor:
            return _run(cursor.cursor, cursor.execute, queries, statements, together, connection)
    # What Django's cursor() and CursorWrapper.execute() check, without the wrapper around every
    # attribute and call: it cost a third of a statement's client CPU (benchmarks/results/jobs.md).
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    connection.validate_no_broken_transaction()
    with connection.wrap_database_errors:
        raw = connection.create_cursor()
        try:
            return _run(raw, raw.execute, queries, statements, together, connection)
        finally:
            raw.close()


def _run(raw, execute, queries, statements: Sequence[Statement], together: bool, connection) -> list[Result]:
    """Send ``queries`` with ``execute``; read one result per statement off the driver's cursor ``raw``."""
    results = []
    with connection.wrap_database_errors:
        if together:
            execute(*queries[0])
            for index, (sql, _) in enumerate(statements):
                if index and not raw.nextset():
                    break
                results.append(_result(raw, sql))
            if len(results) != len(statements) or raw.nextset():
                raise RuntimeError(f"{len(statements)} statements sent together returned another number of results")
            return results
        for sql, params in queries:
            execute(sql, params)
            results.append(_result(raw, sql))
    return results


# sql -> the names of the columns it returns: psycopg builds ``description`` anew on each access
# (an object per column), which cost more than reading the row. Keys are this module's callers'
# statements, a handful of fixed strings.
_columns: dict[str, list[str]] = {}


def _result(cursor, sql: str) -> Result:
    pgresult = getattr(cursor, "pgresult", None)  # psycopg; SQLite's cursor has none
    if pgresult is None:
        description = cursor.description
        if description is None:
            return Result(cursor.rowcount, [], [])
        return Result(cursor.rowcount, cursor.fetchall(), [column[0] for column in description])
    if pgresult.status != TUPLES_OK:
        return Result(cursor.rowcount, [], [])
    columns = _columns.get(sql)
    if columns is None:
        columns = _columns[sql] = [column[0] for column in cursor.description]
    return Result(cursor.rowcount, cursor.fetchall(), columns)
