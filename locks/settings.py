"""Documented defaults of ``RINGMASTER["LOCKS"]``."""

from __future__ import annotations

import os
import socket

from .conf import AppSettings

lock_settings = AppSettings(
    "LOCKS",
    {
        # Default lease length, in seconds, when a caller passes no ttl.
        "DEFAULT_TTL": 30.0,
        # This node's name in lock owner identities (node:pid:thread:random), shown in held() and
        # the admin. Read from RINGMASTER_NODE_NAME here rather than from RINGMASTER["CLUSTER"]
        # because locks must not import cluster; the host name when unset.
        "NODE_NAME": os.environ.get("RINGMASTER_NODE_NAME", "").strip() or socket.gethostname(),
        # Database backend: how often a waiter polls, in seconds. The first waiter in line starts
        # at the minimum and backs off slowly; the others poll less often the further back they are.
        "POLL_INTERVAL_MIN": 0.002,
        "POLL_INTERVAL_MAX": 0.05,
        # Seconds a queued waiter keeps its place without a sign of life (it refreshes it while it
        # waits); a waiter that crashed stops holding up the queue after this long.
        "WAITER_TTL": 2.0,
        # Database backend: while others wait, a free lock may go to a caller that is not first in
        # line at most this many times in a row (then the first waiter gets it). The releasing
        # process asking again then goes on without waiting for the first waiter's next poll, and
        # the bound keeps waits short and fair; 0 is strict FIFO. (Redis hands off directly.)
        "MAX_BARGES": 3,
        # auto_renew extends the lease every ttl * RENEW_FRACTION seconds.
        "RENEW_FRACTION": 1 / 3,
    },
)
