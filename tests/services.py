"""Find, or start privately, the PostgreSQL and Redis servers the test suite talks to.

The suite needs a real PostgreSQL and a real Redis. It first tries the addresses in
``RINGMASTER_TEST_DATABASE_URL`` and ``RINGMASTER_TEST_REDIS_URL`` (defaults: the local
servers on 127.0.0.1). Where nothing answers, it starts throwaway instances from the
installed server binaries in a temporary folder on free ports (as pytest-postgresql and
pytest-redis do) and stops them afterwards. Where the binaries are missing it fails, naming
the Debian package to install: the suite never skips these tests silently.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/9"


class ServiceUnavailable(RuntimeError):
    """A service is neither running nor startable here."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str, check) -> bool:
    try:
        check(url)
    except Exception:
        return False
    return True


def _pg_ping(url: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=3) as conn:
        conn.execute("SELECT 1")


def _redis_ping(url: str) -> None:
    import redis

    redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; CI runs as root.
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if not runuser:
        raise ServiceUnavailable("running as root needs 'runuser' (util-linux) to start PostgreSQL as another user")
    return [runuser, "-u", "postgres", "--", *cmd]


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """Yield a URL of a PostgreSQL that answers: the configured one, or a private throwaway one."""
    url = os.environ.get("RINGMASTER_TEST_DATABASE_URL", DEFAULT_DATABASE_URL)
    if _answers(url, _pg_ping):
        yield url
        return
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not (initdb and pg_ctl):
        raise ServiceUnavailable(
            f"No PostgreSQL answers at {url} and no initdb/pg_ctl is installed: "
            "install the 'postgresql' package (apt-get install postgresql) or set RINGMASTER_TEST_DATABASE_URL."
        )
    tmp = tempfile.mkdtemp(prefix="ringmaster-pg-")
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    data, port = os.path.join(tmp, "data"), free_port()
    subprocess.run(
        _as_postgres_user([initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres_user([pg_ctl, "-D", data, "-o", opts, "-l", os.path.join(tmp, "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        admin_url = f"postgres://postgres@127.0.0.1:{port}/postgres"
        import psycopg

        with psycopg.connect(admin_url.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
            conn.execute("CREATE DATABASE test")
        print(f"[services] started a private PostgreSQL on 127.0.0.1:{port}", flush=True)
        yield f"postgres://postgres@127.0.0.1:{port}/test"
    finally:
        subprocess.run(_as_postgres_user([pg_ctl, "-D", data, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Yield a URL of a Redis that answers: the configured one, or a private throwaway one."""
    url = os.environ.get("RINGMASTER_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    if _answers(url, _redis_ping):
        yield url
        return
    with private_redis() as private_url:
        print(f"[services] started a private Redis at {private_url}", flush=True)
        yield private_url


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A throwaway redis-server on a free port (tests also use it to stop Redis on purpose)."""
    binary = shutil.which("redis-server")
    if not binary:
        raise ServiceUnavailable(
            "No Redis answers and no redis-server is installed: install the 'redis-server' package "
            "(apt-get install redis-server) or set RINGMASTER_TEST_REDIS_URL."
        )
    tmp = tempfile.mkdtemp(prefix="ringmaster-redis-")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not _answers(url, _redis_ping):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise ServiceUnavailable(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
