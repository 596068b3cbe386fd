"""Benchmark of ``cluster_task`` jobs with real Celery workers on Redis + PostgreSQL: throughput and chaos.

Run by hand: ``.venv/bin/python benchmarks/bench_jobs.py [--jobs 2000] [--rounds 1] [--output FILE]``; prints one
markdown report (``--help`` for the rest). It flushes the Redis database ``--redis-url`` (default
``redis://127.0.0.1:6379/11``, the broker, result backend, cache and lock store of every process it starts) and
creates, migrates and at the end drops the PostgreSQL database ``--database`` (default
``ringmaster_bench_jobs``) on the server of ``--admin-url``. Every Django process runs as a subprocess with its
own environment (settings are read at startup): ``DATABASE_URL`` and ``REDIS_URL`` of the benchmark,
``DJANGO_DEBUG=0`` (no query log in the workers).

1. Throughput: a trivial ``cluster_task`` with a routing key, a lock and an idempotency key
   (``benchmarks/jobs_bench_tasks.py``, loaded by the workers with ``-I jobs_bench_tasks`` so the app never
   sees it) against a plain ``shared_task(acks_late=True)`` doing the same trivial work, in the same run, on
   the same two worker nodes (``configured``: ``celery worker --pool prefork --concurrency 1`` each, 2 pool
   processes; ``threads``: ``--pool threads --concurrency 2`` each, as ``run_node`` runs a node) with
   the sweeper running, so both nodes are active in the ring and keyed jobs are routed to their owner's queue.
   ``--jobs`` jobs per round and kind are enqueued while the workers consume nothing (remote control
   ``cancel_consumer`` on every queue they read; cluster jobs 100 per transaction, as an app would), then the
   workers resume (``add_consumer``); the time is from the resume to the last job finished: the latest
   ``Job.finished_at`` for ``cluster_task``, the latest ``date_done`` in the result backend for the plain
   task. So both rows measure the workers' throughput, never the single producer's publishing rate. Kinds
   take turns leading a round so a drifting machine load hits all alike. ``--parts`` adds rows of the same
   ``cluster_task`` without its lock, and with its routing key only: what each option costs, in the same
   run; and a row of its server work only: a plain task sending the same statements and taking the same
   lock with none of ``cluster_task``'s Python, the rate no wrapper can exceed; and the same less the
   ``running`` write and the lock check before COMMIT ("server work, lean"), and that in one transaction.
   Workers' CPU time per job (main and pool processes) is reported too: unlike jobs/s it hardly depends on
   what else runs on the machine.
   When ``cluster_task`` is under ``--target`` times the plain rate, one pool process is profiled with py-spy
   (wall clock, idle included: where a job waits) during an extra round, and one job's SQL statements and
   Redis commands are counted in-process (``task.apply()`` eagerly, after the workers stopped). py-spy is not
   a requirement: ``.venv/bin/pip install py-spy``; without it the profile is skipped and says so.
   Configurations (``--variants``), each with its own workers: ``configured`` (the project's settings). A
   variant is a settings module generated in the run's temporary folder from the project's settings plus a
   few lines; add one to ``VARIANTS`` to compare a setting.
2. Chaos: the ledger example (``examples/ledger``) on 3 worker nodes (``--pool threads --concurrency 4`` each,
   as ``tests/cluster/test_chaos.py``), 500 transfer calls of which 20% repeat an earlier transfer. When a
   quarter of the transfers is applied one node is SIGKILLed (its whole process group), restarted once it
   is declared dead, and the run waits for every job to end. Reported: duplicates applied, jobs lost, and the
   timeline from the SIGKILL (suspect, dead, jobs handed over, their completion, the node back active).

Processes are started in their own sessions and recorded in a pid file; whatever happens (failure, Ctrl-C,
SIGTERM) they are stopped by process group and the database is dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
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
# Every process this script starts carries this variable; cleanup only kills processes that have it.
MARKER = "RINGMASTER_BENCH_JOBS_RUN"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Throughput configurations: each runs in its own processes (settings are read at startup).
# name: (description, worker node names, extra settings lines, Celery pool, concurrency per worker node).
VARIANTS = {
    "configured": ("the project's settings, prefork pool", ("bench-w1", "bench-w2"), "", "prefork", 1),
    "threads": ("the project's settings, threads pool as run_node", ("bench-t1", "bench-t2"), "", "threads", 2),
    "threads4": ("the project's settings, threads pool, 4 threads", ("bench-u1", "bench-u2"), "", "threads", 4),
}
SETTINGS_TEMPLATE = '''"""Generated by benchmarks/bench_jobs.py: the project's settings with one change."""

from config.settings import *  # noqa: F403

