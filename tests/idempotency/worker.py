"""A separate process for the race and crash tests: ``python -m tests.idempotency.worker COMMAND NAME``.

It sets Django up against the test database named in ``RM_TEST_DB_NAME`` and calls one of the
idempotent functions below, printing one JSON line about the outcome.
"""

from __future__ import annotations

import json
import os
import sys
import time

from idempotency import idempotent


@idempotent(key="race:{name}", scope="test:race_effect")
def race_effect(name: str) -> dict:
    from django.contrib.auth.models import Group

    Group.objects.create(name=f"race:{name}:{os.getpid()}")
    time.sleep(0.5)
    return {"pid": os.getpid()}


@idempotent(key="crash:{name}", scope="test:crash_effect", lease_seconds=1.0, wait=10)
def crash_effect(name: str) -> dict:
    from django.contrib.auth.models import Group

    Group.objects.create(name=f"crash:{name}:{os.getpid()}")
    print(json.dumps({"effect": os.getpid()}), flush=True)
    # The parent kills us here: after the side effect, before the transaction commits.
    time.sleep(float(os.environ.get("RM_CRASH_PAUSE", "0")))
    return {"pid": os.getpid()}


def main(command: str, name: str) -> None:
    from idempotency import IdempotencyInProgress

    if command == "race":
        start_at = float(os.environ["RM_START_AT"])
        time.sleep(max(0.0, start_at - time.time()))
        try:
            result = race_effect(name)
        except IdempotencyInProgress:
            print(json.dumps({"outcome": "in_progress"}), flush=True)
            return
        outcome = "ran" if result["pid"] == os.getpid() else "replayed"
        print(json.dumps({"outcome": outcome, "pid": result["pid"]}), flush=True)
    elif command == "crash":
        print(json.dumps({"result": crash_effect(name)}), flush=True)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = os.environ["RM_TEST_DB_NAME"]
    django.setup()
    main(sys.argv[1], sys.argv[2])
