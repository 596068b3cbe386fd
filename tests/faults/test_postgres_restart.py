"""PostgreSQL restarted mid-run, against a private cluster the test stops and starts.

Three workers run transfers, the sweeper sweeps and the ASGI server answers, all on a private
PostgreSQL (and a private Redis). The database is stopped the hard way (``pg_ctl -m immediate``:
every connection is cut, the next start runs crash recovery) for a few seconds. Meanwhile the
API and the dashboard answer 503 (problem+json for the API), never a 500 traceback; afterwards
Django has reconnected on its own, the tasks that failed against the missing database were
retried, and nothing is half-written: every transfer applied once, every job succeeded, every
idempotency record completed with the result of its transfer.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter

import psycopg
import pytest

from tests import services

from .harness import ROOT, Processes, deployment_env, driver, expected_balances, make_transfers, wait_for

NODES = ("pg-a", "pg-b", "pg-c")
ACCOUNTS = [f"acct-{i}" for i in range(8)]
OPENING = 100_000
OUTAGE = 6.0


def get(url: str, cookie: str, accept: str) -> tuple[int, str, str]:
    """Status, content type and body of a GET (errors included)."""
    request = urllib.request.Request(url, headers={"Cookie": cookie, "Accept": accept})  # noqa: S310 (http to loopback)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode(errors="replace")


def query(url: str, sql: str) -> list[tuple]:
    try:
        with psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=2) as conn:
            return conn.execute(sql).fetchall()
    except psycopg.OperationalError:
        return []


@pytest.mark.slow
@pytest.mark.services
def test_postgres_restart_answers_503_and_loses_nothing(tmp_path):
    transfers = make_transfers(ACCOUNTS, 300, seed=21)
    with services.private_postgres(database="ringmaster") as pg, services.private_redis_server() as redis_server:
        env = deployment_env(dict(os.environ), DATABASE_URL=pg.url, REDIS_URL=redis_server.url)
        migrate = [sys.executable, "manage.py", "migrate", "--no-input", "-v0"]
        subprocess.run(migrate, cwd=ROOT, env=env, check=True, timeout=120)
        port = services.free_port()
        base = f"http://127.0.0.1:{port}"
        procs = Processes(env, tmp_path)
        try:
            procs.start("web", ["-m", "uvicorn", "config.asgi:application", "--port", str(port), "--no-access-log"])
            procs.sweeper()
            for name in NODES:
                procs.worker(name)
            session = driver(env, "staff-session")
            cookie = f"{session['cookie']}={session['session']}"
            nodes_active = "SELECT count(*) FROM cluster_node WHERE state = 'active'"
            wait_for(lambda: query(pg.url, nodes_active) == [(3,)], 60, "3 active nodes")
            api, dashboard = f"{base}/api/v1/nodes", f"{base}/dashboard/"
            assert get(api, cookie, "application/json")[0] == 200
            assert get(dashboard, cookie, "text/html")[0] == 200

            accounts = dict.fromkeys(ACCOUNTS, OPENING)
            assert driver(env, "submit", {"accounts": accounts, "transfers": transfers})["errors"] == []
            applied = "SELECT count(*) FROM ledger_transfer"
            wait_for(lambda: (query(pg.url, applied) or [(0,)])[0][0] >= 40, 30, "transfers under way")
            open_jobs = "SELECT count(*) FROM cluster_job WHERE state NOT IN ('succeeded', 'duplicate', 'failed')"
            in_flight = query(pg.url, open_jobs)[0][0]

            pg.stop()  # -m immediate: every backend is killed, like a crash
            down_at = time.monotonic()
            answers: Counter = Counter()
            while time.monotonic() - down_at < OUTAGE:
                for url, accept in ((api, "application/json"), (dashboard, "text/html"), (f"{base}/readyz", "*/*")):
                    status, content_type, body = get(url, cookie, accept)
                    answers[(url.removeprefix(base), status, content_type.split(";")[0])] += 1
                    assert status == 503, f"{url} answered {status} while PostgreSQL was down:\n{body[:2000]}"
                    assert "Traceback" not in body
                time.sleep(0.2)
            assert procs.crashed() == {}, f"processes exited while PostgreSQL was down: {procs.crashed()}"
            pg.start()
            up_at = time.monotonic()

            wait_for(lambda: get(api, cookie, "application/json")[0] == 200, 20, "the API to answer 200 again")
            reconnected = time.monotonic() - up_at
            assert get(dashboard, cookie, "text/html")[0] == 200
            wait_for(lambda: query(pg.url, open_jobs) == [(0,)], 60, "every job to finish after the restart")
            assert procs.crashed() == {}, f"processes exited: {procs.crashed()}"
            report = driver(env, "report")
        finally:
            procs.stop_all()
            worker_logs = "".join(procs.log(name) for name in NODES if name in procs.procs)

    for (path, _status, content_type), _count in answers.items():
        if path.startswith("/api/") or path == "/readyz":
            assert content_type == "application/problem+json", (path, content_type)
    submitted = {t[0] for t in transfers}
    assert sorted(t["transfer_id"] for t in report["transfers"]) == sorted(submitted), "each transfer applied once"
    assert report["balances"] == expected_balances(ACCOUNTS, OPENING, transfers), "the ledger does not balance"
    assert Counter(job["state"] for job in report["jobs"]) == {"succeeded": len(submitted)}
    # Nothing half-written: one completed idempotency record per transfer, holding that transfer's result.
    records = {r["key"]: r for r in report["idempotency"]}
    assert set(records) == {f"transfer:{tid}" for tid in submitted}
    assert {r["state"] for r in records.values()} == {"completed"}
    applied_by = {t["transfer_id"]: t["node"] for t in report["transfers"]}
    assert all(records[f"transfer:{tid}"]["result"]["node"] == node for tid, node in applied_by.items())
    assert report["nodes"] == dict.fromkeys(NODES, "active"), report["nodes"]
    assert not [e for e in report["events"] if e[2] in ("suspect", "dead")], "a node was convicted for the outage"
    retried = len(re.findall(r"could not start it|could not record the retry|Retry in", worker_logs))
    print(
        f"outage {OUTAGE:.0f}s with {in_flight} jobs open; answers during it: {dict(answers)}; "
        f"API back {reconnected:.1f}s after PostgreSQL; {retried} task retries logged"
    )
