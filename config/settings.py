"""The one settings module: environment variables in, two deployments out.

With no variables set Ringmaster runs embedded (SQLite under ``var/``, a file
cache, a SQLite channel layer and a filesystem Celery broker), so a newcomer
needs nothing but Python. ``DATABASE_URL`` and ``REDIS_URL`` switch to
PostgreSQL and Redis. Every variable is parsed here, once, with django-environ.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

# Where the embedded default keeps its state (database, cache, broker, secret).
VAR_DIR = Path(env.str("RINGMASTER_VAR_DIR", default=str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DJANGO_DEBUG", default=True)


def _required(name: str) -> str:
    value = env.str(name, default="").strip()
    if not value:
        raise ImproperlyConfigured(
            f"{name} must be set when DJANGO_DEBUG=0 (production settings refuse to start without it)."
        )
    return value


def _dev_secret_key() -> str:
    # Generated once per checkout and kept out of git (var/ is ignored), so no secret lives in the repo.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


if DEBUG:
    SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or _dev_secret_key()
    ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
else:
    SECRET_KEY = _required("DJANGO_SECRET_KEY")
    ALLOWED_HOSTS = [h.strip() for h in _required("DJANGO_ALLOWED_HOSTS").split(",") if h.strip()]

CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "csp",
    "locks",
    "idempotency",
    "cluster",
    "monitoring",
    "examples.ledger",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "idempotency.middleware.IdempotencyMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A view's database errors (PostgreSQL restarting) answer 503 problem+json, not a 500 traceback.
    "monitoring.middleware.DatabaseUnavailableMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into its 429 response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------

SQLITE_PATH = VAR_DIR / "ringmaster.sqlite3"


def _database(url: str) -> dict:
    try:
        config = environ.Env.db_url_config(url)
    except Exception as exc:  # django-environ raises a bare error without the variable's name
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL ({exc}).") from exc
    engine = config.get("ENGINE", "")
    if engine == "django.db.backends.postgresql":
        # 0 by default: under ASGI every request runs in a new thread, and a persistent connection
        # belongs to its thread, so CONN_MAX_AGE > 0 would open a connection per request and leave it
        # open (benchmarks/results/heartbeats.md). Worker nodes started by run_node use 60.
        config.update(CONN_MAX_AGE=env.int("DJANGO_CONN_MAX_AGE", default=0), CONN_HEALTH_CHECKS=True)
        config.setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
    elif engine == "django.db.backends.sqlite3":
        _sqlite_options(config)
    else:
        raise ImproperlyConfigured(
            f"DATABASE_URL uses an unsupported scheme ({url.split(':', 1)[0]!r}); use postgres:// or sqlite://."
        )
    return config


def _sqlite_options(config: dict) -> None:
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at BEGIN so two
    # processes never deadlock upgrading read locks; the timeout waits for that lock instead of failing.
    config.setdefault("OPTIONS", {}).update(
        transaction_mode="IMMEDIATE",
        timeout=20,
        init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    )
    # The test database must be a file: tests start real processes that share it.
    config.setdefault("TEST", {}).setdefault("NAME", str(VAR_DIR / "test.sqlite3"))


DATABASE_URL = env.str("DATABASE_URL", default="").strip()
if DATABASE_URL:
    DATABASES = {"default": _database(DATABASE_URL)}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(SQLITE_PATH)}}
    _sqlite_options(DATABASES["default"])

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis or the embedded fallbacks --------------------------------------------

REDIS_URL = env.str("REDIS_URL", default="").strip()
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured("REDIS_URL must start with redis://, rediss:// or unix://.")

# Short socket timeouts: a readiness probe or a lock call should fail fast, not hang, when Redis is gone.
REDIS_SOCKET_TIMEOUT = env.float("RINGMASTER_REDIS_TIMEOUT", default=2.0)

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": REDIS_SOCKET_TIMEOUT,
                "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            },
            "KEY_PREFIX": "rm",
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # A consumer waits for messages with a 5 s BZPOPMIN (channels_redis' brpop_timeout);
                # redis-py 8 gives up reading a reply after 5 s by default, so an idle consumer's
                # read lost that race and the consumer crashed. Reads wait for the BZPOPMIN and more.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
                        "socket_timeout": 5 + REDIS_SOCKET_TIMEOUT,
                    }
                ],
                "prefix": "rm-asgi",
            },
        }
    }
else:
    # A file cache and a SQLite channel layer are shared by every process the run command starts,
    # so a worker's event reaches the dashboard's WebSocket in the ASGI process without Redis.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
            # The default 300 entries would cull live heartbeats once a cluster has more nodes than that.
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "monitoring.layers.SQLiteChannelLayer",
            "CONFIG": {"path": str(VAR_DIR / "channels.sqlite3")},
        }
    }

# --- Celery (read by config/celery.py with the CELERY_ namespace) -----------------

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or REDIS_URL or "filesystem://"
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    CELERY_RESULT_BACKEND = "file://" + str(VAR_DIR / "celery-results")
    (VAR_DIR / "celery-results").mkdir(exist_ok=True)
else:
    # Unacked messages come back after the visibility timeout; cluster_task's recovery moves a dead
    # node's jobs much sooner, and the system check cluster.W001 keeps it above every lock TTL.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": REDIS_SOCKET_TIMEOUT, "visibility_timeout": 300}
    CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="") or REDIS_URL or None
CELERY_BROKER_CONNECTION_TIMEOUT = REDIS_SOCKET_TIMEOUT
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Keep a worker's database connection across tasks (config/celery.py still retires broken or old ones).
CELERY_DB_REUSE_MAX = 1000
# Periodic tasks run by `celery beat`; each app adds its own entry by name.
CELERY_BEAT_SCHEDULE: dict = {}
# The idempotency reaper: deletes expired records in batches (also `manage.py purge_idempotency`).
CELERY_BEAT_SCHEDULE["idempotency-purge-expired"] = {"task": "idempotency.purge_expired", "schedule": 15 * 60.0}
# Finished job records past their retention (RINGMASTER["CLUSTER"]["JOB_RETENTION_DAYS"]).
CELERY_BEAT_SCHEDULE["cluster-trim-jobs"] = {"task": "cluster.trim_jobs", "schedule": 60 * 60.0}
# The demo workload of `make run`: ledger transfers (duplicates included) every two seconds.
RINGMASTER_DEMO = env.bool("RINGMASTER_DEMO", default=False)
if RINGMASTER_DEMO:
    CELERY_BEAT_SCHEDULE["ledger-demo-traffic"] = {"task": "ledger.demo_traffic", "schedule": 2.0}

# --- Ringmaster ----------------------------------------------------------------------

# Every Ringmaster setting lives here, one section per app; each app's conf.py documents its
# defaults and rejects unknown keys. Lock backends follow Django's CACHES pattern (LOCKS below).
RINGMASTER: dict = {
    "MONITORING": {"METRICS_TOKEN": env.str("RINGMASTER_METRICS_TOKEN", default="") or None},
}

# --- I18N, static files, auth -------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

LOGIN_URL = "admin:login"

# Brute-force protection of the login (the admin's, which the dashboard uses too) with django-axes:
# after 5 failed attempts for one username from one address, that pair is refused (429, even with
# the right password) until 15 minutes pass without a new failure; a success before that resets the
# count. The database handler works the same on SQLite and PostgreSQL and lists attempts and
# lockouts in the admin (Axes -> Access attempts, where a lockout can be lifted by deleting it).
# Axes sees REMOTE_ADDR: behind a reverse proxy that is the proxy, so the lockout is per username.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # no banner from every manage.py command; lockouts are still logged as warnings

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Production hardening (manage.py check --deploy is clean with DJANGO_DEBUG=0) --------

if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # /healthz and /readyz are probed over plain HTTP inside the cluster.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"


def _websocket_sources(hosts: list[str]) -> list[str]:
    # CSP Level 3 browsers match ws(s) to the page's own host with 'self'; older ones (older Safari
    # among them) need the host named. IPv6 literals cannot be written in CSP ('self' covers them).
    schemes = ["wss"] if not DEBUG else ["ws", "wss"]
    sources = []
    for host in hosts:
        if host == "*" or host.startswith("["):
            continue
        pattern = f"*{host}" if host.startswith(".") else host
        sources += [f"{scheme}://{pattern}:*" for scheme in schemes]
    return sources


# Content Security Policy (django-csp) on every response, the dashboard's and the admin's included.
# Scripts and styles come only from our origin: the dashboard is ES modules and a stylesheet, with
# no inline script, style element or style attribute (tests/security checks its pages), and Django
# 5.2's admin has none either: its templates load every script by src and its JavaScript sets styles
# through the CSSOM (element.style), which CSP does not restrict. So style-src needs no
# 'unsafe-inline'. connect-src adds the WebSocket (/ws/cluster/) for browsers whose 'self' does not
# cover ws:/wss:. frame-ancestors 'none' repeats X-Frame-Options: DENY for CSP-aware browsers.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "font-src": ["'self'"],
        "connect-src": ["'self'", *_websocket_sources(ALLOWED_HOSTS)],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
}

# Lock backends, Django's CACHES pattern: `db` always, `redis` when REDIS_URL is set, `default`
# pointing at redis when it exists and at db otherwise. The database backend's OPTIONS:
# "DATABASE" (an alias of DATABASES, default "default") and "MODE": "table" (default: the lease
# table, PostgreSQL or SQLite) or "advisory" (PostgreSQL only, opt-in: transaction-level advisory
# locks on dedicated connections, one round trip per acquire and per release; trade-offs in the
# README and locks/backends/pg_advisory.py), e.g. {"MODE": "advisory"}.
LOCKS: dict = {"db": {"BACKEND": "locks.backends.db.DatabaseLockBackend", "OPTIONS": {}}}
if REDIS_URL:
    LOCKS["redis"] = {
        "BACKEND": "locks.backends.redis.RedisLockBackend",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"socket_timeout": REDIS_SOCKET_TIMEOUT},
    }
LOCKS["default"] = dict(LOCKS["redis"] if REDIS_URL else LOCKS["db"])
