"""Real processes for end-to-end tests: Celery worker nodes, stopped for sure afterwards."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_worker(name: str, env: dict[str, str], *, pool: str = "solo", concurrency: int = 1) -> subprocess.Popen:
    """A Celery worker joined to the cluster as node ``name``, in its own process group (so a test
    can SIGKILL or SIGSTOP the whole worker with os.killpg)."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "config", "worker",
            "--pool", pool, "--concurrency", str(concurrency), "--hostname", f"{name}@%h",
            "--loglevel", "WARNING", "--without-mingle", "--without-gossip", "--without-heartbeat",
        ],
        cwd=ROOT,
        env={**env, "RINGMASTER_NODE_NAME": name},
        start_new_session=True,
    )  # fmt: skip


def stop(*procs: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate gracefully, then kill what is left."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def worker(name: str, env: dict[str, str], **options) -> Iterator[subprocess.Popen]:
    proc = start_worker(name, env, **options)
    try:
        yield proc
    finally:
        stop(proc)
