"""PostgreSQL only: a cheaper ``locks_advisory_claim`` (same arguments, same results).

Two changes, each measured as server CPU per acquire + release (benchmarks/results/locks.md):

- The crash guard is read once per session instead of once per claim. A crash ends every session
  (PostgreSQL terminates them all before it recovers and empties the UNLOGGED guard), so a session
  that has seen the guard has seen no crash since; a standby cannot read the guard at all. The
  session remembers it in the custom setting ``locks.advisory_guard_seen``: set in the claim's
  transaction, so it is gone again if that transaction rolls back, and ``RESET ALL`` or
  ``DISCARD ALL`` (a pooler's reset) only make the next claim look again.
- ``set_config`` runs as a PL/pgSQL assignment (evaluated as a simple expression) rather than as a
  ``PERFORM`` (a query of its own each).
"""

from __future__ import annotations

import importlib

from django.db import migrations

CLAIM = """
-- See 0003_postgresql_advisory: one claim takes the advisory lock, draws the token and arms the
-- lease. token IS NULL: the lock is taken (or someone is queued for it); token = 0: the guard is
-- gone (a crash): call locks_advisory_new_epoch() and try again. p_lease is unused here: it makes
-- the statement's text describe the lease, for held().
CREATE OR REPLACE FUNCTION locks_advisory_claim(
    p_lease text, p_ttl_ms integer, p_key bigint,
    OUT token bigint, OUT acquired_at double precision  -- seconds since the epoch: cheap to read
) LANGUAGE plpgsql AS $$
DECLARE
    armed text;  -- what set_config returns, unused
BEGIN
    IF NOT pg_try_advisory_xact_lock(p_key) THEN
        RETURN;
    END IF;
    -- Once per session: a crash ends every session, so this one has seen no crash since it looked.
    IF current_setting('locks.advisory_guard_seen', true) IS DISTINCT FROM 'on' THEN
        PERFORM 1 FROM locks_advisory_guard;
        IF NOT FOUND THEN
            token := 0;
            RETURN;
        END IF;
        armed := set_config('locks.advisory_guard_seen', 'on', false);
    END IF;
    token := nextval('locks_advisory_token');
    -- The commit of this transaction (the release) need not wait for a WAL flush: its only write
    -- is the sequence's, and what a crash could lose of it is covered by the new epoch's 2^32.
    armed := set_config('synchronous_commit', 'off', true);
    acquired_at := extract(epoch FROM clock_timestamp());
    armed := set_config('idle_in_transaction_session_timeout', p_ttl_ms::text, true);
    armed := set_config('application_name', concat_ws(' ', 'ringmaster-lock', token,
                        (acquired_at * 1000000)::bigint), true);
END
$$
"""

CREATE = [CLAIM]


def forwards(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for statement in CREATE:
            schema_editor.execute(statement)


def backwards(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        previous = importlib.import_module("locks.migrations.0003_postgresql_advisory")
        (claim,) = [statement for statement in previous.CREATE if "FUNCTION locks_advisory_claim(" in statement]
        schema_editor.execute(claim)


class Migration(migrations.Migration):
    dependencies = [("locks", "0003_postgresql_advisory")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
