"""What the fault tests share: worker and sweeper processes, waiting, the driver, the ledger's checks."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = "tests.faults.settings"
# Variables of the outer test run that must not leak into a deployment of the test's own.
DEPLOYMENT_VARIABLES = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")


def deployment_env(base: dict, **overrides: str) -> dict:
    """The environment of the children of one fault test (its settings module, its services)."""
    env = {k: v for k, v in base.items() if k not in DEPLOYMENT_VARIABLES}
    env["DJANGO_SETTINGS_MODULE"] = SETTINGS
    env.update(overrides)
    return env


class Processes:
    """The child processes of one test, each in its own process group, with its output in a log file."""

    def __init__(self, env: dict, logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], **extra_env: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process in stop_all)
        proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env={**self.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: signals reach the whole worker
        )
        proc.log = log  # type: ignore[attr-defined]
        self.procs[name] = proc
        return proc

    def worker(self, name: str, *, concurrency: int = 4, loglevel: str = "WARNING") -> subprocess.Popen:
        argv = ["-m", "celery", "-A", "config", "worker", "--pool", "threads", "--concurrency", str(concurrency),
                "--hostname", f"{name}@%h", "--loglevel", loglevel, "--without-mingle", "--without-gossip",
                "--without-heartbeat"]  # fmt: skip
        return self.start(name, argv, RINGMASTER_NODE_NAME=name)

    def sweeper(self) -> subprocess.Popen:
        return self.start("sweeper", ["manage.py", "sweeper"])

    def signal(self, name: str, sig: signal.Signals) -> None:
        os.killpg(self.procs[name].pid, sig)

    def crashed(self) -> dict[str, int]:
        """Children that exited on their own, with their exit codes."""
        return {name: proc.returncode for name, proc in self.procs.items() if proc.poll() is not None}

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)  # a paused worker cannot shut down
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.log.close()


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    *,
    interval: float = 0.25,
    details: Callable[[], object] | None = None,
) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout`` naming ``what`` (and ``details()``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f": {details()}" if details else ""))


def driver(env: dict, command: str, payload: dict | None = None, *, timeout: float = 60) -> dict:
    """Run ``tests.faults.driver`` with the deployment's settings; its JSON answer."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.faults.driver", command],
        cwd=ROOT,
        env=env,
        input=json.dumps(payload or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"driver {command} failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


def make_transfers(accounts: list[str], count: int, seed: int) -> list[list]:
    rng = random.Random(seed)
    return [[uuid.uuid4().hex, *rng.sample(accounts, 2), rng.randint(1, 50)] for _ in range(count)]


def expected_balances(accounts: Iterable[str], opening: int, transfers: Iterable[list]) -> dict[str, int]:
    expected = dict.fromkeys(accounts, opening)
    for _tid, source, target, amount in transfers:
        expected[source] -= amount
        expected[target] += amount
    return expected


def tokens_going_backwards(applied: Iterable[tuple[str, int | None]]) -> dict[str, list[int | None]]:
    """Accounts whose transfers, in the order they were applied, carry fencing tokens that do not increase."""
    per_account: dict[str, list[int | None]] = defaultdict(list)
    for account, token in applied:
        per_account[account].append(token)
    return {
        account: tokens
        for account, tokens in per_account.items()
        if None in tokens or any(b <= a for a, b in zip(tokens, tokens[1:], strict=False))
    }
