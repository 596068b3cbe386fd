"""Settings of the worker and sweeper processes end-to-end tests start: config.settings, joining faster.

A joining node becomes active on its third on-time heartbeat (``rejoin_stable_period`` 0 instead of
the production 3 s of stable health): these tests wait for fresh (or restarted) nodes to be active
before the part they are about, and each such wait was 3 s longer than it needed to be. How nodes
are suspected and convicted is the production policy, untouched.
"""

from __future__ import annotations

from config.settings import *  # noqa: F403 (this module is config.settings with one override)
from config.settings import RINGMASTER

_MONITORING = RINGMASTER.get("MONITORING", {})

RINGMASTER = {
    **RINGMASTER,
    "MONITORING": {**_MONITORING, "LIVENESS": {**_MONITORING.get("LIVENESS", {}), "rejoin_stable_period": 0.0}},
}
