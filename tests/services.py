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
    if not (_pg_binary("initdb") and _pg_binary("pg_ctl")):
        raise ServiceUnavailable(
            f"No PostgreSQL answers at {url} and no initdb/pg_ctl is installed: "
            "install the 'postgresql' package (apt-get install postgresql) or set RINGMASTER_TEST_DATABASE_URL."
        )
    with private_postgres() as server:
        print(f"[services] started a private PostgreSQL on 127.0.0.1:{server.port}", flush=True)
        yield server.url


class PostgresServer:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) on a free port that a test may stop and start.

    ``stop()`` defaults to ``-m immediate``: every backend is killed at once and the next start runs
    crash recovery, which is what a PostgreSQL crash or a failover looks like to the clients.
    """

    def __init__(self, *, database: str = "test") -> None:
        self.initdb, self.pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            raise ServiceUnavailable("no initdb/pg_ctl: install the 'postgresql' package (apt-get install postgresql)")
        self.database = database
        self.tmp = tempfile.mkdtemp(prefix="ringmaster-pg-")
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres", "postgres")
        self.data, self.port = os.path.join(self.tmp, "data"), free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/{database}"
        self.admin_url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        subprocess.run(
            _as_postgres_user([self.initdb, "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = os.path.join(self.tmp, "log")
        subprocess.run(
            _as_postgres_user([self.pg_ctl, "-D", self.data, "-o", opts, "-l", log, "-w", "start"]),
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "immediate") -> None:
        subprocess.run(_as_postgres_user([self.pg_ctl, "-D", self.data, "-m", mode, "-w", "stop"]), capture_output=True)

    def create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def private_postgres(*, database: str = "test") -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL with an empty ``database``; tests also use it to stop PostgreSQL on purpose."""
    server = PostgresServer(database=database)
    try:
        server.start()
        server.create_database()
        yield server
    finally:
        server.remove()


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
    with private_redis_server() as server:
        yield server.url


class RedisServer:
    """A throwaway redis-server with no persistence on a free port; ``stop``/``start`` keep the port."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if not self.binary:
            raise ServiceUnavailable(
                "No Redis answers and no redis-server is installed: install the 'redis-server' package "
                "(apt-get install redis-server) or set RINGMASTER_TEST_REDIS_URL."
            )
        self.tmp = tempfile.mkdtemp(prefix="ringmaster-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.tmp]
        self.proc = subprocess.Popen(
            [self.binary, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _answers(self.url, _redis_ping):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise ServiceUnavailable(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server; with no persistence everything it held is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def private_redis_server() -> Iterator[RedisServer]:
    """A ``RedisServer`` started for the block and removed after it."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()
