"""Load held: heartbeats, jobs and dashboards at once on the real servers, with a worker killed and one frozen.

Run by hand (never by ``make test``): ``.venv/bin/python benchmarks/bench_load.py [--duration 300 | --quick]
[--output benchmarks/results/load.md]``; prints one markdown report and exits non-zero when the setup broke or
an effect was lost or doubled. It creates, and drops at the end, the PostgreSQL database ``--database``
(default ``rm_bench_load``) through ``--admin-url``, and FLUSHES the Redis database ``--redis-url`` (default
``redis://127.0.0.1:6379/10``: broker, results, cache, locks, heartbeat store and channel layer of every process it
starts). Every process runs with its own environment (``DATABASE_URL``, ``REDIS_URL``, ``DJANGO_DEBUG=0``), in its
own session, and is stopped by process group whatever happens (failure, Ctrl-C, SIGTERM).

What runs, on loopback, for ``--duration`` seconds (``--quick``: 60):
- the ASGI server as ``make run`` serves it: ``uvicorn config.asgi:application`` (one process);
- ``--workers`` worker nodes (``manage.py run_node NAME --concurrency N``: the supervisor and its Celery worker)
  and ``manage.py sweeper``, with the project's settings unchanged;
- ``--nodes`` simulated nodes registered through ``cluster.services`` (join + activate, as ``manage.py
  cluster_nodes add``), each beating once a second over its own keep-alive HTTP/1.1 connection with its own token
  (``POST /api/v1/nodes/{name}/heartbeat``; an asyncio client of raw sockets, paced per node, a beat every second
  at a fixed phase; a node the cluster calls dead rejoins with the next incarnation, as a node agent would);
- ``--rate`` ledger transfers a second (``examples.ledger.tasks.transfer``, a ``cluster_task``), each
  ``delay()`` in its own transaction, paced on a fixed schedule; every tenth submission repeats an earlier
  transfer id (with its arguments), chosen among the last 500, so repeats often meet an original in flight;
- ``--clients`` dashboard WebSocket clients (a staff user's session cookie, ``/ws/cluster/``) reading every
  message for the whole run.
At a third of the run one worker node is SIGKILLed (``manage.py chaos --kill``: its process group, kept down) and
``--restart-after`` seconds later started again (``chaos --restart``; 0 keeps it down); at half the run another is
frozen (``chaos --pause``, SIGSTOP) for ``--freeze`` seconds (beyond the dead threshold, ~8 s), then resumed
(``chaos --resume``). After the load the run waits up to ``--drain`` seconds for every job to end, then audits the
ledger against what was submitted: every unique transfer applied exactly once, none twice, balances equal to the
opening balances plus the submitted transfers (and the total unchanged), each idempotency key succeeded once, no
job left open, and per account the applied transfers' fencing tokens only go up.

Measured: heartbeat requests/s answered 200 and their latency, jobs submitted and finished per second and the
backlog, job latency from ``Job.created_at`` (the ``delay()`` call) to ``Job.finished_at``, errors of every kind,
the RSS of every process sampled every ``--sample`` seconds (start, end, peak, least-squares slope), the machine's
load average, and the membership events around the kill and the freeze.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SCRIPT = str(Path(__file__).resolve())
# Variables that select a deployment: each process this script starts gets only the ones it sets.
DEPLOYMENT_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "RINGMASTER_VAR_DIR",
    "RINGMASTER_NODE_NAME",
    "RINGMASTER_DEMO",
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "DJANGO_SETTINGS_MODULE",
    "DJANGO_CONN_MAX_AGE",
    "PYTHONPATH",
)
# Every process this script starts carries this variable; cleanup signals only process groups that have it.
MARKER = "RINGMASTER_BENCH_LOAD_RUN"
SIM_PREFIX = "sim-"
ACCOUNTS = [f"acct-{i:02d}" for i in range(64)]
OPENING = 1_000_000
FINAL_STATES = ("succeeded", "duplicate", "failed")
OPEN_SQL = "state NOT IN ('succeeded', 'duplicate', 'failed')"  # FINAL_STATES, for the orchestrator's own SQL
DUPLICATE_EVERY = 10  # every tenth submission repeats an earlier transfer: 10%
DUPLICATE_WINDOW = 500
LOAD = {"cpu": 0.42, "mem": 0.61, "queue": 3, "active": 2}


def log(message: str) -> None:
    print(f"[bench_load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- children: the simulated nodes' heartbeats (no Django) -------------------------------------------------


async def _beat_node(node: dict, port: int, start: float, end: list[float], out: list, stats: Counter) -> None:
    name, token, incarnation = node["name"], node["token"], node["incarnation"]
    phase = node["phase"]
    reader = writer = None
    seq = 0
    k = 0
    while True:
        due = start + phase + k
        k += 1
        if due >= end[0]:
            break
        pause = due - time.time()
        if pause > 0:
            await asyncio.sleep(pause)
        elif pause < -0.5:
            stats["late"] += 1  # the previous beat took longer than a second
        seq += 1
        body = json.dumps({"incarnation": incarnation, "seq": seq, "load": LOAD}, separators=(",", ":")).encode()
        request = (
            f"POST /api/v1/nodes/{name}/heartbeat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\nX-Forwarded-Proto: https\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        sent = time.time()
        started = time.monotonic()
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                stats["connects"] += 1
            writer.write(request)
            status_line = await asyncio.wait_for(reader.readline(), 5)
            if not status_line:
                raise ConnectionResetError("server closed the connection")
            status = int(status_line.split()[1])
            length, keep = 0, True
            while True:
                line = await asyncio.wait_for(reader.readline(), 5)
                if line in (b"\r\n", b"\n", b""):
                    break
                key, _, value = line.decode("latin-1").partition(":")
                if key.lower() == "content-length":
                    length = int(value.strip())
                elif key.lower() == "connection" and value.strip().lower() == "close":
                    keep = False
            payload = await asyncio.wait_for(reader.readexactly(length), 5) if length else b""
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            out.append((sent, time.monotonic() - started, f"error:{type(exc).__name__}"))
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        if status == 200:
            out.append((sent, time.monotonic() - started, status))
        else:
            try:
                kind = str(json.loads(payload).get("type", "")).rsplit("/", 1)[-1]
            except ValueError:
                kind = ""
            out.append((sent, time.monotonic() - started, f"{status} {kind}".strip()))
            if stats[f"example {status}"] < 3:
                stats[f"example {status}"] += 1
                stats[f"{status}: {payload[:300].decode(errors='replace')}"] += 1
        if status == 200:
            reply = json.loads(payload)
            if reply.get("state") in ("dead", "left") and reply.get("incarnation", 0) >= incarnation:
                # What a node agent does when the cluster declared this incarnation dead: rejoin as the next.
                incarnation = reply["incarnation"] + 1
                stats["rejoins"] += 1
        if not keep:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def child_heartbeats(args: argparse.Namespace) -> int:
    nodes = json.loads(Path(args.setup).read_text())["nodes"]
    for i, node in enumerate(nodes):
        node["phase"] = i / len(nodes)
    out: list = []
    stats: Counter = Counter()
    end = [args.start + args.duration]  # moved earlier when the orchestrator writes the end time to --stop-file

    async def watch() -> None:
        while time.time() < end[0]:
            with contextlib.suppress(OSError, ValueError):
                end[0] = float(Path(args.stop_file).read_text())
            await asyncio.sleep(0.5)

    async def main() -> None:
        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(_beat_node(n, args.port, args.start, end, out, stats) for n in nodes))
        watcher.cancel()

    asyncio.run(main())
    Path(args.result).write_text(json.dumps({"beats": out, "stats": dict(stats)}))
    return 0


# --- children: the dashboard's WebSocket clients (no Django) ------------------------------------------------


async def _ws_client(url: str, origin: str, session: str, end: float, me: dict) -> None:
    import websockets

    headers = {"Cookie": f"sessionid={session}"}
    while time.time() < end:
        try:
            async with websockets.connect(
                url, origin=origin, additional_headers=headers, max_size=2**24, open_timeout=10
            ) as ws:
                me["connects"] += 1
                last = time.time()
                while True:
                    left = end - time.time()
                    if left <= 0:
                        return
                    try:
                        raw = await asyncio.wait_for(ws.recv(), timeout=min(left, 1.0))
                    except TimeoutError:
                        continue
                    now = time.time()
                    me["max_gap"] = max(me["max_gap"], now - last)
                    last = now
                    me["messages"] += 1
                    me["bytes"] += len(raw)
                    kind = json.loads(raw).get("type", "?")
                    me["types"][kind] = me["types"].get(kind, 0) + 1
        except Exception as exc:  # a disconnect is a result to report; reconnect like the dashboard does
            code = getattr(getattr(exc, "rcvd", None), "code", None)
            me["errors"].append(f"{time.time():.1f} {type(exc).__name__} {code or ''} {str(exc)[:120]}")
            await asyncio.sleep(1)


def child_websockets(args: argparse.Namespace) -> int:
    session = json.loads(Path(args.setup).read_text())["session"]
    url, origin = f"ws://127.0.0.1:{args.port}/ws/cluster/", f"http://127.0.0.1:{args.port}"
    clients = [
        {"connects": 0, "messages": 0, "bytes": 0, "max_gap": 0.0, "types": {}, "errors": []}
        for _ in range(args.clients)
    ]

    async def main() -> None:
        end = args.start + args.duration
        await asyncio.sleep(max(0.0, args.start - time.time()))
        await asyncio.gather(*(_ws_client(url, origin, session, end, c) for c in clients))

    asyncio.run(main())
    Path(args.result).write_text(json.dumps({"clients": clients}))
    return 0


# --- children with Django: setup, the job driver, the audit ------------------------------------------------


def _django() -> None:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def child_setup(args: argparse.Namespace) -> int:
    """Accounts, a staff user with a session, and the simulated nodes, joined and activated through the services."""
    _django()
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.backends.db import SessionStore

    from cluster import services
    from examples.ledger.models import Account

    Account.objects.bulk_create(Account(name=name, balance=OPENING) for name in ACCOUNTS)
    user = get_user_model().objects.create_user(username="bench-load", is_staff=True)  # session login only
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    nodes = []
    for i in range(args.nodes):
        node, token = services.node_join(name=f"{SIM_PREFIX}{i:03d}", actor="bench_load")
        services.node_activate(node=node, actor="bench_load")
        node.refresh_from_db()
        nodes.append({"name": node.name, "token": token, "incarnation": node.incarnation})
    Path(args.result).write_text(json.dumps({"session": session.session_key, "nodes": nodes}))
    return 0


def child_driver(args: argparse.Namespace) -> int:
    """Submit ``--rate`` transfers a second on a fixed schedule, each ``delay()`` in its own transaction.

    ``--driver-threads`` threads take the slots in turn, so one slow ``delay()`` does not hold the schedule back
    (an app has many request threads too). A slot not started by the end of the load is counted as missed.
    """
    import threading

    _django()
    from django.db import connection, transaction

    from examples.ledger.tasks import transfer

    rng = random.Random(args.seed)
    guard = threading.Lock()
    submitted: dict[str, list] = {}
    order: list[str] = []
    calls: list = []
    errors: list[str] = []
    end = args.start + args.duration
    slots = iter(range(int(args.duration * args.rate)))

    def submit_one(i: int) -> None:
        with guard:
            duplicate = i % DUPLICATE_EVERY == DUPLICATE_EVERY - 1 and bool(order)
            if duplicate:
                tid = rng.choice(order[-DUPLICATE_WINDOW:])
            else:
                tid = uuid.uuid4().hex
                source, target = rng.sample(ACCOUNTS, 2)
                submitted[tid] = [source, target, rng.randint(1, 100)]
            source, target, amount = submitted[tid]
        started = time.perf_counter()
        at = time.time()
        try:
            with transaction.atomic():
                job_id = transfer.delay(transfer_id=tid, from_account=source, to_account=target, amount=amount).id
        except Exception as exc:  # reported, and the submission does not count as made
            with guard:
                errors.append(f"{at:.1f} {type(exc).__name__}: {str(exc)[:200]}")
                if not duplicate:
                    del submitted[tid]
            return
        with guard:
            if not duplicate:
                order.append(tid)
            calls.append([at, job_id, tid, duplicate, time.perf_counter() - started, at - args.start - i / args.rate])

    def run() -> None:
        try:
            while True:
                with guard:
                    i = next(slots, None)
                if i is None:
                    return
                pause = args.start + i / args.rate - time.time()
                if pause > 0:
                    time.sleep(pause)
                if time.time() >= end:
                    return
                submit_one(i)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(args.driver_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    missed = int(args.duration * args.rate) - len(calls) - len(errors)
    result = {"submitted": submitted, "calls": calls, "errors": errors, "missed": missed}
    Path(args.result).write_text(json.dumps(result))
    return 0


def child_chaos(args: argparse.Namespace) -> int:
    """``cluster.chaos`` (what ``manage.py chaos`` runs) on command from stdin, so each signal's time is exact."""
    _django()
    from cluster import chaos

    actions = {"kill": chaos.kill, "pause": chaos.pause, "resume": chaos.resume, "restart": chaos.restart}
    for line in sys.stdin:
        action, node = line.split()
        try:
            pid = actions[action](node)
        except Exception as exc:  # reported to the orchestrator, which stops the run
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            answer = {"at": time.time(), "pid": pid}
        print(json.dumps(answer), flush=True)
    return 0


