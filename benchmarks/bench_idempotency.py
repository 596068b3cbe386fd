"""Benchmark: what the Idempotency-Key layer costs a trivial JSON POST view on PostgreSQL.

Runs Django's request handler in-process (the test client, the full middleware stack) against a
throwaway PostgreSQL database, and prints one markdown table: median and p95 latency per request,
the ratio of medians to the plain view, Django's logged queries and the round trips actually sent
(counted on the wire with libpq's trace; Django logs BEGIN/COMMIT even when psycopg sends none).

    .venv/bin/python benchmarks/bench_idempotency.py [--requests 2000]

``RINGMASTER_BENCH_DATABASE_URL`` (default ``postgres://postgres@127.0.0.1:5432/test``) names the
server; the benchmark creates and drops its own database ``ringmaster_bench_idempotency`` there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ["DATABASE_URL"] = os.environ.get("RINGMASTER_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
os.environ.setdefault("RINGMASTER_VAR_DIR", tempfile.mkdtemp(prefix="ringmaster-bench-"))
os.environ["DJANGO_DEBUG"] = "1"

import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.DATABASES["default"]["TEST"] = {"NAME": "ringmaster_bench_idempotency"}
settings.ROOT_URLCONF = __name__
django.setup()

from django.contrib.auth.models import Group  # noqa: E402
from django.db import connection  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

from idempotency import idempotent_view  # noqa: E402


@csrf_exempt
def plain(request):
    return JsonResponse({"ok": True, "echo": json.loads(request.body)}, status=201)


@csrf_exempt
def writes(request):
    Group.objects.create(name=uuid.uuid4().hex)
    return JsonResponse({"ok": True, "echo": json.loads(request.body)}, status=201)


urlpatterns = [
    path("plain/", plain),
    path("idem/", idempotent_view(allow_anonymous=True)(plain)),
    path("writes/", writes),
    path("idem-writes/", idempotent_view(allow_anonymous=True)(writes)),
]

BODY = json.dumps({"amount": 100, "currency": "EUR", "memo": "benchmark"})


def request(client: Client, url: str, key: str | None):
    extra = {"HTTP_IDEMPOTENCY_KEY": json.dumps(key)} if key else {}
    response = client.post(url, data=BODY, content_type="application/json", **extra)
    assert response.status_code == 201, response.content
    return response


def timed(client: Client, url: str, keys: list[str | None]) -> list[float]:
    samples = []
    for key in keys:
        start = time.perf_counter()
        request(client, url, key)
        samples.append(time.perf_counter() - start)
    return samples


def middleware_on(enabled: bool):
    """APPLY_TO_ALL_VIEWS for the middleware rows (anonymous clients allowed, as for the decorated views)."""
    if not enabled:
        return contextlib.nullcontext()
    return override_settings(RINGMASTER={"IDEMPOTENCY": {"APPLY_TO_ALL_VIEWS": True, "ALLOW_ANONYMOUS": True}})


def wire_round_trips(client: Client, url: str, key: str | None) -> tuple[int, int]:
    """(queries Django logged, round trips sent) for one request."""
    import psycopg

    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    with tempfile.TemporaryFile(mode="w+") as trace, CaptureQueriesContext(connection) as logged:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE)
        request(client, url, key)
        pgconn.untrace()
        trace.seek(0)
        sent = sum(1 for line in trace if line.split("\t")[:1] == ["F"] and line.split("\t")[2] in ("Query", "Sync"))
    return len(logged), sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    n = args.requests
    if n < 100:
        parser.error("--requests must be at least 100")

    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        client = Client()
        run = uuid.uuid4().hex[:8]
        for url in ("/plain/", "/idem/", "/writes/", "/idem-writes/"):  # warm up imports, connections, caches
            timed(client, url, [f"warm-{run}-{url}-{i}" if "idem" in url else None for i in range(200)])

        rows = []
        # (row, url, key prefix or None, whether the keys were used by the row before: a replay)
        cases = [
            ("plain view", "/plain/", None, False),
            ("idempotent, first request", "/idem/", "first", False),
            ("idempotent, replay", "/idem/", "first", True),
            ("middleware on every view, first", "/plain/", "mw", False),
            ("middleware on every view, replay", "/plain/", "mw", True),
            ("plain view writing one row", "/writes/", None, False),
            ("idempotent writing one row, first", "/idem-writes/", "w", False),
            ("idempotent writing one row, replay", "/idem-writes/", "w", True),
        ]
        # Interleaved in rounds, so that drift in the machine's load (a shared CI box) hits every row alike.
        samples: dict[str, list[float]] = {name: [] for name, *_ in cases}
        batch = 100
        for start in range(0, n, batch):
            for name, url, prefix, _ in cases:
                keys = [f"{prefix}-{run}-{i}" if prefix else None for i in range(start, min(n, start + batch))]
                with middleware_on(name.startswith("middleware")):
                    samples[name] += timed(client, url, keys)
        results = {}
        for name, url, prefix, replay in cases:
            probe = f"{prefix}-{run}-0" if replay else (f"{prefix}-{run}-probe" if prefix else None)
            with middleware_on(name.startswith("middleware")):
                logged, sent = wire_round_trips(client, url, probe)
            results[name] = (samples[name], logged, sent)
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            pg_version = cursor.fetchone()[0]

        for name, (samples, logged, sent) in results.items():
            base = results["plain view writing one row" if "writing" in name else "plain view"][0]
            median, base_median = statistics.median(samples), statistics.median(base)
            p95 = statistics.quantiles(samples, n=20)[-1]
            rows.append((name, median * 1e6, p95 * 1e6, median / base_median, logged, sent))
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)

    print(f"PostgreSQL {pg_version}, Django {django.get_version()}, {n} requests per row, in-process test client\n")
    print("| request | median µs | p95 µs | ratio to plain | queries logged | round trips sent |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, median, p95, ratio, logged, sent in rows:
        print(f"| {name} | {median:.0f} | {p95:.0f} | {ratio:.2f} | {logged} | {sent} |")


if __name__ == "__main__":
    main()
