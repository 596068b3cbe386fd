"""``manage.py sweeper``: run the failure detector's sweeper (one acts at a time, under a lock)."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand

from monitoring.sweeper import run_sweeper


class Command(BaseCommand):
    help = "Sweep node liveness forever; several may run, one acts (the holder of the sweeper lock)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--lock-backend", default="default", help="alias in settings.LOCKS")

    def handle(self, *args, lock_backend: str, **options) -> None:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.stdout.write("sweeper started")
        run_sweeper(stop=stop, lock_backend=lock_backend)
        self.stdout.write("sweeper stopped")