{extra}'''
CHAOS_NODES = ("chaos-a", "chaos-b", "chaos-c")
ENQUEUE_BATCH = 100
ACCOUNTS = [f"acct-{i}" for i in range(8)]
OPENING = 100_000
RESULT_PREFIX = "celery-task-meta-"
FINAL_STATES = ("succeeded", "duplicate", "failed")
OPEN_STATES = ("queued", "running", "retrying", "requeued")


# --- helpers (no Django) ----------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench_jobs {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _env(database_url: str, redis_url: str, run_token: str, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DEPLOYMENT_VARIABLES}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(40),
        DJANGO_ALLOWED_HOSTS="localhost",
        DJANGO_LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="config.settings",
        PYTHONPATH=str(BENCH_DIR),
        PYTHONDONTWRITEBYTECODE="1",
        RINGMASTER_DEMO="0",
    )
    env[MARKER] = run_token
    env.update(overrides)
    return env


def _is_ours(pid: int, run_token: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER}={run_token}".encode() in environ.split(b"\0")


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of the process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def _stop_group(pgid: int, run_token: str, grace: float = 20.0) -> None:
    """SIGTERM a process group this run started (one of its members carries the run's marker), then SIGKILL."""
    if not any(_is_ours(pid, run_token) for pid in _group_members(pgid)):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_members(pgid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _tree_pids(root_pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry))
    pids, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, ()))
    return pids


def _cpu_seconds(pids: list[int], *, reaped: bool = False) -> float:
    """CPU seconds of ``pids``; with ``reaped``, plus what their children that have ended used.

    A server's processes come and go between two readings (PostgreSQL's autovacuum workers, a
    backend whose client disconnected): an ended one leaves the sum of the living, and its time
    moves to the parent that reaped it (the postmaster's cutime and cstime), so counting those too
    keeps the total from going backwards.
    """
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        if reaped:
            total += (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
    return total


def _server_pids(command: str) -> list[int]:
    """Every process whose command name is ``command`` (the PostgreSQL or Redis server: all backends)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == command:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def _machine_cpu() -> float:
    """CPU seconds every process of the machine has used so far (/proc/stat: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICKS


def _servers_cpu() -> dict[str, float]:
    """CPU seconds used so far by the PostgreSQL and Redis servers and by the whole machine (shared with other work)."""
    used = {name: _cpu_seconds(_server_pids(name), reaped=True) for name in ("postgres", "redis-server")}
    used["machine"] = _machine_cpu()
    return used


class Cleanup:
    """Undo steps run last-in first-out, on success, failure, Ctrl-C or SIGTERM."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], None]]] = []

    def push(self, name: str, step: Callable[[], None]) -> None:
        self._steps.append((name, step))

    def run(self) -> None:
        while self._steps:
            name, step = self._steps.pop()
            try:
                step()
            except Exception as exc:  # keep undoing the rest
                print(f"cleanup: {name} failed: {exc}", file=sys.stderr)


def _raise_on_sigterm() -> None:
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


# --- PostgreSQL and Redis (orchestrator) ------------------------------------------------------------------


def _database_url(admin_url: str, name: str) -> str:
    import urllib.parse

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


def _flush_redis(redis_url: str) -> str:
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        client.flushdb()
        return client.info("server")["redis_version"]
    finally:
        client.close()


# --- child processes (Django) -----------------------------------------------------------------------------


class Procs:
    """Workers and the sweeper of one child, each in its own session, recorded in the run's pid file."""

    def __init__(self, pidfile: str, logdir: str, run_token: str) -> None:
        self.pidfile, self.logdir, self.run_token = pidfile, Path(logdir), run_token
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts: Counter[str] = Counter()

    def start(self, name: str, cmd: list[str], **env: str) -> subprocess.Popen:
        self.starts[name] += 1
        logfile = self.logdir / f"{name}.{self.starts[name]}.log"
        with open(logfile, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a SIGKILL takes the whole worker down
            )
        with open(self.pidfile, "a") as f:
            f.write(f"{proc.pid}\n")
        self.procs[name] = proc
        return proc

    def worker(self, name: str, pool: str, concurrency: int, *extra: str) -> subprocess.Popen:
        cmd = [PYTHON, "-m", "celery", "-A", "config", "worker", "--pool", pool, "--concurrency", str(concurrency),
               "--hostname", f"{name}@%h", "--loglevel", "WARNING", "--without-mingle", "--without-gossip",
               "--without-heartbeat", *extra]  # fmt: skip
        # As `manage.py run_node` starts worker nodes: a worker's connections outlive its tasks (the
        # settings' default of 0 is for the ASGI server, and would reconnect to PostgreSQL for every job).
        return self.start(name, cmd, RINGMASTER_NODE_NAME=name, DJANGO_CONN_MAX_AGE="60")

    def sweeper(self) -> subprocess.Popen:
        return self.start("sweeper", [PYTHON, "manage.py", "sweeper"])

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)  # a replacement may take the name
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}); log:\n{self.tail(name)}")

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.logdir / f"{name}.{self.starts[name]}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None and _is_ours(proc.pid, self.run_token):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 25
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            with contextlib.suppress(ProcessLookupError):  # pool children left behind by a killed main process
                os.killpg(proc.pid, signal.SIGKILL)


def _django() -> None:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, procs: Procs | None = None,
             interval: float = 0.25) -> float:  # fmt: skip
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        if procs is not None:
            procs.check_alive()
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def node_states(names: tuple[str, ...]) -> dict[str, str]:
    from cluster.models import Node

    return dict(Node.objects.filter(name__in=names).values_list("name", "state"))


def _all_active(names: tuple[str, ...]) -> bool:
    states = node_states(names)
    return len(states) == len(names) and set(states.values()) == {"active"}


def _pg_commits() -> int:
    """Commits + rollbacks of the benchmark database so far (other backends report theirs at most once a second)."""
    from django.db import connection

    time.sleep(1.2)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def _redis_commands(client) -> int:
    return int(client.info("stats")["total_commands_processed"])


class Valve:
    """Stops and restarts the workers' consumption (Celery remote control), so a row is enqueued in full first.

    Without it the plain task finishes about as fast as one process can publish it: the row would
    measure the producer, not the workers.
    """

    def __init__(self, app, hostnames: list[str]) -> None:
        self.app, self.hostnames = app, hostnames
        self.queues: dict[str, list[str]] = {}

    def close(self) -> None:
        active = self.app.control.inspect(destination=self.hostnames, timeout=5).active_queues() or {}
        if sorted(active) != sorted(self.hostnames):
            raise RuntimeError(f"remote control: expected replies from {self.hostnames}, got {sorted(active)}")
        self.queues = {host: [q["name"] for q in queues] for host, queues in active.items()}
        for host, names in self.queues.items():
            for name in names:
                self.app.control.cancel_consumer(name, destination=[host], reply=True, timeout=5)

    def open(self) -> float:
        """Resume every queue closed by ``close``; returns the time the first worker was told."""
        started = time.time()
        for host, names in self.queues.items():
            for name in names:
                self.app.control.add_consumer(name, destination=[host], reply=True, timeout=5)
        return started


def _measure_plain(tasks, client, run: str, items: range, timeout: float, valve: Valve | None = None) -> dict:
    if valve is not None:
        valve.close()
    t0 = time.time()
    ids = [tasks.plain_noop.delay(run=run, item=i).id for i in items]
    enqueued = time.time()
    enqueue_s = enqueued - t0
    keys = [RESULT_PREFIX + task_id for task_id in ids]
    early = sum(client.exists(*keys[i : i + 500]) for i in range(0, len(keys), 500))
    if valve is not None:
        t0 = valve.open()
    servers0 = _servers_cpu()

    def done() -> bool:
        return sum(client.exists(*keys[i : i + 500]) for i in range(0, len(keys), 500)) == len(keys)

    wait_for(done, timeout, f"{len(ids)} plain tasks", interval=0.1)
    servers_cpu_s = {k: v - servers0[k] for k, v in _servers_cpu().items()}
    finished, states = [], Counter()
    for i in range(0, len(keys), 500):
        for raw in client.mget(keys[i : i + 500]):
            meta = json.loads(raw)
            states[meta["status"]] += 1
            finished.append(datetime.datetime.fromisoformat(meta["date_done"]).timestamp())
    return {
        "t0": t0,
        "enqueue_s": enqueue_s,
        "end": max(finished),
        "states": dict(states),
        "early": early,
        "servers_cpu_s": servers_cpu_s,
    }


# Row kinds: the plain task, the cluster_task with every option, and with --parts the same
# cluster_task less the lock, with the routing key only, and its server work sent by a plain task
# with none of cluster_task's Python (jobs_bench_tasks.floor: what no wrapper can go below), also
# without the running write and the lock check before COMMIT (floor_lean: what those two would buy),
# and that in a single transaction (floor_one_tx: the claim not committed before the body).
CLUSTER_KINDS = {
    "cluster_task": "cluster_noop",
    "no lock": "cluster_nolock",
    "key only": "cluster_keyonly",
    "server work only": "cluster_floor",
    "server work, lean": "cluster_floor_lean",
    "server work, one transaction": "cluster_floor_one_tx",
}
FLOOR_KINDS = {
    "server work only": "Server work only (the same statements and Redis lock sent by a plain task, none of"
    " `cluster_task`'s Python)",
    "server work, lean": "Server work, lean (the same less the `running` write and the lock check before COMMIT)",
    "server work, one transaction": "Server work, one transaction (lean, and the idempotency claim in the body's"
    " transaction)",
}


def _measure_cluster(
    tasks, run: str, items: range, timeout: float, valve: Valve | None = None, kind: str = "cluster_task"
) -> dict:
    from django.db import transaction
    from django.db.models import Max

    from cluster.models import Job

    task = getattr(tasks, CLUSTER_KINDS[kind])
    if valve is not None:
        valve.close()
    t0 = time.time()
    ids: list[str] = []
    batch = list(items)
    for start in range(0, len(batch), ENQUEUE_BATCH):
        with transaction.atomic():
            for i in batch[start : start + ENQUEUE_BATCH]:
                ids.append(task.delay(run=run, item=i).id)
    enqueue_s = time.time() - t0
    jobs = Job.objects.filter(pk__in=ids)
    early = jobs.filter(state__in=FINAL_STATES).count()
    if valve is not None:
        t0 = valve.open()
    servers0 = _servers_cpu()

    # Rows run one after another, each until its last job ends: no open job of the task means this
    # row is done. Asked of the partial index on open jobs, each poll is a few index pages; the
    # earlier `pk IN (<2,000 ids>)` poll cost 11 ms of CPU (client and server), 5% of the machine
    # at 10 polls a second, all of it charged to the cluster_task rows.
    open_jobs = Job.objects.filter(task_name=task.name, state__in=OPEN_STATES)

    def done() -> bool:
        return not open_jobs.exists()

    wait_for(done, timeout, f"{len(ids)} cluster_task jobs", interval=0.1)
    servers_cpu_s = {k: v - servers0[k] for k, v in _servers_cpu().items()}
    states = dict(Counter(jobs.values_list("state", flat=True)))
    end = jobs.aggregate(end=Max("finished_at"))["end"].timestamp()
    owners = dict(Counter(jobs.values_list("ran_on", flat=True)))
    return {
        "t0": t0,
        "enqueue_s": enqueue_s,
        "end": end,
        "states": states,
        "ran_on": owners,
        "early": early,
        "servers_cpu_s": servers_cpu_s,
    }


def child_throughput(args: argparse.Namespace) -> dict:
    _django()
    import jobs_bench_tasks as tasks
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=10)
    procs = Procs(args.pidfile, args.logdir, os.environ[MARKER])
    _, nodes, _, pool, concurrency = VARIANTS[args.variant]
    out: dict = {"variant": args.variant, "rounds": [], "nodes": list(nodes)}
    try:
        procs.sweeper()
        for name in nodes:
            procs.worker(name, pool, concurrency, "-I", "jobs_bench_tasks")
        out["startup_s"] = wait_for(lambda: _all_active(nodes), 120, "2 active worker nodes", procs)
        log(f"throughput ({args.variant}): both worker nodes active after {out['startup_s']:.1f}s")
        worker_pids = [procs.procs[name].pid for name in nodes]
        from config.celery import app

        valve = Valve(app, [f"{name}@{platform.node()}" for name in nodes])
        # Warm-up: import paths, connections and the ring cache of both pool processes, outside the timings.
        # Idempotency keys name the configuration: every child shares the database.
        _measure_plain(tasks, client, f"{args.variant}-warmup", range(0, 50), 60)
        kinds = ["plain", "cluster_task", *(list(CLUSTER_KINDS)[1:] if args.parts else [])]
        for kind in kinds[1:]:
            _measure_cluster(tasks, f"{args.variant}-warmup", range(0, 50), 60, kind=kind)
        item = 1_000
        for rnd in range(args.rounds):
            order = kinds[rnd % len(kinds) :] + kinds[: rnd % len(kinds)]  # each kind leads a round in turn
            for kind in order:
                items = range(item, item + args.jobs)
                item += args.jobs
                pids = [pid for root in worker_pids for pid in _tree_pids(root)]
                load = os.getloadavg()[0]
                cpu0, pg0, rc0 = _cpu_seconds(pids), _pg_commits(), _redis_commands(client)
                if kind == "plain":
                    row = _measure_plain(tasks, client, f"{args.variant}-r{rnd}", items, args.timeout, valve)
                else:
                    row = _measure_cluster(tasks, f"{args.variant}-r{rnd}", items, args.timeout, valve, kind)
                pids = [pid for root in worker_pids for pid in _tree_pids(root)]
                row.update(
                    load=load,
                    kind=kind,
                    round=rnd + 1,
                    jobs=args.jobs,
                    cpu_s=_cpu_seconds(pids) - cpu0,
                    pg_xacts=_pg_commits() - pg0,
                    redis_cmds=_redis_commands(client) - rc0,
                )
                row["seconds"] = row["end"] - row["t0"]
                out["rounds"].append(row)
                rate = args.jobs / row["seconds"]
                log(
                    f"throughput ({args.variant}) round {rnd + 1} {kind}: {rate:.0f} jobs/s {row['states']}"
                    f" ({row['early']} done before the workers resumed)"
                )
        rates = _rates(out["rounds"])
        ratio = rates["cluster_task"] / rates["plain"]
        if args.profile and ratio < args.target:
            out["profile"] = _profile_round(args, tasks, procs, nodes[0], item, rates["cluster_task"])
        procs.stop_all()
        if args.profile and ratio < args.target:
            out["inprocess"] = _inprocess_costs(tasks, client)
    finally:
        procs.stop_all()
        client.close()
    return out


def _rates(rows: list[dict]) -> dict[str, float]:
    rates = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = [r for r in rows if r["kind"] == kind]
        rates[kind] = sum(r["jobs"] for r in mine) / sum(r["seconds"] for r in mine)
    return rates


def _profile_round(args: argparse.Namespace, tasks, procs: Procs, node: str, item: int, rate: float) -> dict:
    """py-spy (wall clock, idle included) on the pool process of one worker while a cluster_task round runs."""
    import shutil

    py_spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
    if not Path(py_spy).exists():
        return {"error": "py-spy is not installed (`.venv/bin/pip install py-spy`)"}
    worker = procs.procs[node].pid
    pool = [pid for pid in _tree_pids(worker) if pid != worker]
    if len(pool) != 1:
        return {"error": f"expected one pool process under {worker}, found {pool}"}
    raw = Path(args.logdir) / "py-spy.txt"
    spy = subprocess.Popen(
        [py_spy, "record", "--pid", str(pool[0]), "--idle", "--rate", "200", "--format", "raw", "--nonblocking",
         "--duration", str(args.profile_seconds), "--output", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    time.sleep(0.5)  # attach before the jobs arrive
    count = int(rate * (args.profile_seconds + 3))  # enough jobs to keep the worker busy the whole recording
    _measure_cluster(tasks, f"{args.variant}-profile", range(item, item + count), args.timeout)
    _, err = spy.communicate(timeout=args.profile_seconds + 30)
    if spy.returncode != 0 or not raw.exists():
        return {"error": f"py-spy failed ({spy.returncode}): {err.strip()[-500:]}"}
    return _summarise_stacks(raw.read_text())


# What the frame right under run_job is: one step of a job.
STEPS = (
    ("_start (", "start + idempotency claim (one query, committed without waiting for the disk)"),
    ("_claim (", "settle the claim (Python; a takeover adds a statement)"),
    ("LeaseKeeper.register (", "idempotency lease keeper: register"),
    ("_GeneratorContextManager.__enter__ (", "lock acquire (Redis script)"),
    ("_run_body (", "body + idempotency completion and job success (one query) + lock check + COMMIT"),
    ("Lease.ensure_held (", "lock `ensure_held` (Redis GET)"),
    ("_GeneratorContextManager.__exit__ (", "lock release (Redis script)"),
    ("LeaseKeeper.unregister (", "idempotency lease keeper: unregister"),
)


def _resource(frames: list[str]) -> str:
    """What the sampled thread was doing, from the innermost library frame outwards."""
    if any(f.startswith("BaseDatabaseWrapper.connect (") for f in frames):
        return "PostgreSQL: opening a new connection (connect, auth, session setup)"
    if any(f.startswith("DjangoWorkerFixup._close_database (") for f in frames):
        return "PostgreSQL: closing the connection (Celery's Django fixup)"
    for f in reversed(frames):
        if "psycopg/" in f:
            return "PostgreSQL: statements"
        if "redis/" in f:
            return "Redis round trips (redis-py)"
        if "kombu/" in f:
            return "broker messaging (kombu)"
        if f.startswith("run_job ("):
            break  # no library frame between the task and the sample: Python work of the job itself
        if "billiard/" in f:
            return "pool process: waiting for / talking to the worker's main process (billiard)"
    return "Python (Django ORM, Celery, the app)"


def _summarise_stacks(raw: str) -> dict:
    """Shares of the pool process's task thread, by step of run_job and by resource, from py-spy's raw stacks."""
    total = in_task = 0
    steps: Counter[str] = Counter()
    resources: Counter[str] = Counter()
    resources_in_task: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        if not any(f.startswith("Worker.workloop (") for f in frames):
            continue  # another thread (lock auto-renew, lease keeper, event relay): idle by design
        count = int(count_text)
        total += count
        commits = [f for f in frames if f.startswith(("BaseDatabaseWrapper.commit (", "Connection.commit ("))]
        resource = _resource(frames)
        if commits and resource.startswith("PostgreSQL: statements"):
            resource = "PostgreSQL: COMMIT"
        resources[resource] += count
        index = next((i for i, f in enumerate(frames) if f.startswith("run_job (")), None)
        if index is None:
            continue
        in_task += count
        resources_in_task[resource] += count
        below = frames[index + 1] if index + 1 < len(frames) else ""
        steps[next((label for key, label in STEPS if below.startswith(key)), "run_job itself")] += count
    return {
        "samples": total,
        "in_run_job": in_task,
        "steps": dict(steps.most_common()),
        "resources": dict(resources.most_common()),
        "resources_in_task": dict(resources_in_task.most_common()),
    }


class _RedisMonitor:
    """Counts the commands clients send to the benchmark's Redis database (MONITOR), by what they touch."""

    def __init__(self, client) -> None:
        import threading

        self.counts: Counter[str] = Counter()
        self.db = client.connection_pool.connection_kwargs.get("db", 0)
        self._monitor = client.monitor()
        self._monitor.__enter__()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(2)
        time.sleep(0.2)

    def _run(self) -> None:
        self._ready.set()
        with contextlib.suppress(Exception):  # ends when stop() closes the connection
            for event in self._monitor.listen():
                if event.get("client_type") == "lua" or int(event.get("db", -1)) != self.db:
                    continue
                command = event.get("command", "")
                if "MONITOR" in command.upper():
                    continue
                if "rmlock:" in command:
                    self.counts["lock"] += 1
                elif "asgi" in command:
                    self.counts["channel layer (dashboard events, relay thread)"] += 1
                else:
                    self.counts["other"] += 1

    def stop(self) -> dict[str, int]:
        with contextlib.suppress(Exception):
            self._monitor.connection.disconnect()
        self._thread.join(2)
        return dict(self.counts)


def _inprocess_costs(tasks, client) -> dict:
    """One job's statements and Redis commands, and in-process wall time, run eagerly (no broker, no workers)."""

    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    def make_job(item: int) -> tuple[str, dict]:
        return tasks.make_job(tasks.CLUSTER_TASK_NAME, "inproc", item)

    def run_cluster(item: int) -> float:
        job_id, kwargs = make_job(item)  # the enqueue side's INSERT, outside the timing
        started = time.perf_counter()
        tasks.cluster_noop.celery_task.apply(args=(job_id, 1), kwargs={"kwargs": kwargs}, task_id=job_id).get()
        return time.perf_counter() - started

    def run_plain(item: int) -> float:
        started = time.perf_counter()
        tasks.plain_noop.apply(kwargs={"run": "inproc", "item": item}).get()
        return time.perf_counter() - started

    for i in range(20):  # warm-up
        run_cluster(900_000 + i)
        run_plain(i)
    monitor = _RedisMonitor(client)
    with CaptureQueriesContext(connection) as captured:
        run_cluster(900_100)
        time.sleep(0.5)  # the event relay thread publishes the job's state changes to the channel layer
    redis_calls = monitor.stop()
    statements = [q["sql"] for q in captured.captured_queries]
    reset_queries()
    timings = {}
    for kind, fn in (("plain", run_plain), ("cluster_task", run_cluster)):
        timings[kind] = statistics.median(fn(910_000 + i) for i in range(200))
    # The Job INSERT of make_job is the enqueue side's statement, not the worker's.
    return {
        "statements": [s[:160] for s in statements[1:]],
        "redis_calls": redis_calls,
        "median_s": timings,
    }


def child_chaos(args: argparse.Namespace) -> dict:
    _django()
    import random

    from django.db import transaction
    from django.db.models import Count, Max, Min

    from cluster.models import Job, MembershipEvent
    from examples.ledger.models import Account, Transfer
    from examples.ledger.tasks import transfer
    from locks import get_backend

    procs = Procs(args.pidfile, args.logdir, os.environ[MARKER])
    unique = args.transfers - int(args.transfers * args.duplicate_ratio)
    duplicates = args.transfers - unique
    for name in ACCOUNTS:
        Account.objects.create(name=name, balance=OPENING)
    out: dict = {"unique": unique, "duplicates": duplicates}
    try:
        procs.sweeper()
        for name in CHAOS_NODES:
            procs.worker(name, "threads", 4)
        out["startup_s"] = wait_for(lambda: _all_active(CHAOS_NODES), 120, "3 active worker nodes", procs)
        log(f"chaos: 3 worker nodes active after {out['startup_s']:.1f}s")

        rng = random.Random(7)
        submitted: dict[str, tuple[str, str, int]] = {}
        for _ in range(unique):
            source, target = rng.sample(ACCOUNTS, 2)
            submitted[uuid.uuid4().hex] = (source, target, rng.randint(1, 50))
        calls = list(submitted) + rng.sample(list(submitted), duplicates)
        rng.shuffle(calls)
        t_start = time.time()
        for start in range(0, len(calls), 50):
            with transaction.atomic():
                for tid in calls[start : start + 50]:
                    source, target, amount = submitted[tid]
                    transfer.delay(transfer_id=tid, from_account=source, to_account=target, amount=amount)
        out["enqueue_s"] = time.time() - t_start

        wait_for(lambda: Transfer.objects.count() >= unique // 4, 120, "a quarter of the transfers", procs, 0.05)
        t_kill = time.time()
        # The victim: the node holding the most open jobs right now (a node may own few of the 8 accounts).
        open_by_node = Counter(
            Job.objects.filter(task_name=transfer.name, state__in=OPEN_STATES).values_list("owner_node", flat=True)
        )
        killed = max(CHAOS_NODES, key=lambda name: open_by_node.get(name, 0))
        procs.kill(killed)
        out["killed"] = killed
        out["applied_at_kill"] = Transfer.objects.count()
        owned = Job.objects.filter(owner_node=killed, state__in=OPEN_STATES)
        killed_jobs = dict(owned.values_list("id", "state"))
        out["open_on_killed"] = dict(Counter(killed_jobs.values()))
        log(f"chaos: SIGKILLed {killed} with {len(killed_jobs)} open jobs {out['open_on_killed']}")
        jobs_of_killed = Job.objects.filter(pk__in=list(killed_jobs))
        seen: dict[str, float] = {}
        retry_reasons: dict[str, set[str]] = {}
        restarted = False

        def open_jobs() -> int:
            return Job.objects.filter(task_name=transfer.name).exclude(state__in=FINAL_STATES).count()

        def progress() -> bool:
            now = time.time() - t_kill
            state = node_states((killed,)).get(killed)
            if state == "dead":
                seen.setdefault("dead_polled", now)
            moved = jobs_of_killed.exclude(owner_node=killed).count()
            if killed_jobs and moved == len(killed_jobs):
                seen.setdefault("handed_over_polled", now)
            if not jobs_of_killed.exclude(state__in=FINAL_STATES).exists():
                seen.setdefault("killed_jobs_done_polled", now)
            # Why handed-over jobs wait: the error of their last retry (cleared when they end).
            for job_id, error in jobs_of_killed.filter(state="retrying").values_list("id", "error"):
                retry_reasons.setdefault(error.split(":", 1)[0], set()).add(str(job_id))
            return "dead_polled" in seen

        wait_for(progress, 120, f"{killed} to be declared dead", procs, 0.05)
        procs.worker(killed, "threads", 4)
        restarted = True
        wait_for(lambda: progress() and node_states((killed,)).get(killed) == "active", 120,
                 f"{killed} active again", procs, 0.05)  # fmt: skip
        seen["back_active_polled"] = time.time() - t_kill
        wait_for(lambda: progress() and open_jobs() == 0, args.timeout, "every job to end", procs, 0.1)
        seen["all_done_polled"] = time.time() - t_kill
        out["restarted"] = restarted
    finally:
        procs.stop_all()

    events = list(
        MembershipEvent.objects.filter(node__name=killed, created_at__gte=_aware(t_kill))
        .order_by("id")
        .values_list("to_state", "created_at")
    )
    timeline = {}
    for state, at in events:
        timeline.setdefault(state, at.timestamp() - t_kill)
    killed_agg = jobs_of_killed.aggregate(first=Min("finished_at"), last=Max("finished_at"))
    running_at_kill = jobs_of_killed.filter(pk__in=[k for k, s in killed_jobs.items() if s == "running"])
    running_agg = running_at_kill.aggregate(last=Max("finished_at"))
    queued_agg = jobs_of_killed.exclude(pk__in=running_at_kill.values("pk")).aggregate(last=Max("finished_at"))
    # Repeats of a transfer that was running at the kill wait for its idempotency claim like the job itself.
    same_key = (
        Job.objects.filter(
            task_name=transfer.name, idempotency_key__in=list(running_at_kill.values_list("idempotency_key", flat=True))
        )
        .exclude(pk__in=running_at_kill.values("pk"))
        .aggregate(n=Count("pk"), last=Max("finished_at"))
    )
    all_last = Job.objects.filter(task_name=transfer.name).aggregate(last=Max("finished_at"))["last"]
    out["timeline"] = {
        "events": timeline,
        "polled": seen,
        "killed_first_done": _since(killed_agg["first"], t_kill),
        "killed_last_done": _since(killed_agg["last"], t_kill),
        "killed_running_last_done": _since(running_agg["last"], t_kill),
        "killed_queued_last_done": _since(queued_agg["last"], t_kill),
        "running_attempts": sorted(running_at_kill.values_list("attempts", flat=True)),
        "same_key_count": same_key["n"],
        "same_key_last_done": _since(same_key["last"], t_kill),
        "retry_reasons": {reason: len(ids) for reason, ids in sorted(retry_reasons.items())},
        "all_last_done": _since(all_last, t_kill),
        "total_s": all_last.timestamp() - t_start if all_last else None,
    }
    out["killed_jobs"] = {
        "count": len(killed_jobs),
        "states_after": dict(Counter(jobs_of_killed.values_list("state", flat=True))),
        "ran_on_after": dict(Counter(jobs_of_killed.values_list("ran_on", flat=True))),
        "max_dispatch": jobs_of_killed.aggregate(m=Max("dispatch"))["m"],
    }

    applied = list(Transfer.objects.values_list("transfer_id", "amount"))
    applied_ids = Counter(tid for tid, _ in applied)
    expected = dict.fromkeys(ACCOUNTS, OPENING)
    for source, target, amount in submitted.values():
        expected[source] -= amount
        expected[target] += amount
    balances = dict(Account.objects.values_list("name", "balance"))
    jobs = Counter(Job.objects.filter(task_name=transfer.name).values_list("state", flat=True))
    succeeded_keys = Counter(
        Job.objects.filter(task_name=transfer.name, state="succeeded").values_list("idempotency_key", flat=True)
    )
    out["correctness"] = {
        "calls": len(calls),
        "job_rows": sum(jobs.values()),
        "job_states": dict(jobs),
        "transfer_rows": len(applied),
        "transfers_applied_twice": sum(n - 1 for n in applied_ids.values() if n > 1),
        "keys_succeeded_twice": sum(n - 1 for n in succeeded_keys.values() if n > 1),
        "transfers_missing": len(set(submitted) - set(applied_ids)),
        "ledger_balances": balances == expected,
        "ledger_off_by": sum(abs(balances.get(a, 0) - expected[a]) for a in ACCOUNTS),
        "jobs_lost": len(calls) - jobs.get("succeeded", 0) - jobs.get("duplicate", 0),
        "locks_held": [i.name for i in get_backend("default").held() if i.name.startswith("account:")],
    }
    return out


def _aware(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)


def _since(at: datetime.datetime | None, t0: float) -> float | None:
    return None if at is None else at.timestamp() - t0


# --- orchestration ----------------------------------------------------------------------------------------


def _run_child(
    mode: str, args: argparse.Namespace, env: dict[str, str], pidfile: Path, logdir: Path, variant: str = "configured"
) -> dict:
    cmd = [PYTHON, SCRIPT, "--child", mode, "--pidfile", str(pidfile), "--logdir", str(logdir),
           "--jobs", str(args.jobs), "--rounds", str(args.rounds), "--timeout", str(args.timeout),
           "--target", str(args.target), "--profile-seconds", str(args.profile_seconds),
           "--transfers", str(args.transfers), "--duplicate-ratio", str(args.duplicate_ratio)]  # fmt: skip
    cmd += ["--variant", variant]
    if args.parts:
        cmd.append("--parts")
    if not args.profile or variant != "configured":
        cmd.append("--no-profile")
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    with open(pidfile, "a") as f:
        f.write(f"{child.pid}\n")
    try:
        stdout, _ = child.communicate(timeout=args.child_timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)  # its finally stops its workers
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=40)
        raise
    if child.returncode != 0:
        raise RuntimeError(f"the {mode} child failed ({child.returncode}); logs in {logdir}")
    return json.loads(stdout.strip().splitlines()[-1])


def _kill_recorded(pidfile: Path, run_token: str) -> None:
    if not pidfile.exists():
        return
    for line in pidfile.read_text().split():
        _stop_group(int(line), run_token, grace=10)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def report_throughput(args: argparse.Namespace, variants: dict[str, dict]) -> list[str]:
    lines = [
        "## 1. Throughput: `cluster_task` (key + lock + idempotency) vs plain `shared_task(acks_late=True)`",
        "",
        "Per configuration: 2 worker nodes ("
        + "; ".join(
            f"{name}: each `celery worker --pool {v[3]} --concurrency {v[4]}`"
            for name, v in VARIANTS.items()
            if name in variants
        )
        + "; 2 worker processes: the prefork pool's, or the two workers' own with threads), the sweeper running"
        " and both nodes active in the ring (cluster jobs are routed to their"
        f" key's owner); {args.jobs:,} jobs per row enqueued in full while the workers consume nothing"
        f" (remote control `cancel_consumer`; cluster_task: {ENQUEUE_BATCH} per transaction, as an app would),"
        " then the workers resume (`add_consumer`): time from the resume to the last job finished, so both rows"
        " measure the workers, not the producer. Both tasks build and return a small dict; the plain one touches"
        " no database. Lock backend: Redis.",
        "",
        "| configuration | round | task | jobs | load avg | enqueue s (paused) | done before resume "
        "| resume → last done s | jobs/s | worker CPU ms/job | PG server CPU ms/job | Redis server CPU ms/job "
        "| machine CPU ms/job | PG xacts/job | Redis cmds/job | outcome |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- |",
    ]
    for name, data in variants.items():
        for r in data["rounds"]:
            outcome = _counts(r["states"])
            if r.get("ran_on"):
                outcome += f" (ran on {_counts(r['ran_on'])})"
            lines.append(
                f"| {name} | {r['round']} | {r['kind']} | {r['jobs']:,} | {r['load']:.1f} | {r['enqueue_s']:.2f} "
                f"| {r.get('early', 0)} | {r['seconds']:.2f} "
                f"| {r['jobs'] / r['seconds']:,.0f} | {1000 * r['cpu_s'] / r['jobs']:.2f} "
                f"| {1000 * r['servers_cpu_s']['postgres'] / r['jobs']:.2f} "
                f"| {1000 * r['servers_cpu_s']['redis-server'] / r['jobs']:.2f} "
                f"| {1000 * r['servers_cpu_s']['machine'] / r['jobs']:.2f} "
                f"| {r['pg_xacts'] / r['jobs']:.2f} | {r['redis_cmds'] / r['jobs']:.1f} | {outcome} |"
            )
    lines += [
        "",
        "| configuration | task | jobs/s (all rounds) | ratio to plain | worker CPU ms/job | CPU ratio "
        "| machine CPU ms/job | machine CPU ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    verdicts: list[str] = []
    floors: dict[str, list[str]] = {}
    for name, data in variants.items():
        rows = data["rounds"]
        rates = _rates(rows)
        ratio = rates["cluster_task"] / rates["plain"]
        cpu, machine = {}, {}
        for k in rates:
            mine = [r for r in rows if r["kind"] == k]
            jobs = sum(r["jobs"] for r in mine)
            cpu[k] = sum(r["cpu_s"] for r in mine) / jobs
            machine[k] = sum(r["servers_cpu_s"]["machine"] for r in mine) / jobs
        lines += [
            f"| {name} | plain | {rates['plain']:,.0f} | 1.00 | {1000 * cpu['plain']:.2f} | 1.0 "
            f"| {1000 * machine['plain']:.2f} | 1.0 |",
            f"| {name} | `cluster_task` | {rates['cluster_task']:,.0f} | **{ratio:.2f}** "
            f"| {1000 * cpu['cluster_task']:.2f} | {cpu['cluster_task'] / cpu['plain']:.1f} "
            f"| {1000 * machine['cluster_task']:.2f} | {machine['cluster_task'] / machine['plain']:.1f} |",
        ]
        for k in (k for k in CLUSTER_KINDS if k in rates and k != "cluster_task"):
            lines.append(
                f"| {name} | `cluster_task`, {k} | {rates[k]:,.0f} | {rates[k] / rates['plain']:.2f} "
                f"| {1000 * cpu[k]:.2f} | {cpu[k] / cpu['plain']:.1f} "
                f"| {1000 * machine[k]:.2f} | {machine[k] / machine['plain']:.1f} |"
            )
        verdict = "meets" if ratio >= args.target else "misses"
        verdicts.append(f"{name} ({VARIANTS[name][0]}): **{ratio:.2f}×**, {verdict} the target of ≥ {args.target}×")
        for k in (k for k in FLOOR_KINDS if k in rates):
            floors.setdefault(k, []).append(
                f"{name}: {rates[k] / rates['plain']:.2f}× (machine CPU ratio {machine[k] / machine['plain']:.1f},"
                f" so at most {machine['plain'] / machine[k]:.2f}× CPU-bound)"
            )
    lines += [
        "",
        "`cluster_task` rate as a share of the plain task's: " + "; ".join(verdicts) + ".",
        "",
    ]
    for k, found in floors.items():
        lines += [f"{FLOOR_KINDS[k]}: " + "; ".join(found) + ".", ""]
    if floors:
        lines += ["That is the most any wrapper sending this server work can reach on this machine.", ""]
    lines += [
        "Load avg: the machine's 1-minute load average when the row started (2 CPUs, shared with other work)."
        " Done before resume: jobs that finished while the workers were paused (must be 0 for a fair row)."
        " Worker CPU counts the worker processes (main + pool), not PostgreSQL's or Redis's; the server columns"
        " count every PostgreSQL and Redis server process of the machine (other work on it included), and"
        " machine CPU every process of the machine (/proc/stat), all three from the resume to the last job done:"
        " with nothing else running, 1 / machine CPU ratio is the best throughput ratio a CPU-bound run can"
        " reach. PG xacts/job: the"
        " benchmark database's commits + rollbacks (enqueue side included; servers report them up to a second"
        " late, so ± a little). Redis cmds/job: every command the Redis server ran for any client of the"
        " database (broker, results, locks, heartbeats, inside Lua scripts too).",
    ]
    for name, data in variants.items():
        if "profile" in data:
            lines += ["", *report_profile(name, data["profile"])]
        if "inprocess" in data:
            lines += ["", *report_inprocess(data["inprocess"])]
    return lines


def report_profile(variant: str, p: dict) -> list[str]:
    if "error" in p:
        return ["### Profile", "", f"Not profiled: {p['error']}"]
    total = p["samples"] or 1
    lines = [
        f"### Where a worker's time goes ({variant}; py-spy on one pool process, wall clock, idle included)",
        "",
        f"{p['samples']:,} samples of the thread that runs tasks, during an extra `cluster_task` round;"
        f" {100 * p['in_run_job'] / total:.0f}% inside `run_job`, the rest in Celery around it (receiving the"
        " task from the main process, the Django fixup's connection handling).",
        "",
        "| step of `run_job` | share of all samples |",
        "| --- | ---: |",
    ]
    lines += [f"| {step} | {100 * n / total:.1f}% |" for step, n in p["steps"].items()]
    lines += ["", "| what the thread was doing | all samples | inside `run_job` |", "| --- | ---: | ---: |"]
    for resource, n in p["resources"].items():
        inside = p["resources_in_task"].get(resource, 0)
        lines.append(f"| {resource} | {100 * n / total:.1f}% | {100 * inside / total:.1f}% |")
    return lines


def report_inprocess(p: dict) -> list[str]:
    med = p["median_s"]
    calls = p["redis_calls"]
    lines = [
        "### One job in-process (`task.apply()` eagerly: no broker, no reconnects, workers stopped)",
        "",
        f"Median wall time of 200 jobs each: plain {1e6 * med['plain']:.0f} µs, `cluster_task`"
        f" {1e6 * med['cluster_task']:.0f} µs. One `cluster_task` job sends these to PostgreSQL (as Django logs"
        " them, one line per round trip; the first, the start and the claim together, commits on its own) and "
        f"{sum(calls.values())} commands to Redis ({_counts(calls)}):",
        "",
    ]
    lines += [f"{i}. `{sql}`" for i, sql in enumerate(p["statements"], 1)]
    return lines


def _counts(counter: dict) -> str:
    return ", ".join(f"{key or '(none)'} {n}" for key, n in sorted(counter.items())) or "none"


def report_chaos(args: argparse.Namespace, data: dict) -> list[str]:
    c, t, k = data["correctness"], data["timeline"], data["killed_jobs"]
    ev, polled = t["events"], t["polled"]
    running_attempts = ", ".join(str(n) for n in t["running_attempts"]) or "none"
    lines = [
        "## 2. Chaos: the ledger with one worker SIGKILLed mid-run",
        "",
        f"3 worker nodes (`celery worker --pool threads --concurrency 4` each), sweeper with the default"
        f" liveness policy; {c['calls']} transfer calls ({data['unique']} transfers + {data['duplicates']}"
        f" repeats of earlier ones, {int(100 * args.duplicate_ratio)}%) over {len(ACCOUNTS)} accounts,"
        f" enqueued in {data['enqueue_s']:.1f} s. `{data['killed']}` was SIGKILLed (its process group) when"
        f" {data['applied_at_kill']} transfers were applied, holding {k['count']} open jobs"
        f" ({', '.join(f'{n} {s}' for s, n in sorted(data['open_on_killed'].items())) or 'none'}),"
        " restarted as soon as it was declared dead.",
        "",
        "| check | result | must be |",
        "| --- | ---: | ---: |",
        f"| duplicates applied (transfer rows beyond one per transfer) | {c['transfers_applied_twice']} | 0 |",
        f"| idempotency keys that succeeded twice | {c['keys_succeeded_twice']} | 0 |",
        f"| ledger balances to the expected totals | {'yes' if c['ledger_balances'] else 'NO'}"
        f" (off by {c['ledger_off_by']}) | yes (0) |",
        f"| jobs lost (calls not ended succeeded or duplicate) | {c['jobs_lost']} | 0 |",
        f"| transfers never applied | {c['transfers_missing']} | 0 |",
        f"| job states | {', '.join(f'{s} {n}' for s, n in sorted(c['job_states'].items()))} |"
        f" succeeded {data['unique']}, duplicate {data['duplicates']} |",
        f"| account locks left held | {len(c['locks_held'])} | 0 |",
        "",
        "| after the SIGKILL | seconds |",
        "| --- | ---: |",
        f"| node marked suspect | {_fmt(ev.get('suspect'))} |",
        f"| node marked dead | {_fmt(ev.get('dead'))} |",
        f"| its {k['count']} open jobs handed over (same transaction as the dead verdict; seen by polling at)"
        f" | {_fmt(polled.get('handed_over_polled'))} |",
        f"| first handed-over job finished on its new owner | {_fmt(t['killed_first_done'])} |",
        f"| last handed-over job finished (recovery of the killed node's work) | **{_fmt(t['killed_last_done'])}** |",
        f"| … of those, the ones queued or retrying at the kill, last done | {_fmt(t['killed_queued_last_done'])} |",
        f"| … of those, the ones running at the kill, last finished (attempts: {running_attempts})"
        f" | {_fmt(t['killed_running_last_done'])} |",
        f"| … repeats of a transfer that was running at the kill ({t['same_key_count']} job(s)), last finished"
        f" | {_fmt(t['same_key_last_done'])} |",
        f"| restarted node active again (restarted at the dead verdict) | {_fmt(ev.get('active'))} |",
        f"| every job of the run finished | {_fmt(t['all_last_done'])} |",
        "",
        f"Handed-over jobs ended {_counts(k['states_after'])}, ran on {_counts(k['ran_on_after'])}"
        f" (highest dispatch number {k['max_dispatch']}); retries seen among them, by the error that caused"
        f" them: {_counts(t['retry_reasons'])} (jobs). Whole scenario: {_fmt(t['total_s'])} s from the first"
        " enqueue to the last job finished.",
    ]
    return lines


def report(args: argparse.Namespace, versions: dict, throughput: dict[str, dict], chaos: dict | None,
           elapsed: float, load: tuple[float, float]) -> str:  # fmt: skip
    lines = [
        "# `cluster_task` jobs on Redis + PostgreSQL: throughput and chaos",
        "",
        f"`.venv/bin/python benchmarks/bench_jobs.py --jobs {args.jobs} --rounds {args.rounds}"
        f" --variants {args.variants}{' --parts' if args.parts else ''}"
        " --redis-url redis://127.0.0.1:6379/<db> --database <name>` — "
        f"PostgreSQL {versions['postgres']}, Redis {versions['redis']}, Celery {versions['celery']}, "
        f"Django {versions['django']}, Python {platform.python_version()}; {os.cpu_count()} CPUs, load average "
        f"{load[0]:.1f} at the start and {load[1]:.1f} at the end (the machine is shared). "
        f"Run took {elapsed:.0f} s.",
        "",
    ]
    if throughput:
        lines += [*report_throughput(args, throughput), ""]
    if chaos is not None:
        lines += [*report_chaos(args, chaos), ""]
    return "\n".join(lines)


def _versions() -> dict:
    from importlib.metadata import version

    return {"celery": version("celery"), "django": version("django")}


def main_orchestrate(args: argparse.Namespace) -> int:
    _raise_on_sigterm()
    started = time.monotonic()
    load0 = os.getloadavg()[0]
    run_token = uuid.uuid4().hex
    cleanup = Cleanup()
    work = Path(tempfile.mkdtemp(prefix="ringmaster-bench-jobs-"))
    pidfile = work / "pids"
    database_url = _database_url(args.admin_url, args.database)
    env = _env(database_url, args.redis_url, run_token, RINGMASTER_VAR_DIR=str(work / "var"))
    versions = _versions()
    throughput: dict[str, dict] = {}
    chaos = None
    try:
        cleanup.push("stop processes", lambda: _kill_recorded(pidfile, run_token))
        versions["redis"] = _flush_redis(args.redis_url)
        cleanup.push("flush redis", lambda: _flush_redis(args.redis_url))
        versions["postgres"] = _create_database(args.admin_url, args.database)
        cleanup.push("drop database", lambda: _drop_database(args.admin_url, args.database))
        log(f"database {args.database} created; migrating")
        done = subprocess.run([PYTHON, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{done.stderr[-3000:]}")
        for variant in [] if args.skip_throughput else args.variants.split(","):
            extra = VARIANTS[variant][2]
            child_env = dict(env)
            if extra:
                (work / "bench_jobs_settings.py").write_text(SETTINGS_TEMPLATE.format(extra=extra))
                child_env.update(DJANGO_SETTINGS_MODULE="bench_jobs_settings", PYTHONPATH=f"{BENCH_DIR}:{work}")
            _flush_redis(args.redis_url)
            throughput[variant] = _run_child(
                "throughput", args, child_env, pidfile, work / f"throughput-{variant}", variant=variant
            )
            _kill_recorded(pidfile, run_token)
        if not args.skip_chaos:
            _flush_redis(args.redis_url)
            chaos = _run_child("chaos", args, env, pidfile, work / "chaos")
            _kill_recorded(pidfile, run_token)
    except BaseException:
        log(f"failed; worker logs kept in {work}")
        args.keep_logs = True
        raise
    finally:
        cleanup.run()
        if not args.keep_logs:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    text = report(args, versions, throughput, chaos, time.monotonic() - started, (load0, os.getloadavg()[0]))
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


def main_child(args: argparse.Namespace) -> int:
    _raise_on_sigterm()
    Path(args.logdir).mkdir(parents=True, exist_ok=True)
    result = child_throughput(args) if args.child == "throughput" else child_chaos(args)
    print(json.dumps(result, default=str))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per throughput row (default 2000)")
    parser.add_argument("--rounds", type=int, default=1, help="throughput rounds, kinds alternating (default 1)")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"throughput configurations (default {','.join(VARIANTS)})"
    )
    parser.add_argument("--target", type=float, default=0.5, help="cluster_task/plain ratio to meet (default 0.5)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="never profile")
    parser.add_argument(
        "--parts",
        action="store_true",
        help="also rows of the cluster_task without its lock, with its routing key only (what each costs), and of"
        " its server work sent by a plain task, in full, lean and in one transaction (the floor of any wrapper)",
    )
    parser.add_argument("--profile-seconds", type=int, default=8, help="py-spy recording time (default 8)")
    parser.add_argument("--transfers", type=int, default=500, help="chaos: transfer calls (default 500)")
    parser.add_argument("--duplicate-ratio", type=float, default=0.2, help="chaos: share of repeats (0.2)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for one batch of jobs")
    parser.add_argument("--child-timeout", type=float, default=600.0, help=argparse.SUPPRESS)
    parser.add_argument("--admin-url", default=os.environ.get("RINGMASTER_BENCH_ADMIN_URL",
                        "postgres://postgres@127.0.0.1:5432/postgres"), help="PostgreSQL superuser URL")  # fmt: skip
    parser.add_argument("--database", default="ringmaster_bench_jobs", help="database created and dropped")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11", help="Redis database, FLUSHED")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-chaos", action="store_true")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs")
    parser.add_argument("--output", help="also write the report to this file")
    parser.add_argument("--child", choices=["throughput", "chaos"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=list(VARIANTS), default="configured", help=argparse.SUPPRESS)
    parser.add_argument("--pidfile", help=argparse.SUPPRESS)
    parser.add_argument("--logdir", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return main_child(args) if args.child else main_orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
