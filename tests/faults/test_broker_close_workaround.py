"""Celery's close after a lost Redis connection must end in a connection error, never an AttributeError.

The sequence a worker's consumer runs when it loses the broker while a BRPOP is in flight and a
pub/sub subscription is open (remote control): ``collect()`` then ``close()`` through
``ignore_errors``. With kombu 5.7 unpatched the second close raises ``AttributeError`` and the
worker exits ("Unrecoverable error"); config/celery.py turns it into a connection error.
"""

from __future__ import annotations

import contextlib
import socket

import pytest
from kombu import Connection, Exchange, Queue
from kombu.common import ignore_errors

import config.celery  # noqa: F401 (applies the workaround, as every process that loads the app does)
from tests import services


@pytest.mark.slow
@pytest.mark.services
def test_closing_a_connection_lost_mid_brpop_is_a_connection_error():
    with services.private_redis_server() as server:
        with Connection(server.url) as producer:
            producer.Producer().publish({"n": 1}, routing_key="work", declare=[Queue("work")])
        conn = Connection(server.url)
        queues = [Queue("work"), Queue("control", exchange=Exchange("control", type="fanout"), auto_delete=True)]
        conn.Consumer(queues, callbacks=[lambda body, message: None]).consume()  # delivered, never acked
        conn.drain_events(timeout=1)
        with contextlib.suppress(socket.timeout):
            conn.drain_events(timeout=0.2)  # leaves a BRPOP in flight
        server.stop()
        with pytest.raises(conn.connection_errors):
            conn.drain_events(timeout=1)
        conn.collect(socket_timeout=1)
        ignore_errors(conn, conn.close)  # unpatched: AttributeError: 'NoneType' object has no attribute 'hostname'
