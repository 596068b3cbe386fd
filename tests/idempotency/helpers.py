"""Helpers of the idempotency tests: a JSON POST with an Idempotency-Key, counting view executions."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator

from django.contrib.auth.models import Group


def post(client, url: str, body: dict | None = None, *, key: str | None = None, raw_key: str | None = None, **extra):
    """POST ``body`` as JSON; ``key`` is sent as a structured-field string, ``raw_key`` verbatim."""
    if key is not None:
        extra["HTTP_IDEMPOTENCY_KEY"] = json.dumps(key)
    if raw_key is not None:
        extra["HTTP_IDEMPOTENCY_KEY"] = raw_key
    return client.post(url, data=json.dumps(body or {}), content_type="application/json", **extra)


def effects(label: str) -> int:
    """How many times views labelled ``label`` ran their body (committed or visible in this transaction)."""
    return Group.objects.filter(name__startswith=f"{label}:").count()


@contextlib.contextmanager
def pg_wire_queries(connection) -> Iterator[list[str]]:
    """The messages that started a server round trip on a PostgreSQL connection (libpq's own trace).

    Django logs BEGIN and COMMIT even when psycopg never sends them (an empty transaction), so the
    query log overstates round trips; the wire does not.
    """
    import psycopg

    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    sent: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE)
        try:
            yield sent
        finally:
            pgconn.untrace()
            trace.seek(0)
            for line in trace:
                fields = line.rstrip("\n").split("\t")
                # One round trip per simple Query, or per Sync closing an extended-protocol exchange.
                if len(fields) >= 3 and fields[0] == "F" and fields[2] in ("Query", "Sync"):
                    sent.append(fields[3].strip() if len(fields) > 3 else fields[2])