def child_audit(args: argparse.Namespace) -> int:
    """The ledger and the jobs against what the driver submitted; membership events of the run."""
    _django()
    from django.db.models import Count

    from cluster.models import Job, MembershipEvent
    from examples.ledger.models import Account, Transfer

    driver = json.loads(Path(args.driver_result).read_text())
    submitted, calls = driver["submitted"], driver["calls"]
    job_ids = [c[1] for c in calls]
    jobs = {}
    for start in range(0, len(job_ids), 2000):
        for row in Job.objects.filter(pk__in=job_ids[start : start + 2000]).values(
            "id", "state", "created_at", "finished_at", "dispatch", "owner_node", "ran_on", "attempts", "error"
        ):
            jobs[str(row["id"])] = row
    states = Counter(j["state"] for j in jobs.values())
    open_jobs = [j for j in jobs.values() if j["state"] not in FINAL_STATES]
    applied = list(
        Transfer.objects.order_by("applied_at", "id").values_list(
            "transfer_id", "from_account__name", "to_account__name", "amount", "fencing_token"
        )
    )
    applied_ids = Counter(row[0] for row in applied)
    expected = dict.fromkeys(ACCOUNTS, OPENING)
    for source, target, amount in submitted.values():
        expected[source] -= amount
        expected[target] += amount
    balances = dict(Account.objects.values_list("name", "balance"))
    tokens: dict[str, list] = defaultdict(list)
    for _tid, source, _target, _amount, token in applied:
        tokens[source].append(token)
    backwards = [a for a, ts in tokens.items() if None in ts or any(b <= x for x, b in zip(ts, ts[1:], strict=False))]
    succeeded_per_key = (
        Job.objects.filter(pk__in=job_ids, state="succeeded")
        .values("idempotency_key")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    wrong_args = sum(
        1
        for tid, source, target, amount, _tok in applied
        if tid in submitted and submitted[tid] != [source, target, amount]
    )
    events = [
        {
            "node": e["node__name"],
            "from": e["from_state"],
            "to": e["to_state"],
            "at": e["created_at"].timestamp(),
            "actor": e["actor"],
            "reason": e["reason"],
            "incarnation": e["incarnation"],
        }
        for e in MembershipEvent.objects.filter(
            created_at__gte=datetime.datetime.fromtimestamp(args.start, tz=datetime.UTC)
        )
        .order_by("id")
        .values("node__name", "from_state", "to_state", "created_at", "actor", "reason", "incarnation")
    ]
    result = {
        "calls": len(calls),
        "unique": len(submitted),
        "duplicates": sum(1 for c in calls if c[3]),
        "job_rows": len(jobs),
        "job_states": dict(states),
        "open_jobs": [
            {"id": str(j["id"]), "state": j["state"], "owner": j["owner_node"], "error": j["error"][:200]}
            for j in open_jobs[:20]
        ],
        "open_count": len(open_jobs),
        "failed": [j["error"][:200] for j in jobs.values() if j["state"] == "failed"][:10],
        "transfer_rows": len(applied),
        "applied_twice": sum(n - 1 for n in applied_ids.values() if n > 1),
        "missing": len(set(submitted) - set(applied_ids)),
        "unexpected": len(set(applied_ids) - set(submitted)),
        "wrong_args": wrong_args,
        "keys_succeeded_twice": succeeded_per_key,
        "balances_match": balances == expected,
        "balances_off_by": sum(abs(balances.get(a, 0) - expected[a]) for a in ACCOUNTS),
        "total": sum(balances.values()),
        "total_expected": OPENING * len(ACCOUNTS),
        "tokens_backwards": backwards,
        "jobs": [
            [
                j["created_at"].timestamp(),
                j["finished_at"].timestamp() if j["finished_at"] else None,
                j["state"],
                j["dispatch"],
                j["owner_node"],
                j["ran_on"],
                j["attempts"],
            ]
            for j in jobs.values()
        ],
        "events": events,
    }
    Path(args.result).write_text(json.dumps(result, default=str))
    return 0


# --- the orchestrator: services, processes, sampling -------------------------------------------------------


def _env(args: argparse.Namespace, database_url: str, run_token: str, var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DEPLOYMENT_VARIABLES}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=args.redis_url,
        RINGMASTER_VAR_DIR=str(var_dir),
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(40),
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="config.settings",
        PYTHONDONTWRITEBYTECODE="1",
        RINGMASTER_DEMO="0",
    )
    env[MARKER] = run_token
    return env


