"""PostgreSQL only: the token sequence and the functions of the database backend's advisory mode.

``OPTIONS = {"MODE": "advisory"}`` (see locks/backends/pg_advisory.py) holds each lock as a
``pg_advisory_xact_lock`` in a transaction left open on a dedicated connection. Its fencing tokens
come from ``locks_advisory_token``, one logged sequence for every lock name (strictly increasing
globally, so per name too), drawn after the lock is taken. ``locks_advisory_guard`` is an
UNLOGGED table that a PostgreSQL crash empties: a claim that finds it empty refuses to hand out
a token until ``locks_advisory_new_epoch`` has pushed the sequence 2^32 past anything it may
have handed out before the crash (see the module docstring of pg_advisory.py for the argument).
"""

from django.db import migrations

CREATE = [
    "CREATE SEQUENCE locks_advisory_token AS bigint",
    "CREATE UNLOGGED TABLE locks_advisory_guard (id integer PRIMARY KEY)",
    """

-- One claim: try the advisory lock (a waiter that already holds it, see AdvisoryWaiter.wait,
-- takes it again at no cost), then draw the token, then arm the lease: the server ends the
-- session if it stays idle in this transaction for p_ttl_ms, which releases the lock.
-- token IS NULL: the lock is taken by someone else (or someone is queued for it);
-- token = 0: the guard is gone (a crash): call locks_advisory_new_epoch() and try again.
-- p_lease (name and owner) is unused here: it makes the statement's text in pg_stat_activity
-- describe the lease, which is how held() finds it. application_name carries the token
-- and the grant time (it reverts at commit).
CREATE OR REPLACE FUNCTION locks_advisory_claim(
    p_lease text, p_ttl_ms integer, p_key bigint,
    OUT token bigint, OUT acquired_at double precision  -- seconds since the epoch: cheap to read
) LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(p_key) THEN
        RETURN;
    END IF;
    PERFORM 1 FROM locks_advisory_guard;
    IF NOT FOUND THEN
        token := 0;
        RETURN;
    END IF;
    token := nextval('locks_advisory_token');
    -- The commit of this transaction (the release) need not wait for a WAL flush: its only write
    -- is the sequence's, and what a crash could lose of it is covered by the new epoch's 2^32.
    PERFORM set_config('synchronous_commit', 'off', true);
    acquired_at := extract(epoch FROM clock_timestamp());
    PERFORM set_config('idle_in_transaction_session_timeout', p_ttl_ms::text, true),
            set_config('application_name', concat_ws(' ', 'ringmaster-lock', token,
                       (acquired_at * 1000000)::bigint), true);
END
$$
""",
    """

-- Extend or verify a held lease: the server now ends the session after p_ttl_ms idle. Like the
-- claim, its text carries the lease (p_lease) for held().
CREATE OR REPLACE FUNCTION locks_advisory_keep(p_lease text, p_ttl_ms integer)
RETURNS timestamptz LANGUAGE sql AS $$
    SELECT clock_timestamp() + make_interval(secs => p_ttl_ms / 1000.0)
    FROM (SELECT set_config('idle_in_transaction_session_timeout', p_ttl_ms::text, true)) AS armed
$$
""",
    """

-- After a crash (the guard is empty): move the sequence 2^32 past its recovered value, and at
-- least to the clock in microseconds (so tokens also stay above the table mode's), in a
-- transaction that is flushed to disk before any new token is handed out.
CREATE OR REPLACE FUNCTION locks_advisory_new_epoch() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'on', true);
    INSERT INTO locks_advisory_guard (id) VALUES (1) ON CONFLICT (id) DO NOTHING;
    IF FOUND THEN
        PERFORM setval('locks_advisory_token', greatest(
            (SELECT last_value FROM locks_advisory_token) + 4294967296,
            (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
        ));
    END IF;
END
$$
""",
]

DROP = [
    "DROP FUNCTION IF EXISTS locks_advisory_new_epoch()",
    "DROP FUNCTION IF EXISTS locks_advisory_keep(text, integer)",
    "DROP FUNCTION IF EXISTS locks_advisory_claim(text, integer, bigint)",
    "DROP TABLE IF EXISTS locks_advisory_guard",
    "DROP SEQUENCE IF EXISTS locks_advisory_token",
]


def forwards(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for statement in CREATE:
            schema_editor.execute(statement)


def backwards(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for statement in DROP:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("locks", "0002_postgresql")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
