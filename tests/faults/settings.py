"""Settings of the child processes of the fault tests: the real settings with shorter timeouts.

Each fault must play out in seconds, not in the minutes production allows: the broker redelivers
unacked messages after 15 s instead of 300 s (still above the ledger's 10 s lock TTL, see the
system check cluster.W001), and the sweeper sends the message of a job stuck without progress
again after 10 s instead of 300 s. Nodes join as in every end-to-end test (tests/child_settings.py).
"""

from __future__ import annotations

from tests.child_settings import *  # noqa: F403 (config.settings as end-to-end tests run it, with a few overrides)
from tests.child_settings import CELERY_BROKER_TRANSPORT_OPTIONS, RINGMASTER

CELERY_BROKER_TRANSPORT_OPTIONS = {**CELERY_BROKER_TRANSPORT_OPTIONS, "visibility_timeout": 15}
RINGMASTER = {**RINGMASTER, "CLUSTER": {**RINGMASTER.get("CLUSTER", {}), "JOB_RESEND_AFTER": 10.0}}
