"""Code that runs in child processes (spawned) for the multi-process lock tests and the benchmark."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

ADVISORY_ALIAS = "db_advisory"


def add_test_lock_aliases() -> None:
    """On PostgreSQL, also test the database backend's advisory mode, as the alias ``db_advisory``.

    The project's settings do not define it (the mode is opt-in); the test processes add it, the
    parent at collection (tests/locks/conftest.py) and every spawned child here.
    """
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        settings.LOCKS.setdefault(
            ADVISORY_ALIAS, {"BACKEND": "locks.backends.db.DatabaseLockBackend", "OPTIONS": {"MODE": "advisory"}}
        )


def setup_django(db_name: str) -> None:
    """Set Django up in a spawned child on the parent's database (the test database, not the configured one)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django
    from django.conf import settings

    django.setup()
    settings.DATABASES["default"]["NAME"] = db_name
    add_test_lock_aliases()


def quiet_lock_signals() -> None:
    """Disconnect the listeners of lock_acquired/lock_released in this child process.

    The contention test measures the locks; monitoring's dashboard relay publishes every grant
    and release to the channel layer synchronously (milliseconds each), which would make the
    2,400 sections of the test take many times longer without testing anything more.
    """
    from locks.signals import lock_acquired, lock_released

    for signal in (lock_acquired, lock_released):
        with signal.lock:
            signal.receivers.clear()
            signal.sender_receivers_cache.clear()


def contend(alias: str, name: str, rounds: int, counter: str, out: str, db_name: str, barrier) -> None:
    """``rounds`` critical sections doing a non-atomic read-modify-write of the file ``counter``."""
    setup_django(db_name)
    quiet_lock_signals()
    from locks import lock

    path = Path(counter)
    sections, waits = [], []
    barrier.wait(timeout=60)
    for _ in range(rounds):
        asked = time.monotonic()
        with lock(name, ttl=30, timeout=60, backend=alias):
            entered = time.monotonic()
            value = int(path.read_text() or "0")
            path.write_text(str(value + 1))
            left = time.monotonic()
        sections.append((entered, left))
        waits.append(entered - asked)
    Path(out).write_text(json.dumps({"sections": sections, "waits": waits, "finished": time.monotonic()}))


def hold(alias: str, name: str, ttl: float, out: str, db_name: str) -> None:
    """Take ``name`` with a ``ttl`` lease, say so in ``out``, then wait to be killed."""
    setup_django(db_name)
    from locks import get_backend

    lease = get_backend(alias).acquire(name, ttl=ttl, timeout=10)
    Path(out + ".tmp").write_text(json.dumps({"token": lease.token, "acquired": time.monotonic()}))
    os.replace(out + ".tmp", out)
    time.sleep(600)
