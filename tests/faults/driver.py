"""A client of the deployment under test, run as a child process with that deployment's settings.

The fault tests point their child processes at private servers (a Redis or a PostgreSQL of the
test's own); this script submits the ledger's transfers there and reads the outcome back, so the
test process itself never needs those settings. Every command prints one JSON document.

    python -m tests.faults.driver submit < {"accounts": {...}, "transfers": [[id, from, to, amount], ...]}
    python -m tests.faults.driver report
    python -m tests.faults.driver staff-session
"""

from __future__ import annotations

import json
import os
import sys


def submit(spec: dict) -> dict:
    from django.db import transaction

    from examples.ledger.models import Account
    from examples.ledger.tasks import transfer

    for name, balance in spec.get("accounts", {}).items():
        Account.objects.get_or_create(name=name, defaults={"balance": balance})
    batch = spec.get("batch", 50)
    transfers = spec["transfers"]
    errors = []
    for start in range(0, len(transfers), batch):
        try:
            with transaction.atomic():
                for tid, source, target, amount in transfers[start : start + batch]:
                    transfer.delay(transfer_id=tid, from_account=source, to_account=target, amount=amount)
        except Exception as exc:  # reported to the test, which decides whether it may happen
            errors.append(f"{type(exc).__name__}: {exc}")
    return {"submitted": len(transfers), "errors": errors}


def report() -> dict:
    from cluster.models import Job, MembershipEvent, Node
    from examples.ledger.models import Account, Transfer
    from idempotency.models import IdempotencyRecord

    return {
        "balances": dict(Account.objects.values_list("name", "balance")),
        "transfers": [
            {"id": pk, "transfer_id": tid, "from": source, "amount": amount, "token": token, "node": node}
            for pk, tid, source, amount, token, node in Transfer.objects.order_by("id").values_list(
                "id", "transfer_id", "from_account__name", "amount", "fencing_token", "applied_by"
            )
        ],
        "jobs": [
            {"id": str(pk), "state": state, "key": key, "dispatch": dispatch, "attempts": attempts}
            for pk, state, key, dispatch, attempts in Job.objects.values_list(
                "id", "state", "idempotency_key", "dispatch", "attempts"
            )
        ],
        "idempotency": [
            {"key": key, "state": state, "result": result}
            for key, state, result in IdempotencyRecord.objects.filter(scope__startswith="task:").values_list(
                "key", "state", "result"
            )
        ],
        "nodes": dict(Node.objects.values_list("name", "state")),
        "events": list(MembershipEvent.objects.order_by("id").values_list("node__name", "from_state", "to_state")),
    }


def staff_session() -> dict:
    """A logged-in staff session, as Django's test client's force_login makes one."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model, load_backend
    from django.contrib.sessions.backends.db import SessionStore

    user, _ = get_user_model().objects.get_or_create(username="faults-staff", defaults={"is_staff": True})
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    # The first backend that can load a user (django-axes' standalone backend only authenticates).
    session[BACKEND_SESSION_KEY] = next(
        path for path in settings.AUTHENTICATION_BACKENDS if hasattr(load_backend(path), "get_user")
    )
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return {"cookie": settings.SESSION_COOKIE_NAME, "session": session.session_key}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.faults.settings")
    import django

    django.setup()
    command = sys.argv[1]
    if command == "submit":
        result = submit(json.load(sys.stdin))
    elif command == "report":
        result = report()
    elif command == "staff-session":
        result = staff_session()
    else:
        raise SystemExit(f"unknown command {command!r}")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
