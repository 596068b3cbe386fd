"""Races and crashes with real threads and processes against the real database.

- 20 concurrent requests with one key, from threads and from processes, against a live server:
  the view body runs exactly once; the others get 409 or the replay.
- Processes racing on one ``@idempotent`` call: one runs, the others wait out or replay.
- A process killed with SIGKILL after its side effect, before its commit: neither the effect nor
  a completed record survives, and the retry (after the lease) runs once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection

from idempotency.models import IdempotencyRecord
from tests.idempotency import worker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.urls("tests.idempotency.urls"),
]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONCURRENCY = 20

CLIENT = r"""
import json, sys, time, urllib.error, urllib.request
url, key, cookie, start_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
request = urllib.request.Request(url, data=b'{"sleep": 0.5}', method="POST", headers={
    "Content-Type": "application/json", "Idempotency-Key": json.dumps(key), "Cookie": cookie})
time.sleep(max(0.0, start_at - time.time()))
try:
    response = urllib.request.urlopen(request, timeout=60)
except urllib.error.HTTPError as error:
    response = error
print(json.dumps({"status": response.status, "replayed": response.headers.get("Idempotent-Replayed"),
                  "body": response.read().decode()}))
"""


def post_json(url: str, key: str, cookie: str) -> dict:
    request = urllib.request.Request(  # noqa: S310 (an http:// URL of the test's own live server)
        url,
        data=b'{"sleep": 0.5}',
        method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": json.dumps(key), "Cookie": cookie},
    )
    try:
        response = urllib.request.urlopen(request, timeout=60)  # noqa: S310 (as above)
    except urllib.error.HTTPError as error:
        response = error
    return {"status": response.status, "replayed": response.headers.get("Idempotent-Replayed"), "body": response.read()}


@pytest.fixture
def session_cookie(client, staff_user) -> str:
    client.force_login(staff_user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def assert_exactly_once(results: list[dict]) -> None:
    statuses = sorted(f"{r['status']} replayed={r['replayed']}" for r in results)
    originals = [r for r in results if r["status"] == 201 and r["replayed"] is None]
    assert len(originals) == 1, f"exactly one request ran the view: {statuses}"
    for r in results:
        if r is originals[0]:
            continue
        assert r["status"] == 409 or (r["status"] == 201 and r["replayed"] == "true"), statuses
        if r["replayed"]:
            assert r["body"] == originals[0]["body"], "every replay carries the original body"
    assert Group.objects.filter(name__startswith="slow:").count() == 1, "the view body ran once"
    assert IdempotencyRecord.objects.get().state == "completed"


def test_twenty_threads_one_key_run_the_view_once(live_server, session_cookie):
    url = f"{live_server.url}/slow/"
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(lambda _: post_json(url, "threads", session_cookie), range(CONCURRENCY)))
    assert_exactly_once(results)


def test_twenty_processes_one_key_run_the_view_once(live_server, session_cookie):
    url = f"{live_server.url}/slow/"
    start_at = time.time() + 1.5
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, url, "processes", session_cookie, str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(CONCURRENCY)
    ]
    results = []
    for process in clients:
        out, _ = process.communicate(timeout=90)
        assert process.returncode == 0, out
        result = json.loads(out)
        result["body"] = result["body"].encode()
        results.append(result)
    assert_exactly_once(results)


def worker_env(**extra: str) -> dict:
    env = {**os.environ, "RM_TEST_DB_NAME": str(connection.settings_dict["NAME"]), **extra}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def test_processes_racing_on_one_call_run_it_once():
    start_at = str(time.time() + 2.5)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.idempotency.worker", "race", "r1"],
            cwd=ROOT,
            env=worker_env(RM_START_AT=start_at),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(5)
    ]
    outcomes = []
    for process in workers:
        out, err = process.communicate(timeout=90)
        assert process.returncode == 0, err[-3000:]
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    ran = [o for o in outcomes if o["outcome"] == "ran"]
    assert len(ran) == 1, outcomes
    assert all(o["outcome"] in ("in_progress", "replayed") for o in outcomes if o not in ran), outcomes
    assert all(o["pid"] == ran[0]["pid"] for o in outcomes if o["outcome"] == "replayed")
    assert Group.objects.filter(name__startswith="race:r1:").count() == 1


def test_sigkill_after_the_effect_before_commit_leaves_nothing_and_the_retry_runs_once():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.idempotency.worker", "crash", "c1"],
        cwd=ROOT,
        env=worker_env(RM_CRASH_PAUSE="60"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line, f"the worker died before its side effect: {process.stderr.read()[-3000:]}"
        victim = json.loads(line)["effect"]
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    assert not Group.objects.filter(name=f"crash:c1:{victim}").exists(), "the uncommitted effect is gone"
    record = IdempotencyRecord.objects.get(key="crash:c1")
    assert record.state == "in_progress" and record.fencing_token == 1, "only the claim was committed"

    # The retry waits out the dead holder's 1 s lease, takes the key over and runs once.
    assert worker.crash_effect("c1") == {"pid": os.getpid()}
    assert worker.crash_effect("c1") == {"pid": os.getpid()}, "then it replays"
    assert list(Group.objects.filter(name__startswith="crash:c1:").values_list("name", flat=True)) == [
        f"crash:c1:{os.getpid()}"
    ]
    record.refresh_from_db()
    assert record.state == "completed" and record.fencing_token == 2