def _database_url(admin_url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(admin_url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))


def _create_database(admin_url: str, name: str) -> str:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return conn.execute("SHOW server_version").fetchone()[0]


def _drop_database(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=5)


def _flush_redis(url: str) -> str:
    client = _redis(url)
    try:
        client.flushdb()
        return client.info("server")["redis_version"]
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _is_ours(pid: int, run_token: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER}={run_token}".encode() in environ.split(b"\0")


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, state) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Procs:
    """Children in their own sessions, logging to files; stopped by process group."""

    def __init__(self, env: dict[str, str], logdir: Path, run_token: str) -> None:
        self.env, self.logdir, self.run_token = env, logdir, run_token
        self.procs: dict[str, subprocess.Popen] = {}
        self.expected_exit: set[str] = set()

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        with open(self.logdir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                [PYTHON, *argv], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs[name] = proc
        return proc

    def tail(self, name: str, chars: int = 2500) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if name not in self.expected_exit and proc.poll() is not None:
                raise RuntimeError(f"{name} exited unexpectedly ({proc.returncode}); its log ends:\n{self.tail(name)}")

    def stop_all(self) -> None:
        table = _proc_table()
        groups = {pgid for pid, (_pp, pgid, _s) in table.items() if _is_ours(pid, self.run_token)}
        groups.discard(os.getpgrp())  # a `manage.py chaos` run by this process would be in ours
        for pgid in groups:  # the workers' own groups too (run_node starts each in a new session)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGCONT)  # a frozen worker cannot shut down
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_is_ours(pid, self.run_token) for pid in _proc_table()):
            time.sleep(0.2)
        for pid in _proc_table():
            if _is_ours(pid, self.run_token):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def _run(env: dict[str, str], argv: list[str], timeout: float) -> str:
    done = subprocess.run([PYTHON, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv[:4])}` failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str, procs: Procs) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        procs.check_alive()
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class Db:
    """The orchestrator's own look at the benchmark database (plain SQL: it does not run Django)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=5)

    def node_states(self, names: list[str]) -> dict[str, str]:
        rows = self.conn.execute("SELECT name, state FROM cluster_node WHERE name = ANY(%s)", (names,)).fetchall()
        return dict(rows)

    def job_counts(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT state, count(*) FROM cluster_job GROUP BY state").fetchall())

    def open_jobs(self) -> int:
        row = self.conn.execute(f"SELECT count(*) FROM cluster_job WHERE {OPEN_SQL}").fetchone()  # noqa: S608
        return int(row[0])

    def owned_open(self, node: str) -> dict[str, int]:
        sql = f"SELECT state, count(*) FROM cluster_job WHERE owner_node = %s AND {OPEN_SQL} GROUP BY state"  # noqa: S608
        return dict(self.conn.execute(sql, (node,)).fetchall())

    def close(self) -> None:
        self.conn.close()


def _worker_pid(supervisor: int, table: dict[int, tuple[int, int, str]]) -> int | None:
    """The Celery worker a ``run_node`` supervisor started (its child, leader of its own process group)."""
    kids = [pid for pid, (ppid, pgid, state) in table.items() if ppid == supervisor and pgid == pid and state != "Z"]
    return kids[0] if kids else None


def _sample(procs: Procs, workers: list[str]) -> list[tuple[str, int, float]]:
    table = _proc_table()
    rows = []
    for label, proc in procs.procs.items():
        if proc.poll() is not None:
            continue
        rss = _rss_mb(proc.pid)
        if rss is not None:
            rows.append((label if label not in workers else f"{label} (run_node supervisor)", proc.pid, rss))
        if label in workers:
            pid = _worker_pid(proc.pid, table)
            rss = _rss_mb(pid) if pid else None
            if rss is not None:
                rows.append((f"{label} (Celery worker)", pid, rss))
    return rows


class Chaos:
    """The ``child_chaos`` helper: Django loaded once, before the load, so a kill is not late by a startup."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([PYTHON, SCRIPT, "--child", "chaos"], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip

    def __call__(self, action: str, node: str) -> dict:
        self.proc.stdin.write(f"{action} {node}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the chaos helper exited ({self.proc.poll()}) before `{action} {node}`")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"chaos {action} {node} failed: {answer['error']}")
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main_orchestrate(args: argparse.Namespace) -> int:
    if not 0 <= int(urllib.parse.urlsplit(args.redis_url).path.strip("/") or 0) <= 15:
        raise SystemExit(f"--redis-url must name a database number: {args.redis_url}")
    started = time.time()
    run_token = uuid.uuid4().hex
    work = Path(tempfile.mkdtemp(prefix="ringmaster-bench-load-"))
    logdir = work / "logs"
    logdir.mkdir()
    database_url = _database_url(args.admin_url, args.database)
    env = _env(args, database_url, run_token, work / "var")
    procs = Procs(env, logdir, run_token)
    versions = {"python": platform.python_version()}
    db = chaos = None
    data: dict = {"chaos": [], "samples": [], "load": [], "open": []}
    failure: BaseException | None = None
    try:
        versions["redis"] = _flush_redis(args.redis_url)
        versions["postgres"] = _create_database(args.admin_url, args.database)
        log(f"database {args.database} created, Redis {args.redis_url} flushed; migrating (logs in {work})")
        _run(env, ["manage.py", "migrate", "--noinput"], timeout=300)
        t = time.monotonic()
        _run(env, [SCRIPT, "--child", "setup", "--nodes", str(args.nodes), "--result", str(work / "setup.json")], 600)
        log(f"{args.nodes} simulated nodes registered and activated in {time.monotonic() - t:.0f}s")
        db = Db(database_url)
        port = _free_port()
        procs.start(
            "uvicorn",
            [
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
        )

        def healthy() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()  # noqa: S310 (loopback)
                return True
            except OSError:
                return False

        _wait_for(healthy, 60, "uvicorn to answer /healthz", procs)
        # The simulated nodes beat from now on, before the sweeper starts: otherwise it would convict them all.
        stop_file = work / "heartbeats-end"
        procs.start(
            "heartbeat-client",
            [
                SCRIPT,
                "--child",
                "heartbeats",
                "--port",
                str(port),
                "--start",
                str(time.time() + 1),
                "--duration",
                "86400",
                "--stop-file",
                str(stop_file),
                "--setup",
                str(work / "setup.json"),
                "--result",
                str(work / "beats.json"),
            ],
        )
        procs.expected_exit.add("heartbeat-client")  # it ends by itself; checked below
        time.sleep(3)
        procs.start("sweeper", ["manage.py", "sweeper"])
        workers = [f"node-{chr(ord('a') + i)}" for i in range(args.workers)]
        for name in workers:
            procs.start(name, ["manage.py", "run_node", name, "--concurrency", str(args.concurrency)])
        took = _wait_for(
            lambda: (
                set(db.node_states(workers).values()) == {"active"} and len(db.node_states(workers)) == len(workers)
            ),
            180,
            "the worker nodes to be active",
            procs,
        )
        log(f"{len(workers)} worker nodes active after {took:.0f}s; load starts")
        chaos = Chaos(env)

        start = time.time() + 3  # the clients start on the same wall-clock instant
        end = start + args.duration
        data.update(start=start, end=end, port=port, workers=workers)
        common = ["--start", str(start), "--duration", str(args.duration), "--setup", str(work / "setup.json")]
        procs.start(
            "websocket-clients",
            [
                SCRIPT,
                "--child",
                "websockets",
                "--port",
                str(port),
                "--clients",
                str(args.clients),
                *common,
                "--result",
                str(work / "ws.json"),
            ],
        )
        procs.start(
            "job-driver",
            [
                SCRIPT,
                "--child",
                "driver",
                "--rate",
                str(args.rate),
                "--driver-threads",
                str(args.driver_threads),
                "--seed",
                str(args.seed),
                *common,
                "--result",
                str(work / "driver.json"),
            ],
        )
        for name in ("websocket-clients", "job-driver"):
            procs.expected_exit.add(name)  # they end by themselves; checked below

        killed, frozen = workers[1 % len(workers)], workers[2 % len(workers)]
        plan = [(start + args.duration / 3, "kill", killed)]
        if args.restart_after:
            plan.append((start + args.duration / 3 + args.restart_after, "restart", killed))
        plan += [
            (start + args.duration / 2, "pause", frozen),
            (start + args.duration / 2 + args.freeze, "resume", frozen),
        ]
        plan.sort()
        next_sample = start
        while time.time() < end:
            now = time.time()
            if plan and now >= plan[0][0]:
                _due, action, node = plan.pop(0)
                if action in ("kill", "pause"):
                    states = db.job_counts()
                    owned = db.owned_open(node)
                    log(f"{action} {node}: it owns open jobs {owned}; all jobs {states}")
                else:
                    owned = {}
                answer = chaos(action, node)
                at, out = answer["at"], f"pid {answer['pid']}" if answer.get("pid") else ""
                if action == "kill":
                    procs.expected_exit.add(node)  # its supervisor stays, the worker is held down
                data["chaos"].append({"at": at, "action": action, "node": node, "open_owned": owned, "output": out})
                log(f"{action} {node} at t={at - start:.1f}s: {out}")
                continue
            if now >= next_sample:
                next_sample += args.sample
                data["samples"].append((now, _sample(procs, workers)))
                data["load"].append((now, os.getloadavg()[0]))
                data["open"].append((now, db.open_jobs()))
                procs.check_alive()
            time.sleep(0.1)
        data["samples"].append((time.time(), _sample(procs, workers)))
        log("load over; waiting for the clients' results and the drain")
        data["open_at_end"] = db.open_jobs()
        for name in ("websocket-clients", "job-driver"):
            try:
                code = procs.procs[name].wait(timeout=120)
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"{name} did not finish; its log ends:\n{procs.tail(name)}") from exc
            if code != 0:
                raise RuntimeError(f"{name} failed ({code}); its log ends:\n{procs.tail(name)}")
        drain_start = time.time()
        drained = None
        while time.time() - drain_start < args.drain:
            if db.open_jobs() == 0:
                drained = time.time() - drain_start
                break
            time.sleep(0.5)
        data["drained_after"] = drained
        data["open_after_drain"] = db.open_jobs()
        data["samples"].append((time.time(), _sample(procs, workers)))
        data["final_states"] = db.node_states(workers)
        log("auditing the ledger")
        _run(
            env,
            [
                SCRIPT,
                "--child",
                "audit",
                "--start",
                str(start),
                "--driver-result",
                str(work / "driver.json"),
                "--result",
                str(work / "audit.json"),
            ],
            timeout=600,
        )
        data["audit"] = json.loads((work / "audit.json").read_text())
        # The simulated nodes beat until now: stopping them with the load would make the sweeper convict all of
        # them during the drain, which is not what is measured.
        stop_file.write_text(str(time.time()))
        try:
            code = procs.procs["heartbeat-client"].wait(timeout=60)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"the heartbeat client did not stop; its log ends:\n{procs.tail('heartbeat-client')}"
            ) from exc
        if code != 0:
            raise RuntimeError(f"the heartbeat client failed ({code}); its log ends:\n{procs.tail('heartbeat-client')}")
        data["beats"] = json.loads((work / "beats.json").read_text())
        data["ws"] = json.loads((work / "ws.json").read_text())
        data["driver"] = json.loads((work / "driver.json").read_text())
        data["log_errors"] = _log_errors(logdir)
        data["redis_keys"] = _redis(args.redis_url).dbsize()
    except BaseException as exc:
        failure = exc
        log(f"failed: {type(exc).__name__}: {exc}; logs kept in {work}")
        args.keep_logs = True
    finally:
        if chaos is not None:
            chaos.close()
        procs.stop_all()
        if db is not None:
            db.close()
        for step in (lambda: _drop_database(args.admin_url, args.database), lambda: _flush_redis(args.redis_url)):
            try:
                step()
            except Exception as exc:
                log(f"cleanup step failed: {exc}")
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)
    if failure is not None:
        if isinstance(failure, KeyboardInterrupt | SystemExit):
            raise failure
        print(f"bench_load: the setup broke: {type(failure).__name__}: {failure}", file=sys.stderr)
        return 2
    text, ok = report(args, versions, data, time.time() - started)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    if not ok:
        print("bench_load: effects lost or doubled, or jobs left open: see the report", file=sys.stderr)
        return 1
    return 0


def _log_errors(logdir: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(logdir.glob("*.log")):
        lines = [
            line.strip()
            for line in path.read_text(errors="replace").splitlines()
            if "ERROR" in line or "CRITICAL" in line or "Traceback" in line
        ]
        if lines:
            found[path.stem] = [f"{len(lines)} lines", *lines[:3]]
    return found


# --- the report --------------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return "—" if seconds != seconds else f"{seconds * 1000:.0f}" if seconds >= 0.1 else f"{seconds * 1000:.1f}"


def _slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return float("nan")
    xs = [t for t, _ in points]
    ys = [v for _, v in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else float("nan")


def _memory_rows(data: dict, warmup: float) -> list[str]:
    start, end = data["start"], data["end"]
    series: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    for at, rows in data["samples"]:
        if at <= end + 1:
            for label, pid, rss in rows:
                series[(label, pid)].append((at, rss))
    lines = []
    for (label, pid), points in sorted(series.items(), key=lambda kv: (kv[0][0], kv[1][0][0])):
        # A process's first seconds are its warm-up (imports, connections, caches), also for one started late.
        kept = [p for p in points if p[0] >= max(start, points[0][0]) + warmup] or points
        first, last = kept[0], kept[-1]
        peak = max(v for _, v in kept)
        slope = _slope_mb_per_min(kept)
        thirds = [kept[i * len(kept) // 3 : (i + 1) * len(kept) // 3] for i in range(3)]
        means = [statistics.fmean(v for _, v in part) for part in thirds if part]
        growth = last[1] - first[1]
        if len(means) == 3 and means[0] < means[1] < means[2] and growth > max(3.0, 0.05 * first[1]):
            verdict = "**grows**"
        elif abs(growth) <= max(3.0, 0.05 * first[1]):
            verdict = "flat"
        else:
            verdict = "steps, no steady trend" if growth > 0 else "shrinks"
        span = f"{first[0] - start:.0f}–{last[0] - start:.0f}"
        lines.append(
            f"| {label} | {pid} | {span} | {first[1]:.1f} | {last[1]:.1f} | {peak:.1f} | {growth:+.1f} "
            f"| {slope:+.2f} | {verdict} |"
        )
    return lines


def report(args: argparse.Namespace, versions: dict, data: dict, elapsed: float) -> tuple[str, bool]:
    start, end, duration = data["start"], data["end"], args.duration
    audit, driver = data["audit"], data["driver"]
    beats = [b for b in data["beats"]["beats"] if start <= b[0] < end]
    ok_beats = [b for b in beats if b[2] == 200]
    codes = Counter(str(b[2]) for b in beats)
    hb_lat = [b[1] for b in ok_beats]
    expected_beats = args.nodes * duration
    calls = driver["calls"]
    jobs = audit["jobs"]
    finished = [j for j in jobs if j[1] is not None and j[2] in FINAL_STATES]
    finished_in_load = [j for j in finished if start <= j[1] < end]
    job_lat = [j[1] - j[0] for j in finished]
    enqueue_lat = [c[4] for c in calls]
    late = [max(0.0, c[5]) for c in calls]
    backlog_end = len(calls) - sum(1 for j in finished if j[1] < end)
    loads = [v for _, v in data["load"]]
    ws = data["ws"]["clients"]
    ws_msgs = sum(c["messages"] for c in ws)
    ws_errors = [e for c in ws for e in c["errors"]]
    lost = audit["missing"] + audit["open_count"]
    doubled = audit["applied_twice"] + audit["keys_succeeded_twice"]
    ok = (
        lost == 0
        and doubled == 0
        and audit["balances_match"]
        and audit["unexpected"] == 0
        and audit["wrong_args"] == 0
        and audit["total"] == audit["total_expected"]
    )
    chaos = {c["action"]: c for c in data["chaos"]}
    killed = chaos.get("kill", {}).get("node")
    frozen = chaos.get("pause", {}).get("node")
    sim_events = Counter(
        e["to"] for e in audit["events"] if e["node"].startswith(SIM_PREFIX) and start <= e["at"] < end
    )
    hb_errors = len(beats) - len(ok_beats)
    job_errors = audit["job_states"].get("failed", 0) + len(driver["errors"])

    lines = [
        "# Load held: heartbeats, jobs and dashboards at once, with a worker killed and one frozen",
        "",
        f"`.venv/bin/python benchmarks/bench_load.py --duration {duration:g}` — "
        f"{datetime.datetime.fromtimestamp(start, tz=datetime.UTC):%Y-%m-%d %H:%M} UTC; PostgreSQL "
        f"{versions['postgres']}, Redis {versions['redis']}, Python {versions['python']}; {os.cpu_count()} CPUs"
        f" shared with other work: 1-minute load average {min(loads):.1f}–{max(loads):.1f}"
        f" (mean {statistics.fmean(loads):.1f}) during the run. The whole run took {elapsed:.0f} s.",
        "",
        f"On loopback: uvicorn `config.asgi:application` (one process), {args.workers} worker nodes (`manage.py"
        f" run_node NAME --concurrency {args.concurrency}`, thread pool), `manage.py sweeper`, PostgreSQL and Redis;"
        f" {args.nodes} simulated nodes beating at 1 Hz over HTTP (each its own token and keep-alive connection),"
        f" {args.rate:g} ledger transfers/s offered (`cluster_task`, each `delay()` in its own transaction, every"
        f" {DUPLICATE_EVERY}th a repeat of an earlier transfer id) over {len(ACCOUNTS)} accounts, {args.clients}"
        f" staff WebSocket clients on `/ws/cluster/`, for {duration:g} s. `{killed}` SIGKILLed at"
        f" t={chaos['kill']['at'] - start:.0f} s"
        + (f" and restarted at t={chaos['restart']['at'] - start:.0f} s" if "restart" in chaos else " (kept down)")
        + f"; `{frozen}` frozen (SIGSTOP) at t={chaos['pause']['at'] - start:.0f} s for {args.freeze:g} s.",
        "",
        "| measure | held |",
        "| --- | ---: |",
        f"| heartbeats answered 200 /s (offered {args.nodes}/s) | {len(ok_beats) / duration:.1f}"
        f" ({len(ok_beats):,} of {expected_beats:,.0f} due) |",
        f"| heartbeat latency p50 / p99 / max (ms) | {_ms(_percentile(hb_lat, 0.5))} / {_ms(_percentile(hb_lat, 0.99))}"
        f" / {_ms(max(hb_lat) if hb_lat else float('nan'))} |",
        f"| heartbeat errors (non-200 or socket) | {hb_errors}"
        + (f" ({', '.join(f'{n} × {c}' for c, n in sorted(codes.items()) if c != '200')})" if hb_errors else "")
        + " |",
        f"| jobs submitted /s (offered {args.rate:g}/s) | {len(calls) / duration:.1f} ({len(calls):,}:"
        f" {audit['unique']:,} transfers + {audit['duplicates']:,} repeats) |",
        f"| submissions behind schedule p50 / p99 (ms); slots missed | {_ms(_percentile(late, 0.5))} /"
        f" {_ms(_percentile(late, 0.99))}; {driver['missed']} |",
        f"| jobs finished /s during the load | {len(finished_in_load) / duration:.1f} |",
        f"| backlog at the end of the load (submitted, not finished; jobs open in the database) | {backlog_end:,};"
        f" {data['open_at_end']:,} |",
        "| drain after the load | "
        + (
            f"{data['drained_after']:.0f} s"
            if data["drained_after"] is not None
            else f"**not drained in {args.drain:g} s: {data['open_after_drain']} open**"
        )
        + " |",
        f"| job latency enqueue → finish p50 / p99 / max (s) | {_percentile(job_lat, 0.5):.2f} /"
        f" {_percentile(job_lat, 0.99):.2f} / {max(job_lat) if job_lat else float('nan'):.2f} |",
        f"| `delay()` + commit p50 / p99 (ms) | {_ms(_percentile(enqueue_lat, 0.5))} /"
        f" {_ms(_percentile(enqueue_lat, 0.99))} |",
        f"| job errors (failed jobs + failed submissions) | {job_errors} |",
        f"| WebSocket messages read (5 clients) / disconnects | {ws_msgs:,} / {len(ws_errors)} |",
        f"| effects lost (unique transfers not applied + jobs left open) | **{lost}** |",
        f"| effects doubled (transfers applied twice + idempotency keys succeeded twice) | **{doubled}** |",
        f"| balances = opening + submitted transfers; total unchanged | {'yes' if audit['balances_match'] else 'NO'};"
        f" {'yes' if audit['total'] == audit['total_expected'] else 'NO'} |",
        "",
        "## Effects: the ledger against what was submitted",
        "",
        "| check | result | must be |",
        "| --- | ---: | ---: |",
        f"| transfer calls (unique + repeats) | {audit['calls']:,} ({audit['unique']:,} + {audit['duplicates']:,}) | |",
        f"| `Transfer` rows | {audit['transfer_rows']:,} | {audit['unique']:,} |",
        f"| unique transfers never applied | {audit['missing']} | 0 |",
        f"| transfers applied twice | {audit['applied_twice']} | 0 |",
        "| rows not matching a submission (unknown id or other arguments) |"
        f" {audit['unexpected'] + audit['wrong_args']} | 0 |",
        f"| idempotency keys whose jobs succeeded twice | {audit['keys_succeeded_twice']} | 0 |",
        f"| account balances as expected (off by) | {'yes' if audit['balances_match'] else 'NO'}"
        f" ({audit['balances_off_by']}) | yes (0) |",
        f"| sum of balances | {audit['total']:,} | {audit['total_expected']:,} |",
        f"| job states | {', '.join(f'{s} {n:,}' for s, n in sorted(audit['job_states'].items()))} |"
        f" succeeded {audit['unique']:,}, duplicate {audit['duplicates']:,} |",
        f"| jobs open after the drain | {audit['open_count']} | 0 |",
        f"| accounts whose fencing tokens go backwards | {len(audit['tokens_backwards'])} | 0 |",
        "",
    ]
    lines += _chaos_section(data, start)
    if sim_events:
        lines.append(
            f"Membership events of the {args.nodes} simulated nodes during the run: "
            + ", ".join(f"{n} × {s}" for s, n in sorted(sim_events.items()))
            + " (each would be a false suspicion or conviction caused by the load)."
        )
    else:
        lines.append(f"None of the {args.nodes} simulated nodes was suspected or declared dead during the run.")
    lines += [
        "",
        f"## Over time ({args.window:g} s windows)",
        "",
        "| t (s) | load avg | heartbeats 200/s | heartbeat p99 ms | errors | jobs submitted/s | jobs finished/s"
        " | open jobs at the end | events |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    t = 0.0
    while t < duration - 1e-6:
        lo, hi = start + t, start + min(duration, t + args.window)
        width = hi - lo
        wb = [b for b in beats if lo <= b[0] < hi]
        wok = [b[1] for b in wb if b[2] == 200]
        wl = [v for at, v in data["load"] if lo <= at < hi]
        wopen = [v for at, v in data["open"] if lo <= at < hi]
        wev = [f"{c['action']} {c['node']}" for c in data["chaos"] if lo <= c["at"] < hi]
        wev += [
            f"{e['node']} {e['to']}" for e in audit["events"] if lo <= e["at"] < hi and e["node"] in (killed, frozen)
        ]
        wsim = Counter(e["to"] for e in audit["events"] if lo <= e["at"] < hi and e["node"].startswith(SIM_PREFIX))
        wev += [f"{n} simulated nodes {state}" for state, n in sorted(wsim.items())]
        lines.append(
            f"| {t:.0f} | {statistics.fmean(wl) if wl else float('nan'):.1f} | {len(wok) / width:.0f}"
            f" | {_ms(_percentile(wok, 0.99))} | {len(wb) - len(wok)}"
            f" | {sum(1 for c in calls if lo <= c[0] < hi) / width:.1f}"
            f" | {sum(1 for j in finished if lo <= j[1] < hi) / width:.1f} | {wopen[-1] if wopen else '—'}"
            f" | {', '.join(wev)} |"
        )
        t += args.window
    lines += [
        "",
        "## Memory (RSS) of each process",
        "",
        f"Sampled every {args.sample:g} s; *start* is the first sample after {args.warmup:g} s of load (or of the"
        " process's life, if it started later), *end* the last one before the load stopped; *slope* the"
        " least-squares fit over those samples. *grows*: the mean of each third of the samples above the one before"
        " and the end more than max(3 MB, 5%) above the start. The load generators (job-driver, heartbeat-client)"
        " keep a record of every call they made until the end, so they grow by design.",
        "",
        "| process | pid | seconds | start MB | end MB | peak MB | end − start MB | slope MB/min | trend |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
        *_memory_rows(data, args.warmup),
        "",
        f"Redis database keys after the drain: {data['redis_keys']:,}.",
        "",
        "## Errors",
        "",
    ]
    if hb_errors:
        lines.append(f"- Heartbeats: {', '.join(f'{n} × {c}' for c, n in sorted(codes.items()) if c != '200')}.")
    stats = data["beats"]["stats"]
    lines.append(
        f"- Heartbeat client: {stats.get('connects', 0)} connections opened for {args.nodes} nodes, "
        f"{stats.get('late', 0)} beats sent more than 0.5 s late (the previous answer took that long), "
        f"{stats.get('rejoins', 0)} rejoins after a dead verdict."
    )
    for key in stats:
        if key[:3].isdigit() and ": " in key:
            lines.append(f"- Heartbeat answer `{key[:300]}`")
    for line in driver["errors"][:5]:
        lines.append(f"- Submission failed: `{line}`")
    for line in audit["failed"][:5]:
        lines.append(f"- Failed job: `{line}`")
    for line in ws_errors[:5]:
        lines.append(f"- WebSocket: `{line}`")
    lines.append(
        "- WebSocket clients: "
        + "; ".join(
            f"{c['connects']} connection(s), {c['messages']:,} messages ({c['bytes'] / 1024:.0f} KiB), longest gap"
            f" {c['max_gap']:.1f} s"
            for c in ws
        )
        + f". Message types: {dict(sum((Counter(c['types']) for c in ws), Counter()))}."
    )
    for name, found in data["log_errors"].items():
        lines.append(
            f"- Log of {name}: {found[0]} with ERROR/CRITICAL/Traceback, first: "
            + "; ".join(f"`{x[:220]}`" for x in found[1:])
        )
    for job in audit["open_jobs"][:5]:
        lines.append(f"- Job left open: {job}")
    return "\n".join(lines) + "\n", ok


def _chaos_section(data: dict, start: float) -> list[str]:
    audit = data["audit"]
    lines = ["## Around the kill and the freeze", ""]
    for c in data["chaos"]:
        node = c["node"]
        owned = f"; it owned {c['open_owned']} open jobs" if c["open_owned"] else ""
        lines.append(f"- t={c['at'] - start:.1f} s: `chaos --{c['action']} {node}`{owned}.")
        later = [d["at"] for d in data["chaos"] if d["node"] == node and d["at"] > c["at"]]
        until = min(later, default=float("inf"))
        following = [e for e in audit["events"] if e["node"] == node and c["at"] <= e["at"] < until]
        for e in following[:6]:
            lines.append(
                f"  - +{e['at'] - c['at']:.1f} s: {e['from'] or '—'} → **{e['to']}** (incarnation {e['incarnation']},"
                f" by {e['actor'] or '?'}: {e['reason'][:90]})"
            )
    jobs = audit["jobs"]
    moved = [j for j in jobs if j[3] > 1]
    lines += [
        "",
        f"Jobs handed over (dispatch number above 1): {len(moved)}, ending "
        + (", ".join(f"{s} {n}" for s, n in sorted(Counter(j[2] for j in moved).items())) or "—")
        + "; they ran on "
        + (", ".join(f"{s or '—'} {n}" for s, n in sorted(Counter(j[5] for j in moved).items())) or "—")
        + ". Jobs run per node: "
        + ", ".join(f"{s or '—'} {n:,}" for s, n in sorted(Counter(j[5] for j in jobs).items()))
        + ". Worker node states at the end: "
        + ", ".join(f"{n} {s}" for n, s in sorted(data["final_states"].items()))
        + ".",
        "",
    ]
    return lines


# --- entry point ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    parser.add_argument("--quick", action="store_true", help="a 60 s run for development")
    parser.add_argument("--nodes", type=int, default=200, help="simulated nodes beating at 1 Hz (default 200)")
    parser.add_argument("--rate", type=float, default=50.0, help="transfers offered per second (default 50)")
    parser.add_argument("--clients", type=int, default=5, help="dashboard WebSocket clients (default 5)")
    parser.add_argument("--workers", type=int, default=3, help="worker nodes (default 3)")
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker node (default 4)")
    parser.add_argument("--freeze", type=float, default=20.0, help="seconds the frozen worker stays stopped")
    parser.add_argument(
        "--restart-after",
        type=float,
        default=30.0,
        help="seconds after the kill to restart the killed worker (0: keep it down)",
    )
    parser.add_argument("--drain", type=float, default=600.0, help="seconds to wait for open jobs after the load")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of load before the 'start' memory sample")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per row of the over-time table")
    parser.add_argument("--driver-threads", type=int, default=4, help="threads submitting transfers (default 4)")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("RINGMASTER_BENCH_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL superuser URL",
    )
    parser.add_argument("--database", default="rm_bench_load", help="database created and dropped")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10", help="Redis database, FLUSHED")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument("--output", help="also write the report to this file")
    parser.add_argument(
        "--child", choices=["setup", "heartbeats", "websockets", "driver", "audit", "chaos"], help=argparse.SUPPRESS
    )
    for name in ("--setup", "--result", "--driver-result", "--stop-file"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=float, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        children = {
            "setup": child_setup,
            "heartbeats": child_heartbeats,
            "websockets": child_websockets,
            "driver": child_driver,
            "audit": child_audit,
            "chaos": child_chaos,
        }
        return children[args.child](args)
    if args.quick:
        args.duration, args.window, args.warmup = 60.0, 10.0, 10.0

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_sigterm)
    return main_orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
