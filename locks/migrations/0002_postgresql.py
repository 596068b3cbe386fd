"""PostgreSQL only: UNLOGGED lock tables and the claim function of the database lock backend.

UNLOGGED (see locks/models.py): a grant or release writes no WAL and waits for no fsync; a crash
or failover empties the tables, which releases every database lock and restarts the fencing
counters from the clock floor. ``locks_claim`` is the whole claim as one function: PL/pgSQL
keeps the plans of its statements for the session, so a claim costs one short call instead of
planning a five-part statement each time, and no protocol-level prepared statement is needed
(safe behind PgBouncer in transaction mode). SQLite runs the same steps from Python.
"""

from django.db import migrations

TABLES = ("locks_locklease", "locks_lockcounter", "locks_lockwaiter")

CLAIM_FUNCTION = """
CREATE OR REPLACE FUNCTION locks_claim(
    p_name text, p_owner text, p_ttl double precision, p_ticket bigint, p_barges integer,
    OUT token bigint, OUT acquired_at timestamptz, OUT expires_at timestamptz, OUT ahead bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_streak integer;
BEGIN
    -- Live waiters ahead of this claimer's ticket (every live waiter when it has none).
    SELECT count(*) INTO ahead FROM locks_lockwaiter w
    WHERE w.name = p_name AND w.id < p_ticket AND w.expires_at > clock_timestamp();
    PERFORM 1 FROM locks_locklease l WHERE l.name = p_name AND l.expires_at > clock_timestamp();
    IF FOUND THEN
        RETURN;
    END IF;
    IF ahead > 0 THEN
        SELECT c.streak INTO v_streak FROM locks_lockcounter c WHERE c.name = p_name;
        IF coalesce(v_streak, 0) >= p_barges THEN
            RETURN;
        END IF;
    END IF;
    -- Token: max(last + 1, the clock in microseconds), so never backwards even if the row was lost.
    INSERT INTO locks_lockcounter AS c (name, last_token, streak)
    VALUES (p_name, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, CASE WHEN ahead = 0 THEN 0 ELSE 1 END)
    ON CONFLICT (name) DO UPDATE SET
        last_token = greatest(c.last_token + 1, excluded.last_token),
        streak = CASE WHEN excluded.streak = 0 THEN 0 ELSE c.streak + 1 END
    RETURNING c.last_token INTO token;
    -- The exclusion itself: under READ COMMITTED the upsert re-checks the latest committed row,
    -- so a claim that raced another one updates nothing and grants nothing.
    INSERT INTO locks_locklease AS l (name, owner, token, acquired_at, expires_at)
    VALUES (p_name, p_owner, token, clock_timestamp(), clock_timestamp() + make_interval(secs => p_ttl))
    ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, token = excluded.token,
        acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
    WHERE l.expires_at <= excluded.acquired_at
    RETURNING l.token, l.acquired_at, l.expires_at INTO token, acquired_at, expires_at;
    IF token IS NOT NULL THEN
        DELETE FROM locks_lockwaiter w WHERE w.id = p_ticket;
    END IF;
END
$$;
"""


def forwards(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} SET UNLOGGED")
    schema_editor.execute(CLAIM_FUNCTION)


def backwards(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP FUNCTION IF EXISTS locks_claim(text, text, double precision, bigint, integer)")
    for table in TABLES:
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} SET LOGGED")


class Migration(migrations.Migration):
    dependencies = [("locks", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
