"""What each ``cluster_task`` option costs the worker, in instructions: a repeatable, load-independent count.

Run by hand under callgrind, against a migrated database and Redis of your own (nothing is dropped;
Job rows with ``owner_node='inproc'`` are added)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> REDIS_URL=redis://127.0.0.1:6379/<n> \\
    DJANGO_DEBUG=0 DJANGO_SECRET_KEY=<any> DJANGO_ALLOWED_HOSTS=localhost \\
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null \\
    .venv/bin/python benchmarks/jobs_instructions.py all 100

It runs ``KIND`` (plain, key, key+idem, key+lock, all, floor, floor-lean, floor-1tx) ``N`` times through Celery's eager
``apply()`` and has callgrind count only those runs (``callgrind_control -i on/off`` around them):
"Collected" divided by N is the instructions per job of the worker thread, in user space
(``DJANGO_DEBUG=0`` as in a worker: with debug on, Django's query log adds to every statement).
Wall-clock benchmarks on a shared machine move with its load; this count does not
(benchmarks/results/jobs.md).

Without valgrind, ``jobs_instructions.py cpu [BLOCKS]`` prints a table of CPU time instead: per
option set, the client's (``os.times()``) and the PostgreSQL backend's (its ``/proc`` entry) CPU
per job, and wall time, over ``BLOCKS`` (default 8) blocks of 150 jobs, the option sets taking
turns so a drifting machine load hits them alike. These move with the machine's speed; compare
the rows of one run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

import logging  # noqa: E402

from celery import shared_task  # noqa: E402
from jobs_bench_tasks import floor, floor_connection, floor_lean, floor_one_tx, make_job  # noqa: E402

from cluster.tasks import cluster_task  # noqa: E402

logging.disable(logging.INFO)


def body(ctx, *, run: str, item: int) -> dict:
    return {"item": item}


def plain_body(*, run: str, item: int) -> dict:
    return {"item": item}


KINDS = {
    "key": cluster_task(key="bench:{item}", name="instr.key")(body),
    "key+idem": cluster_task(key="bench:{item}", idempotency_key="bench:{run}:{item}", name="instr.idem")(body),
    "key+lock": cluster_task(key="bench:{item}", lock="bench:{item}", name="instr.lock")(body),
    "all": cluster_task(
        key="bench:{item}", lock="bench:{item}", idempotency_key="bench:{run}:{item}", name="instr.all"
    )(body),
}
PLAIN = shared_task(name="instr.plain", acks_late=True)(plain_body)
# The server work of "all" sent by a plain task, the same less the running write and lock check, and
# that in one transaction (benchmarks/jobs_bench_tasks.py): what is left without cluster_task's Python.
FLOORS = {"floor": floor, "floor-lean": floor_lean, "floor-1tx": floor_one_tx}


def callgrind(switch: str) -> None:
    subprocess.run(["callgrind_control", "-i", switch, str(os.getpid())], stdout=subprocess.DEVNULL, check=False)


def _runs(kind: str, count: int, run: str) -> list:
    """``count`` jobs of ``kind`` ready to run eagerly (cluster jobs get their Job rows now)."""
    if kind == "plain":
        return [lambda i=i: PLAIN.apply(kwargs={"run": run, "item": i}) for i in range(count)]
    base = time.time_ns() // 1000
    if kind in FLOORS:
        task = FLOORS[kind]
        jobs = [make_job(task.name, run, base + i) for i in range(count)]
        return [lambda j=j, k=k: task.apply(args=(j, 1), kwargs=k, task_id=j) for j, k in jobs]
    task = KINDS[kind]
    jobs = [make_job(task.name, run, base + i) for i in range(count)]
    return [lambda j=j, k=k: task.celery_task.apply(args=(j, 1), kwargs={"kwargs": k}, task_id=j) for j, k in jobs]


def main(kind: str, count: int) -> None:
    runs = _runs(kind, count + 20, "instr")
    for run in runs[:20]:  # warm-up: imports, connections, caches
        assert run().successful()
    callgrind("on")
    for run in runs[20:]:
        assert run().successful()
    callgrind("off")


def _backend_cpu(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_table(blocks: int, size: int = 150) -> None:
    """Client and PostgreSQL backend CPU per job of each option set, in turns (the database must be local)."""
    from django.db import connection

    kinds = ["plain", *KINDS, *FLOORS]
    totals = {kind: [0.0, 0.0, 0.0, 0] for kind in kinds}
    for kind in kinds:  # warm-up: imports, connections, caches
        for run in _runs(kind, 20, "cpu"):
            assert run().successful()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    # The floor sends its statements on a connection of its own: both backends are counted, every row.
    pids = (pid, floor_connection().info.backend_pid)
    for block in range(blocks):
        for kind in kinds[block % len(kinds) :] + kinds[: block % len(kinds)]:
            runs = _runs(kind, size, "cpu")
            t0, w0, b0 = os.times(), time.perf_counter(), sum(map(_backend_cpu, pids))
            for run in runs:
                run()
            t1, w1, b1 = os.times(), time.perf_counter(), sum(map(_backend_cpu, pids))
            total = totals[kind]
            total[0] += t1.user + t1.system - t0.user - t0.system
            total[1] += b1 - b0
            total[2] += w1 - w0
            total[3] += size
    print("| options | client CPU µs/job | PostgreSQL backend CPU µs/job | wall µs/job |")
    print("| --- | ---: | ---: | ---: |")
    for kind, (client, backend, wall, jobs) in totals.items():
        print(f"| {kind} | {client / jobs * 1e6:,.0f} | {backend / jobs * 1e6:,.0f} | {wall / jobs * 1e6:,.0f} |")


if __name__ == "__main__":
    if sys.argv[1] == "cpu":
        cpu_table(int(sys.argv[2]) if len(sys.argv) > 2 else 8)
    else:
        main(sys.argv[1], int(sys.argv[2]))
