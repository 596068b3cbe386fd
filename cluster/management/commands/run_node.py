"""``manage.py run_node NAME``: run one Celery worker node and keep it running (the run command uses it).

It restarts the worker when it exits, unless ``manage.py chaos --kill NAME`` stopped it on purpose;
``chaos --restart NAME`` brings it back. SIGTERM/SIGINT stop the worker gracefully (it drains and
leaves the cluster) and then this supervisor.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

from django.core.management.base import BaseCommand, CommandError

from cluster.chaos import control_state
from cluster.models import NODE_NAME_RE


class Command(BaseCommand):
    help = "Run one worker node under a small supervisor that chaos --kill/--restart can steer."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument("--concurrency", type=int, default=2)
        parser.add_argument("--pool", default="threads", choices=["threads", "prefork", "solo"])

    def handle(self, *args, name: str, concurrency: int, pool: str, **options) -> None:
        if not re.match(NODE_NAME_RE, name):
            raise CommandError(f"name must match {NODE_NAME_RE}, got {name!r}")
        stop = threading.Event()
        current: list[subprocess.Popen] = []

        def on_signal(*_):
            stop.set()
            for proc in current:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGCONT)  # a paused worker cannot shut down
                    proc.terminate()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--hostname",
            f"{name}@%h",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
        ]
        # A worker's threads live long, so its database connections can too (unlike ASGI requests').
        env = {"DJANGO_CONN_MAX_AGE": "60", **os.environ, "RINGMASTER_NODE_NAME": name}
        while not stop.is_set():
            if control_state(name) == "stopped":
                stop.wait(0.5)
                continue
            # An argument list (no shell) of our own interpreter and a validated node name.
            proc = subprocess.Popen(command, env=env, start_new_session=True)  # noqa: S603
            current[:] = [proc]
            proc.wait()
            if not stop.is_set():
                self.stderr.write(
                    f"worker node {name} exited ({proc.returncode}); "
                    f"{'held down by chaos --kill' if control_state(name) == 'stopped' else 'restarting'}"
                )
                time.sleep(1)
