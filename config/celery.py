"""The Celery app: configured from Django settings (``CELERY_`` namespace), tasks autodiscovered."""

from __future__ import annotations

import os
import time
import uuid

import redis
from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_init
from django.db import close_old_connections
from kombu.exceptions import ChannelError
from kombu.transport import filesystem as kombu_filesystem
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def _closed_channel_raises_connection_error() -> None:
    """Work around a kombu 5.7 Redis-transport bug that makes a worker exit when Redis goes away.

    When the connection drops while a BRPOP is in flight and the loss is seen on another socket
    (the remote-control pub/sub), Celery closes the connection twice (``collect()``, then
    ``close()``): the first close stops at the unreadable BRPOP reply, the second finds the
    transport already detached (``client`` is None) and raises ``AttributeError``, which
    Celery's ``ignore_errors`` does not catch: "Unrecoverable error", and the worker is gone.
    Raising the transport's own connection error instead lets Celery reconnect as it does for any
    other connection loss. Found by tests/faults/test_redis_restart.py (about one run in three).
    """
    original = kombu_redis.Channel._connparams
    if getattr(original, "ringmaster_workaround", False):
        return

    def _connparams(self, asynchronous=False):
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection is already closed")
        return original(self, asynchronous=asynchronous)

    _connparams.ringmaster_workaround = True
    kombu_redis.Channel._connparams = _connparams


_closed_channel_raises_connection_error()


def _filesystem_put_is_atomic() -> None:
    """Make the filesystem transport's put atomic (the embedded default's broker, kombu 5.7).

    kombu creates a message file and then writes it, while a consumer moves away and reads any file
    whose name ends in ``<queue>.msg``: one that took a file in between read it empty, its worker
    died with ``JSONDecodeError`` ("Unrecoverable error", seen in ``make run``) and the message
    was lost. The message is written under a name no consumer matches, then renamed into place
    (atomic on one filesystem). tests/test_broker_filesystem.py races producers and consumers.
    """
    original = kombu_filesystem.Channel._put
    if getattr(original, "ringmaster_workaround", False):
        return

    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(time.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + ".partial"  # "<queue>.msg.partial": not a message to any consumer
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    _put.ringmaster_workaround = True
    kombu_filesystem.Channel._put = _put


_filesystem_put_is_atomic()

app = Celery("ringmaster")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _retire_old_connections(**kwargs) -> None:
    # CELERY_DB_REUSE_MAX keeps a worker's database connection across tasks (Celery's default
    # opens a new one per task, ~20% of a cluster_task's time); this still retires connections
    # that are broken or older than CONN_MAX_AGE, as Django does around each request.
    close_old_connections()


@worker_init.connect(dispatch_uid="ringmaster-db-connections")
def _in_workers_only(**kwargs) -> None:
    # Only in worker processes: a task applied in-process (tests, eager mode) must not close the
    # caller's connection in the middle of its transaction.
    task_prerun.connect(_retire_old_connections, dispatch_uid="ringmaster-db-connections-before")
    task_postrun.connect(_retire_old_connections, dispatch_uid="ringmaster-db-connections-after")
