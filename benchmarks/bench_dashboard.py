"""Benchmark of the dashboard stream: 1,000 nodes heartbeating at 1 Hz, state changes timed to the browser.

Run by hand: `.venv/bin/python benchmarks/bench_dashboard.py [--nodes 1000] [--clients 5] [--duration 30]
[--deployment embedded|services|both]`; prints one markdown report (and writes it with --out).

For each deployment it starts, as separate processes on this machine:
- the ASGI server (uvicorn, as `make run` serves it), whose CPU use is measured;
- a heartbeat generator: every node beats once a second through `monitoring.services.heartbeat_record`
  (the ingestion path of the HTTP API and the worker threads, minus HTTP parsing), spread over the second;
- the real sweeper (`Sweeper().sweep()` every second, default policy);
- a change driver: every 0.5 s it marks one node suspect through `cluster.services` (the sweeper refutes it
  a second later: another change), and every 8 s it silences one node for good, which the sweeper then
  marks suspect and dead (a new ring epoch);
and N WebSocket clients logged in as staff. The delay of a change is the time from its service call (for
the driver's own changes) or from its `MembershipEvent.created_at` (for the sweeper's) to the first message
that shows the new state in a client, on the same clock.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PG_ADMIN_URL = os.environ.get("RINGMASTER_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_BENCH_URL = "redis://127.0.0.1:6379/8"


# --- child processes (each runs Django with the deployment's environment) -------------------------------


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def child_setup(nodes: int) -> None:
    """Migrate, create the staff user and its session, and register the nodes (active, in one ring)."""
    _django()
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.cache import cache
    from django.core.management import call_command

    from cluster.models import ClusterState, Node, RingEpoch
    from cluster.ring import HashRing

    call_command("migrate", verbosity=0)
    cache.clear()
    user = get_user_model().objects.create_user(username="bench", is_staff=True)  # logs in by session only
    names = [f"node-{i:04d}" for i in range(nodes)]
    zones = {name: f"zone-{i % 3}" for i, name in enumerate(names)}
    # Registered in bulk (a benchmark fixture): a thousand joins through the services would be a thousand epochs.
    Node.objects.bulk_create(Node(name=name, zone=zones[name], state="active") for name in names)
    ring = HashRing(names, zones=zones, epoch=1)
    RingEpoch.objects.create(epoch=1, ring=ring.to_dict(), reason="benchmark")
    ClusterState.objects.update_or_create(pk=1, defaults={"epoch": 1})
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    print(json.dumps({"session": session.session_key}), flush=True)


def child_beats(nodes: int, silenced_file: str) -> None:
    """Every node beats once a second, spread evenly; nodes listed in silenced_file stop."""
    _django()
    from monitoring.services import heartbeat_record

    names = [f"node-{i:04d}" for i in range(nodes)]
    silenced: set[str] = set()
    seq = 0
    next_round = time.monotonic()
    while True:
        seq += 1
        try:
            silenced = set(Path(silenced_file).read_text().split())
        except FileNotFoundError:
            pass
        for i, name in enumerate(names):
            due = next_round + i / len(names)
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if name not in silenced:
                heartbeat_record(node=name, incarnation=1, seq=seq, load={"loadavg_1m": 0.5})
        next_round += 1.0


def child_sweeper() -> None:
    _django()
    from django.db import close_old_connections

    from monitoring.sweeper import Sweeper

    sweeper = Sweeper()
    while True:
        started = time.monotonic()
        close_old_connections()
        sweeper.sweep()
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


def child_changes(nodes: int, silenced_file: str, log_file: str) -> None:
    """Mark a node suspect every 0.5 s (logging when), and silence one node every 8 s."""
    _django()
    from cluster import services
    from cluster.exceptions import IllegalTransition

    names = [f"node-{i:04d}" for i in range(nodes)]
    silenced: list[str] = []
    index = 0
    last_silence = time.monotonic()
    with open(log_file, "a") as log:
        while True:
            name = names[index % len(names)]
            index += 7  # spread over the nodes
            if name not in silenced:
                started = time.time()
                try:
                    services.node_mark_suspect(node=name, actor="bench", reason="benchmark")
                except IllegalTransition:
                    pass
                else:
                    log.write(json.dumps({"node": name, "state": "suspect", "t0": started, "by": "driver"}) + "\n")
                    log.flush()
            if time.monotonic() - last_silence >= 8:
                last_silence = time.monotonic()
                victim = names[(index * 13 + 1) % len(names)]
                silenced.append(victim)
                Path(silenced_file).write_text("\n".join(silenced))
            time.sleep(0.5)


# --- the orchestrator -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _deployment_env(name: str, var_dir: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
    }
    env.update(RINGMASTER_VAR_DIR=var_dir, DJANGO_DEBUG="1", DJANGO_LOG_LEVEL="ERROR", PYTHONPATH=str(ROOT))
    if name == "services":
        import psycopg
        import redis

        base, _, _ = PG_ADMIN_URL.rpartition("/")
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS ringmaster_bench_dashboard WITH (FORCE)")
            conn.execute("CREATE DATABASE ringmaster_bench_dashboard")
        redis.Redis.from_url(REDIS_BENCH_URL).flushdb()
        env.update(DATABASE_URL=f"{base}/ringmaster_bench_dashboard", REDIS_URL=REDIS_BENCH_URL)
    return env


def _spawn(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], cwd=ROOT, env=env)


class Client:
    """One staff browser's WebSocket: counts messages and bytes, notes when each node state first shows."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.seen: dict[tuple[str, str], list[float]] = {}
        self.started = 0.0

    def note(self, node: str, state: str, at: float) -> None:
        self.seen.setdefault((node, state), []).append(at)

    async def run(self, url: str, origin: str, session: str, stop: asyncio.Event) -> None:
        import websockets

        headers = {"Cookie": f"sessionid={session}"}
        async with websockets.connect(url, origin=origin, additional_headers=headers, max_size=2**24) as ws:
            self.started = time.time()
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
                except TimeoutError:
                    continue
                at = time.time()
                self.messages += 1
                self.bytes += len(raw)
                message = json.loads(raw)
                if message["type"] == "events" and not message.get("history"):
                    for event in message["events"]:
                        if event.get("kind") == "membership":
                            self.note(event["node"], event["to_state"], at)
                elif message["type"] == "delta":
                    for row in message.get("nodes", {}).get("changed", []):
                        if "state" in row:
                            self.note(row["name"], row["state"], at)


