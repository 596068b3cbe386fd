"""What each ``cluster_task`` option costs the worker, in instructions: a repeatable, load-independent count.

Run by hand under callgrind, against a migrated database and Redis of your own (nothing is dropped;
Job rows with ``owner_node='inproc'`` are added)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> REDIS_URL=redis://127.0.0.1:6379/<n> \\
    DJANGO_DEBUG=0 DJANGO_SECRET_KEY=<any> DJANGO_ALLOWED_HOSTS=localhost \\
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null \\
    .venv/bin/python benchmarks/jobs_instructions.py all 100

It runs ``KIND`` (plain, key, key+idem, key+lock, all) ``N`` times through Celery's eager
``apply()`` and has callgrind count only those runs (``callgrind_control -i on/off`` around them):
"Collected" divided by N is the instructions per job of the worker thread, in user space
(``DJANGO_DEBUG=0`` as in a worker: with debug on, Django's query log adds to every statement).
Wall-clock benchmarks on a shared machine move with its load; this count does not
(benchmarks/results/jobs.md).
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
from jobs_bench_tasks import make_job  # noqa: E402

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


def callgrind(switch: str) -> None:
    subprocess.run(["callgrind_control", "-i", switch, str(os.getpid())], stdout=subprocess.DEVNULL, check=False)


def main(kind: str, count: int) -> None:
    base = time.time_ns() // 1000
    if kind == "plain":
        runs = [lambda i=i: PLAIN.apply(kwargs={"run": "instr", "item": i}) for i in range(count + 20)]
    else:
        task = KINDS[kind]
        jobs = [make_job(task.name, "instr", base + i) for i in range(count + 20)]
        runs = [
            lambda j=j, k=k: task.celery_task.apply(args=(j, 1), kwargs={"kwargs": k}, task_id=j) for j, k in jobs
        ]
    for run in runs[:20]:  # warm-up: imports, connections, caches
        assert run().successful()
    callgrind("on")
    for run in runs[20:]:
        assert run().successful()
    callgrind("off")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
