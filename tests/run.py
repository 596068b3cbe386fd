"""The test command: the whole suite on both supported deployments, against real services.

Pass 1 runs every test on PostgreSQL + Redis (the real-services deployment); pass 2 runs them
again on the embedded default (SQLite, no Redis), minus the tests marked ``services`` that are
about PostgreSQL or Redis themselves. Both must pass. Extra arguments go to pytest, e.g.
``make test ARGS="-k ring"``; ``--only services|embedded`` runs one pass.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from tests import services

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Settings that select a deployment; each pass sets its own and nothing leaks in from the shell.
DEPLOYMENT_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "RINGMASTER_VAR_DIR")


def run_pass(name: str, extra_env: dict[str, str], marker: str, pytest_args: list[str]) -> int:
    env = {k: v for k, v in os.environ.items() if k not in DEPLOYMENT_VARIABLES}
    env.update(extra_env)
    env["DJANGO_DEBUG"] = "1"
    with tempfile.TemporaryDirectory(prefix="ringmaster-var-") as var_dir:
        env["RINGMASTER_VAR_DIR"] = var_dir
        cmd = [sys.executable, "-m", "pytest", "-m", marker, *pytest_args]
        print(f"\n=== pass: {name} ===\n$ {' '.join(cmd)}", flush=True)
        return subprocess.call(cmd, cwd=ROOT, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=["services", "embedded"])
    args, pytest_args = parser.parse_known_args()
    try:
        with services.postgres() as pg_url, services.redis_server() as redis_url:
            shared = {"RINGMASTER_TEST_DATABASE_URL": pg_url, "RINGMASTER_TEST_REDIS_URL": redis_url}
            results = {}
            if args.only in (None, "services"):
                results["services (PostgreSQL + Redis)"] = run_pass(
                    "services (PostgreSQL + Redis)",
                    {**shared, "DATABASE_URL": pg_url, "REDIS_URL": redis_url},
                    "not embedded",
                    pytest_args,
                )
            if args.only in (None, "embedded"):
                results["embedded (SQLite, no Redis)"] = run_pass(
                    "embedded (SQLite, no Redis)", shared, "not services", pytest_args
                )
    except services.ServiceUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n=== summary ===")
    for name, code in results.items():
        # pytest exits 5 when it ran no test: that is a failure here, never a pass.
        print(f"{name}: {'passed' if code == 0 else f'FAILED (pytest exit {code})'}")
    return 0 if all(code == 0 for code in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