def _cpu(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def child_sweeper_changes(since: float) -> None:
    """Print the sweeper's suspect and dead transitions since ``since``, timed by their created_at."""
    _django()
    from cluster.models import MembershipEvent

    rows = MembershipEvent.objects.filter(
        actor="sweeper",
        to_state__in=["suspect", "dead"],
        created_at__gte=datetime.datetime.fromtimestamp(since, tz=datetime.UTC),
    ).select_related("node")
    changes = [
        {"node": e.node.name, "state": e.to_state, "t0": e.created_at.timestamp(), "by": "sweeper"} for e in rows
    ]
    print(json.dumps(changes), flush=True)


def _sweeper_changes(env: dict[str, str], since: float) -> list[dict]:
    out = subprocess.run(
        [sys.executable, __file__, "child-sweeper-changes", str(since)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_deployment(name: str, nodes: int, clients: int, duration: float, warmup: float) -> dict:
    var_dir = tempfile.mkdtemp(prefix=f"rm-bench-dash-{name}-")
    env = _deployment_env(name, var_dir)
    setup = subprocess.run(
        [sys.executable, __file__, "child-setup", str(nodes)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if setup.returncode:
        raise SystemExit(f"setup failed:\n{setup.stderr}")
    session = json.loads(setup.stdout.strip().splitlines()[-1])["session"]
    silenced_file = os.path.join(var_dir, "silenced.txt")
    log_file = os.path.join(var_dir, "changes.jsonl")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port), "--no-access-log"]
        + ["--log-level", "warning"],
        cwd=ROOT,
        env=env,
    )
    children = [server]
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()  # noqa: S310
                break
            except OSError:
                time.sleep(0.1)
        children.append(_spawn(env, "child-beats", str(nodes), silenced_file))
        children.append(_spawn(env, "child-sweeper"))
        time.sleep(warmup)  # the sweeper learns the intervals before anything is timed
        children.append(_spawn(env, "child-changes", str(nodes), silenced_file, log_file))
        measured_from = time.time()
        cpu_before = {p.pid: _cpu(p.pid) for p in children}
        sample = asyncio.run(_clients(port, session, clients, duration))
        cpu = {p.pid: (_cpu(p.pid) - cpu_before.get(p.pid, 0.0)) / duration for p in children}
        changes = [json.loads(line) for line in Path(log_file).read_text().splitlines() if line.strip()]
        changes += _sweeper_changes(env, measured_from)
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        shutil.rmtree(var_dir, ignore_errors=True)
    return _summarise(name, sample, changes, cpu, server.pid, children, measured_from, duration)


async def _clients(port: int, session: str, count: int, duration: float) -> list[Client]:
    stop = asyncio.Event()
    clients = [Client() for _ in range(count)]
    url, origin = f"ws://127.0.0.1:{port}/ws/cluster/", f"http://127.0.0.1:{port}"
    tasks = [asyncio.create_task(c.run(url, origin, session, stop)) for c in clients]
    await asyncio.sleep(duration)
    stop.set()
    await asyncio.gather(*tasks)
    return clients


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _summarise(name, clients, changes, cpu, server_pid, children, since, duration) -> dict:
    delays: dict[str, list[float]] = {"driver": [], "sweeper": []}
    missed = 0
    for change in changes:
        if change["t0"] < since or change["t0"] > since + duration - 2:
            continue
        for client in clients:
            shown = [t for t in client.seen.get((change["node"], change["state"]), []) if t >= change["t0"] - 0.05]
            if shown:
                delays[change["by"]].append(max(0.0, min(shown) - change["t0"]))
            else:
                missed += 1
    labels = ["server", "heartbeats", "sweeper", "driver"]
    return {
        "deployment": name,
        "delays": delays,
        "missed": missed,
        "messages_per_s": [c.messages / duration for c in clients],
        "kbytes_per_s": [c.bytes / duration / 1024 for c in clients],
        "cpu": {labels[i]: cpu[p.pid] for i, p in enumerate(children)},
    }


def render(results: list[dict], nodes: int, clients: int, duration: float) -> str:
    lines = [
        "# Dashboard stream benchmark",
        "",
        f"{datetime.date.today().isoformat()}, Python {platform.python_version()}, {os.cpu_count()} cores; "
        f"{nodes} nodes heartbeating at 1 Hz, {clients} WebSocket clients, {duration:g} s measured per deployment.",
        "",
        "Delay = from a state change (the service call, or the sweeper's MembershipEvent) to the first message",
        "showing it in a client. CPU in % of one core over the measured window.",
        "",
        "| deployment | changes timed | delay p50 | delay p95 | delay max | operator-made p95 | sweeper-made p95"
        " | msgs/s per client"
        " | KiB/s per client | ASGI server CPU | heartbeat generator CPU | sweeper CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        every = r["delays"]["driver"] + r["delays"]["sweeper"]
        ms = lambda v: f"{v * 1000:.0f} ms"  # noqa: E731
        lines.append(
            f"| {r['deployment']} | {len(every)} (missed {r['missed']}) | {ms(statistics.median(every))}"
            f" | {ms(_percentile(every, 0.95))} | {ms(max(every))}"
            f" | {ms(_percentile(r['delays']['driver'], 0.95)) if r['delays']['driver'] else '–'}"
            f" | {ms(_percentile(r['delays']['sweeper'], 0.95)) if r['delays']['sweeper'] else '–'}"
            f" | {statistics.mean(r['messages_per_s']):.2f} | {statistics.mean(r['kbytes_per_s']):.1f}"
            f" | {r['cpu']['server']:.0%} | {r['cpu']['heartbeats']:.0%} | {r['cpu']['sweeper']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("child-"):
        command, args = sys.argv[1], sys.argv[2:]
        if command == "child-setup":
            child_setup(int(args[0]))
        elif command == "child-beats":
            child_beats(int(args[0]), args[1])
        elif command == "child-sweeper":
            child_sweeper()
        elif command == "child-changes":
            child_changes(int(args[0]), args[1], args[2])
        elif command == "child-sweeper-changes":
            child_sweeper_changes(float(args[0]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=12.0)
    parser.add_argument("--deployment", choices=["embedded", "services", "both"], default="both")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    names = ["services", "embedded"] if args.deployment == "both" else [args.deployment]
    results = [run_deployment(n, args.nodes, args.clients, args.duration, args.warmup) for n in names]
    report = render(results, args.nodes, args.clients, args.duration)
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
