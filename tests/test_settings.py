"""Settings parsing: the two deployments and the production guard rails, in fresh interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """
import json, django
from django.conf import settings
django.setup()
print(json.dumps({
    "engine": settings.DATABASES["default"]["ENGINE"],
    "db_options": settings.DATABASES["default"].get("OPTIONS", {}),
    "health": settings.DATABASES["default"].get("CONN_HEALTH_CHECKS"),
    "cache": settings.CACHES["default"]["BACKEND"],
    "layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "broker": settings.CELERY_BROKER_URL,
    "locks": sorted(settings.LOCKS),
    "default_lock": settings.LOCKS["default"]["BACKEND"],
    "debug": settings.DEBUG,
}))
"""


def probe(tmp_path, **env_vars: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_", "CELERY_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "RINGMASTER_VAR_DIR": str(tmp_path / "var")})
    env.update(env_vars)
    return subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def parsed(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, f"settings failed to load: {result.stderr[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_embedded_default_needs_no_services(tmp_path):
    conf = parsed(probe(tmp_path))
    assert conf["engine"] == "django.db.backends.sqlite3"
    assert conf["db_options"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in conf["db_options"]["init_command"]
    assert conf["db_options"]["timeout"] > 0
    assert conf["cache"] == "django.core.cache.backends.filebased.FileBasedCache"
    assert conf["layer"] == "monitoring.layers.SQLiteChannelLayer"
    assert conf["broker"] == "filesystem://"
    assert conf["locks"] == ["db", "default"]
    assert conf["default_lock"] == "locks.backends.db.DatabaseLockBackend"
    assert conf["debug"] is True
    assert (tmp_path / "var" / "secret_key").exists(), "a development secret key is generated under var/"


def test_real_services_from_urls(tmp_path):
    conf = parsed(probe(tmp_path, DATABASE_URL="postgres://u@127.0.0.1:5432/db", REDIS_URL="redis://127.0.0.1:6379/1"))
    assert conf["engine"] == "django.db.backends.postgresql"
    assert conf["health"] is True
    assert conf["cache"] == "django_redis.cache.RedisCache"
    assert conf["layer"] == "channels_redis.core.RedisChannelLayer"
    assert conf["broker"] == "redis://127.0.0.1:6379/1"
    assert conf["locks"] == ["db", "default", "redis"]
    assert conf["default_lock"] == "locks.backends.redis.RedisLockBackend"


@pytest.mark.parametrize("url", ["mysql-but-typo://x", "nonsense", "foo://bar"])
def test_bad_database_url_names_the_variable(tmp_path, url):
    result = probe(tmp_path, DATABASE_URL=url)
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr, result.stderr[-1000:]


def test_bad_redis_url_names_the_variable(tmp_path):
    result = probe(tmp_path, REDIS_URL="http://127.0.0.1:6379")
    assert result.returncode != 0
    assert "REDIS_URL" in result.stderr


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS"])
def test_production_refuses_to_start_without(tmp_path, missing):
    env = {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "x" * 60, "DJANGO_ALLOWED_HOSTS": "example.org"}
    del env[missing]
    result = probe(tmp_path, **env)
    assert result.returncode != 0
    assert missing in result.stderr


def test_debug_follows_django_debug_whatever_the_services(tmp_path):
    conf = parsed(probe(tmp_path, DJANGO_DEBUG="0", DJANGO_SECRET_KEY="k" * 60, DJANGO_ALLOWED_HOSTS="example.org"))
    assert conf["debug"] is False
    conf = parsed(probe(tmp_path, DJANGO_DEBUG="1", DATABASE_URL="postgres://u@127.0.0.1/db"))
    assert conf["debug"] is True


def test_check_deploy_is_clean_in_production(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_"))}
    env.update(
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="a-long-random-production-secret-" + "q8Zr!x" * 10,
        DJANGO_ALLOWED_HOSTS="ringmaster.example.org",
        RINGMASTER_VAR_DIR=str(tmp_path / "var"),
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
